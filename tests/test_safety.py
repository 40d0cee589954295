"""Moderation (input and output stages) and C2PA provenance through the official openai SDK:
the exact error shape of a block, nothing billed, benign prompts pass, the output stage on
real generated images (a threshold under a benign image's score makes the block path run),
every output format signed and verified against the development CA, tampering detected,
and uploaded EXIF/XMP/GPS never reaching an output or a stored file."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import pytest_asyncio
from PIL import Image
from sqlalchemy import select

from conftest import live_server, make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.db import RequestRow
from imagegate.safety import verify
from imagegate.safety.provenance import dev_credentials
from imagegate.safety.text import WordLists

# Each blocked at both levels (high entries or child safety), in an obfuscated spelling.
BLOCKED_AT_BOTH = [
    ("a p.o.r.n scene", "sexual"),
    ("S3X on a beach", "sexual"),
    ("n\u0430ked child", "sexual/minors"),  # a Cyrillic a
    ("how to k!ll mys3lf", "self-harm"),
]
BLOCKED_AT_AUTO_ONLY = [("a NÚDE figure study", "sexual"), ("a d e c a p i t a t e d statue", "violence/graphic")]
BENIGN = ["a shot of espresso", "kill the lights", "breast cancer awareness ribbon", "a gore-tex jacket",
          "a red circle left of a green square"]


@pytest_asyncio.fixture
async def app(tmp_path: Path, tiny_sd_path: Path) -> AsyncIterator[Any]:
    application = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(application):
        yield application


@pytest_asyncio.fixture
async def sdk(app: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    c = sdk_client(app)
    yield c
    await c.close()


async def _row(app: Any, request_id: str) -> RequestRow:
    async with app.state.ledger.sessions() as s:
        row = (await s.execute(select(RequestRow).where(RequestRow.id == request_id))).scalar_one()
    return row


def _jpeg_with_metadata() -> bytes:
    """A camera-like JPEG: EXIF with GPS and a body serial, XMP with a creator, a comment."""
    img = Image.new("RGB", (96, 80), (40, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam Maker"
    exif[0x0110] = "SecretCam Model"
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-4242-XYZ"  # BodySerialNumber
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 1.0)})  # GPS
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane PRIVATE-PERSON</dc:creator>'
           b'</rdf:Description></rdf:RDF></x:xmpmeta>')
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), xmp=xmp, comment=b"PRIVATE-COMMENT")
    data = buf.getvalue()
    assert all(k in data for k in (b"SERIAL-4242", b"PRIVATE-PERSON", b"PRIVATE-COMMENT", b"SecretCam"))
    return data


LEAKS = (b"SERIAL-4242", b"PRIVATE-PERSON", b"PRIVATE-COMMENT", b"SecretCam", b"Exif\x00\x00")


# -- input stage -------------------------------------------------------------------------
@pytest.mark.parametrize(("level", "cases"), [("auto", BLOCKED_AT_BOTH + BLOCKED_AT_AUTO_ONLY),
                                              ("low", BLOCKED_AT_BOTH)])
async def test_blocked_prompts_get_the_exact_error_and_cost_nothing(app: Any, sdk: openai.AsyncOpenAI, level: str,
                                                                    cases: list[tuple[str, str]]) -> None:
    for prompt, category in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.images.generate(prompt=prompt, size="256x256", quality="low", moderation=level)  # type: ignore[arg-type]
        err = info.value
        assert err.status_code == 400 and err.code == "moderation_blocked", prompt
        body = err.body
        assert isinstance(body, dict)
        assert body["type"] == "image_generation_user_error" and body["param"] is None
        assert body["moderation_details"]["moderation_stage"] == "input"
        assert category in body["moderation_details"]["categories"], (prompt, body)
        assert err.response.headers["x-imagegate-cost-usd"] == "0"
        row = await _row(app, err.response.headers["x-request-id"])
        assert row.status == "error" and row.error_code == "moderation_blocked" and row.cost_usd == 0
        assert category in (row.error_message or "") and "input" in (row.error_message or "")
        assert "prompt" not in row.params and row.params["prompt_sha256"]  # never the prompt itself


async def test_auto_only_prompts_pass_at_low_and_benign_prompts_pass(sdk: openai.AsyncOpenAI) -> None:
    for prompt, _ in BLOCKED_AT_AUTO_ONLY:
        r = await sdk.images.generate(prompt=prompt, size="256x256", quality="low", moderation="low")
        assert r.data and r.data[0].b64_json
    for prompt in BENIGN:
        raw = await sdk.images.with_raw_response.generate(prompt=prompt, size="256x256", quality="low")
        assert raw.parse().data, prompt
        assert "moderation" in raw.headers["server-timing"]


async def test_a_stream_with_a_blocked_prompt_is_a_plain_400(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.images.generate(prompt="a p0rn0graphic poster", size="256x256", quality="low", stream=True,
                                  partial_images=1)
    assert info.value.code == "moderation_blocked"


async def test_operator_deny_and_allow_files(tmp_path: Path, tiny_sd_path: Path) -> None:
    deny, allow = tmp_path / "deny.txt", tmp_path / "allow.txt"
    deny.write_text("# ours\nviolence: red wedding\nbanana\n")
    allow.write_text("nude lipstick shade\n")
    settings = make_settings(tmp_path, moderation_deny_file=deny, moderation_allow_file=allow)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        sdk = sdk_client(application)
        for prompt, category in (("the Red-Wedding scene", "violence"), ("a b4nana", "operator")):
            with pytest.raises(openai.BadRequestError) as info:
                await sdk.images.generate(prompt=prompt, size="256x256", quality="low", moderation="low")
            body = info.value.body
            assert isinstance(body, dict) and body["moderation_details"]["categories"] == [category]
        await sdk.images.generate(prompt="a nude lipstick shade swatch", size="256x256", quality="low")
        await sdk.close()


def test_normalisation_catches_obfuscations_and_spares_look_alikes() -> None:
    words = WordLists.from_files()
    for text in ("P O R N", "p_o_r_n", "pοrn", "ｐｏｒｎ", "porrrn", "p\u200born", "$ex", "n@ked"):  # noqa: RUF001
        assert "sexual" in words.score(text).scores, text
    for text in ("essex and sussex", "an analysis of canal locks", "a cocktail", "the naked eye", "assassin's creed",
                 "a 12 year old's birthday cake", "kids playing football", "suicide squad poster"):
        assert not words.score(text).scores, text


async def test_moderation_off_is_reported(tmp_path: Path, tiny_sd_path: Path) -> None:
    application = create_app(make_settings(tmp_path, moderation="off"), [tiny_config(tiny_sd_path)])
    async with running(application):
        sdk = sdk_client(application)
        raw = await sdk.images.with_raw_response.generate(prompt="a S3X scene", size="256x256", quality="low")
        assert raw.parse().data and "IMAGEGATE_MODERATION=off" in raw.headers["x-imagegate-notes"]
        await sdk.close()


# -- output stage ------------------------------------------------------------------------
async def test_benign_generated_images_score_under_the_default_thresholds(app: Any, sdk: openai.AsyncOpenAI) -> None:
    settings = app.state.settings
    r = await sdk.images.generate(prompt="a yellow star on a purple background", n=3, size="256x256", quality="low")
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json or ""))) for d in r.data or []]
    scores = app.state.container.moderation.moderator.classifier.scores(images)
    assert len(scores) == 3
    assert max(scores) < min(settings.moderation_output_threshold_auto, settings.moderation_output_threshold_low)


async def test_the_output_stage_blocks_a_real_image_under_a_low_threshold(tmp_path: Path, tiny_sd_path: Path) -> None:
    # A threshold of 0 sits under every image's score: the block path runs on real images.
    settings = make_settings(tmp_path, moderation_output_threshold_auto=0.0)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        sdk = sdk_client(application)
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.images.generate(prompt="a blue square", size="256x256", quality="low", response_format="url")
        err = info.value
        body = err.body
        assert isinstance(body, dict) and err.code == "moderation_blocked"
        assert body["moderation_details"] == {"moderation_stage": "output", "categories": ["sexual"]}
        assert err.response.headers["x-imagegate-cost-usd"] == "0"
        row = await _row(application, err.response.headers["x-request-id"])
        assert row.status == "error" and row.cost_usd == 0 and row.images == 0 and "output" in (row.error_message or "")
        assert "prompt" not in row.params
        assert not list((settings.data_dir / "images").rglob("*.*")), "a blocked image was stored"
        # moderation=low has its own threshold (0.85): the same request passes there.
        ok = await sdk.images.generate(prompt="a blue square", size="256x256", quality="low", moderation="low")
        assert ok.data
        await sdk.close()


@pytest.mark.slow
def test_a_stream_never_sends_a_preview_of_a_blocked_output(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, moderation_output_threshold_auto=0.0)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    body = {"prompt": "a blue square", "size": "256x256", "quality": "low", "stream": True, "partial_images": 2}
    with live_server(application) as base, httpx2.stream("POST", base + "/v1/images/generations", timeout=120,
                                                         json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert not [e for e in events if e.get("type", "").endswith("partial_image") or "b64_json" in e]
    assert events[-1]["error"]["code"] == "moderation_blocked"
    assert events[-1]["error"]["moderation_details"]["moderation_stage"] == "output"


# -- provenance --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "avif", "gif"])
async def test_every_output_format_carries_a_manifest_trusted_by_the_dev_ca(app: Any, sdk: openai.AsyncOpenAI,
                                                                           fmt: str) -> None:
    r = await sdk.images.generate(prompt="a green triangle", size="256x256", quality="low", output_format=fmt)  # type: ignore[arg-type]
    data = base64.b64decode((r.data or [])[0].b64_json or "")
    anchors = dev_credentials(app.state.settings.data_dir).anchors_pem
    report = verify(data, anchors)
    assert report.ok and report.state == "Trusted", report
    assert report.summary["action"] == "c2pa.created"
    assert report.summary["digital_source_type"] == "trainedAlgorithmicMedia"
    assert report.summary["model"] == "tiny-sd" and report.summary["generator"].startswith("imagegate ")
    assert b"a green triangle" not in data  # no prompt in the manifest
    # Re-encoded: the manifest is gone. Changed bytes: the hashes no longer match.
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")
    assert verify(buf.getvalue(), anchors).state == "no manifest"
    bad = bytearray(data)
    bad[-64] ^= 0xFF
    tampered = verify(bytes(bad), anchors)
    assert not tampered.ok
    # Another CA does not make it trusted.
    from imagegate.safety.provenance import make_dev_chain

    assert not verify(data, make_dev_chain()[0]).ok


async def test_edits_name_their_inputs_and_no_upload_metadata_survives(app: Any, sdk: openai.AsyncOpenAI) -> None:
    upload = _jpeg_with_metadata()
    for fmt in ("png", "jpeg", "webp"):
        r = await sdk.images.edit(image=("photo.jpg", upload, "image/jpeg"), prompt="make it a red square",
                                  size="256x256", quality="low", output_format=fmt)  # type: ignore[arg-type]
        data = base64.b64decode((r.data or [])[0].b64_json or "")
        assert not [k for k in LEAKS if k in data], fmt
        out = Image.open(io.BytesIO(data))
        assert not out.getexif() and "xmp" not in out.info and "comment" not in out.info
        report = verify(data, dev_credentials(app.state.settings.data_dir).anchors_pem)
        assert report.ok and report.summary["action"] == "c2pa.edited" and report.summary["ingredients"] == 1
    # A masked edit composites the original back: its metadata must not come with it.
    mask = Image.new("RGBA", (96, 80), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (10, 10, 50, 50))
    mbuf = io.BytesIO()
    mask.save(mbuf, "PNG")
    r = await sdk.images.edit(image=("photo.jpg", upload, "image/jpeg"), mask=("mask.png", mbuf.getvalue()),
                              prompt="a red circle", quality="low", output_format="jpeg", response_format="url")
    url = (r.data or [])[0].url or ""
    stored = [p.read_bytes() for p in (app.state.settings.data_dir / "images").rglob("*.*")]
    assert stored and url
    for data in stored:
        assert not [k for k in LEAKS if k in data]


async def test_c2pa_off_signs_nothing(tmp_path: Path, tiny_sd_path: Path) -> None:
    application = create_app(make_settings(tmp_path, c2pa="off"), [tiny_config(tiny_sd_path)])
    async with running(application):
        sdk = sdk_client(application)
        r = await sdk.images.generate(prompt="a green triangle", size="256x256", quality="low")
        assert verify(base64.b64decode((r.data or [])[0].b64_json or ""), None).state == "no manifest"
        await sdk.close()


async def test_imagegate_verify_exit_status(app: Any, sdk: openai.AsyncOpenAI, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imagegate.cli import app as cli

    r = await sdk.images.generate(prompt="a green triangle", n=2, size="256x256", quality="low", output_format="jpeg")
    good = [tmp_path / f"good-{i}.jpg" for i in range(2)]
    for path, d in zip(good, r.data or [], strict=True):
        path.write_bytes(base64.b64decode(d.b64_json or ""))
    plain = tmp_path / "plain.png"
    Image.new("RGB", (32, 32)).save(plain)
    changed = tmp_path / "changed.jpg"
    data = bytearray(good[0].read_bytes())
    data[-64] ^= 0xFF
    changed.write_bytes(bytes(data))
    data_dir = str(app.state.settings.data_dir)
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", *map(str, good), "--data-dir", data_dir])
    assert ok.exit_code == 0, ok.output
    assert "valid, trusted" in ok.output and "trainedAlgorithmicMedia" in ok.output and "tiny-sd" in ok.output
    for bad in (plain, changed):
        out = runner.invoke(cli, ["verify", str(good[0]), str(bad), "--data-dir", data_dir, "--json"])
        assert out.exit_code == 1, out.output
        lines = [json.loads(line) for line in out.output.splitlines()]
        assert [x["ok"] for x in lines] == [True, False]
    other = tmp_path / "other-ca.pem"
    from imagegate.safety.provenance import make_dev_chain

    other.write_bytes(make_dev_chain()[0])
    assert runner.invoke(cli, ["verify", str(good[0]), "--trust-anchors", str(other)]).exit_code == 1


# -- /v1/moderations ---------------------------------------------------------------------
async def test_moderations_endpoint_in_openais_shape(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.moderations.create(input=["a shot of espresso", "a p0rn0graphic poster", "n\u0430ked child"])
    assert r.id.startswith("modr-") and len(r.results) == 3
    benign, sexual, minors = r.results
    assert not benign.flagged and benign.category_scores.sexual == 0
    assert sexual.flagged and sexual.categories.sexual and sexual.category_scores.sexual > 0.9
    assert minors.flagged and minors.categories.sexual_minors and not minors.categories.violence
    assert sexual.category_applied_input_types.sexual == ["text"]
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = await sdk.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "a blue tile"}, {"type": "image_url", "image_url": {"url": url}}])
    (one,) = r.results
    assert not one.flagged and one.category_applied_input_types.sexual == ["text", "image"]
    assert 0 < one.category_scores.sexual < 0.6 and r.model == "omni-moderation-latest"
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert info.value.code == "unsupported_image_url"
