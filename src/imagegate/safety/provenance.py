"""C2PA provenance: every output image is signed with a manifest (c2pa-python) saying it
was made by a trained model (IPTC digital source type trainedAlgorithmicMedia), by which
generator and served model, created or edited (edits name their input images as
ingredients). Nothing personal goes in: no prompt, user, key or upload metadata, and no
thumbnails.

Certificates: the operator's (IMAGEGATE_C2PA_CERT, a PEM chain leaf first, and
IMAGEGATE_C2PA_KEY), else a development chain made on first start in the data dir
(`c2pa/`: a CA and an ES256 leaf it issued). Readers trust only the anchors they are given:
`imagegate verify` uses IMAGEGATE_C2PA_TRUST_ANCHORS, else the development CA."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif", "gif": "image/gif"}
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DEV_DIR = "c2pa"


@dataclass(frozen=True)
class Credentials:
    chain_pem: bytes  # leaf first, then intermediates (the development CA)
    key_pem: bytes
    anchors_pem: bytes | None  # the development CA: what verifying trusts by default


def dev_credentials(data_dir: Path) -> Credentials:
    """The development chain in data_dir/c2pa/, made on first use (CA 10 years, leaf 1 year:
    made again when it has expired)."""
    folder = data_dir / DEV_DIR
    ca_file, chain_file, key_file = folder / "dev-ca.pem", folder / "dev-chain.pem", folder / "dev-signer.key"
    if not (chain_file.exists() and key_file.exists() and ca_file.exists()) or _expired(chain_file):
        folder.mkdir(parents=True, exist_ok=True)
        ca_pem, chain_pem, key_pem = make_dev_chain()
        _write_private(key_file, key_pem)
        chain_file.write_bytes(chain_pem)
        ca_file.write_bytes(ca_pem)
    return Credentials(chain_file.read_bytes(), key_file.read_bytes(), ca_file.read_bytes())


def _expired(chain_file: Path) -> bool:
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(chain_file.read_bytes())[0]
    return leaf.not_valid_after_utc < dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_dev_chain() -> tuple[bytes, bytes, bytes]:
    """(CA PEM, leaf + CA chain PEM, leaf key PEM): a P-256 CA and an ES256 signing leaf with
    the extensions C2PA validators require (digitalSignature, an EKU, not a CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagegate (development)")])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("imagegate development CA")).issuer_name(
        name("imagegate development CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**{**usage, "key_cert_sign": True, "crl_sign": True}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("imagegate development signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**{**usage, "digital_signature": True}), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_pem, leaf.public_bytes(pem) + ca_pem, key_pem


def load_credentials(data_dir: Path, cert: Path | None, key: Path | None) -> Credentials:
    if cert is None and key is None:
        return dev_credentials(data_dir)
    if cert is None or key is None:
        raise ValueError("IMAGEGATE_C2PA_CERT and IMAGEGATE_C2PA_KEY go together: set both or neither")
    try:
        return Credentials(cert.read_bytes(), key.read_bytes(), None)
    except OSError as exc:
        raise ValueError(f"cannot read the C2PA certificate or key: {exc}") from None


@dataclass(frozen=True)
class Ingredient:
    data: bytes  # the uploaded file as sent (c2pa hashes it; its metadata is not copied)
    mime: str


class Signer:
    """Signs encoded images; thread-safe (each call builds its own c2pa objects), run in the
    encode pool."""

    def __init__(self, credentials: Credentials) -> None:
        import c2pa

        self.c2pa = c2pa
        self.info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, credentials.chain_pem, credentials.key_pem, None)
        # Fail at start, not on the first request, when the certificate or key is unusable.
        self.sign(_probe_png(), "png", model="probe", ingredients=())

    def sign(self, data: bytes, fmt: str, *, model: str, ingredients: Sequence[Ingredient]) -> bytes:
        c2pa = self.c2pa
        edited = bool(ingredients)
        action: dict[str, Any] = {
            "action": "c2pa.edited" if edited else "c2pa.created", "digitalSourceType": TRAINED,
            "softwareAgent": {"name": "imagegate", "version": __version__},
            "parameters": {"org.imagegate.model": model}}
        manifest = {"claim_generator_info": [{"name": "imagegate", "version": __version__}],
                    "title": f"image.{fmt}", "format": MIME[fmt],
                    "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}}]}
        context = c2pa.Context(settings=c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
        with c2pa.Builder(manifest, context) as builder:
            if edited:
                builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
                for i, ing in enumerate(ingredients):
                    builder.add_ingredient({"title": f"input-{i + 1}", "relationship":
                                            "parentOf" if i == 0 else "componentOf"}, ing.mime, io.BytesIO(ing.data))
            out = io.BytesIO()
            with c2pa.Signer.from_info(self.info) as signer:
                builder.sign(signer, MIME[fmt], io.BytesIO(data), out)
        return out.getvalue()


def _probe_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


# -- verifying ---------------------------------------------------------------------------
@dataclass
class Report:
    path: str
    state: str  # Trusted | Valid | Invalid | no manifest | unreadable
    ok: bool
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def verify(data: bytes, anchors_pem: bytes | None, path: str = "-") -> Report:
    """The file's active manifest checked against `anchors_pem`: ok only when its signature
    is valid, its hashes match the pixels and its certificate chains to an anchor."""
    import c2pa

    config: dict[str, Any] = {"verify": {"verify_trust": True}}
    if anchors_pem:
        config["trust"] = {"trust_anchors": anchors_pem.decode()}
    try:
        context = c2pa.Context(settings=c2pa.Settings.from_dict(config))
        with c2pa.Reader(sniff_mime(data), io.BytesIO(data), context=context) as reader:
            state = reader.get_validation_state() or "Invalid"
            manifest = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        text = str(exc)
        missing = "ManifestNotFound" in type(exc).__name__ or "not found" in text.lower()
        return Report(path, "no manifest" if missing else "unreadable", False, failures=[text[:300]])
    failures = [f"{f.get('code')}: {f.get('explanation', '')}"
                for f in results.get("activeManifest", {}).get("failure", [])]
    return Report(path, state, state == "Trusted" and not failures, _summary(manifest), failures)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    actions = [a for x in manifest.get("assertions", []) if str(x.get("label", "")).startswith("c2pa.actions")
               for a in x.get("data", {}).get("actions", [])]
    main: dict[str, Any] = next((a for a in actions if a.get("action") in ("c2pa.created", "c2pa.edited")), {})
    info = manifest.get("claim_generator_info") or [{}]
    sig = manifest.get("signature_info", {})
    return {"generator": f"{info[0].get('name', '?')} {info[0].get('version', '')}".strip(),
            "action": main.get("action"),
            "digital_source_type": str(main.get("digitalSourceType", "")).rsplit("/", 1)[-1],
            "model": main.get("parameters", {}).get("org.imagegate.model"),
            "ingredients": len(manifest.get("ingredients", [])),
            "signer": f"{sig.get('common_name', '?')} ({sig.get('issuer', '?')})"}


def sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":
        return "image/avif"
    return "application/octet-stream"


def json_report(r: Report) -> str:
    return json.dumps({"file": r.path, "state": r.state, "ok": r.ok, **r.summary, "failures": r.failures})
