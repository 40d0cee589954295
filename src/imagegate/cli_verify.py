"""`imagegate verify FILE...`: each file's C2PA manifest summarised and checked against the
configured trust anchors (IMAGEGATE_C2PA_TRUST_ANCHORS, else the development CA in the data
dir). Exit 0 only when every file is valid and trusted; a file with changed pixels, no
manifest or an untrusted signer makes it 1 (2: the anchors cannot be read)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_common import DataDirOption, load_settings


def verify_command(
    files: Annotated[list[Path], typer.Argument(help="Image files to check.")],
    trust_anchors: Annotated[Path | None, typer.Option(
        "--trust-anchors", help="PEM trust anchors [IMAGEGATE_C2PA_TRUST_ANCHORS; the dev CA].")] = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Check the C2PA provenance of image files: signature, hashes of the pixels, trust."""
    from .safety.provenance import DEV_DIR, Report, json_report, verify

    settings = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    anchors_file = trust_anchors or settings.c2pa_trust_anchors or settings.data_dir / DEV_DIR / "dev-ca.pem"
    try:
        anchors = anchors_file.read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read the trust anchors {anchors_file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    all_ok = True
    for f in files:
        try:
            report = verify(f.read_bytes(), anchors, str(f))
        except OSError as exc:
            report = Report(str(f), "unreadable", False, failures=[exc.strerror or str(exc)])
        all_ok = all_ok and report.ok
        if as_json:
            typer.echo(json_report(report))
            continue
        verdict = "valid, trusted" if report.ok else "INVALID"
        typer.echo(f"{f}: {verdict} ({report.state})")
        for key, value in report.summary.items():
            typer.echo(f"  {key}: {value}")
        for failure in report.failures:
            typer.echo(f"  failure: {failure}")
    raise typer.Exit(0 if all_ok else 1)
