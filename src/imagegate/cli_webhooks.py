"""`imagegate webhooks verify`: check a received webhook's Standard Webhooks signature (for
receivers and for debugging a delivery), the same check as `imagegate.jobs.verify`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

webhooks_app = typer.Typer(help="Webhook tools for receivers.", no_args_is_help=True)


@webhooks_app.command("verify")
def verify_command(
    body: Annotated[Path | None, typer.Argument(help="File with the request body as received; default: stdin.")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", help="A received header, 'name: value' (webhook-id, webhook-timestamp, "
                               "webhook-signature); repeat it.")] = None,
    secret: Annotated[str | None, typer.Option(
        help="The signing secret (whsec_...); default: $IMAGEGATE_WEBHOOK_SECRET.")] = None,
) -> None:
    """Exit 0 and print the event's type and id when the signature and timestamp (5-minute
    tolerance) check out; exit 1 with the reason otherwise."""
    from standardwebhooks.webhooks import WebhookVerificationError

    from .jobs import verify

    key = secret or os.environ.get("IMAGEGATE_WEBHOOK_SECRET")
    if not key:
        typer.echo("error: give --secret or set IMAGEGATE_WEBHOOK_SECRET", err=True)
        raise typer.Exit(2)
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep:
            typer.echo(f"error: --header {h!r} is not 'name: value'", err=True)
            raise typer.Exit(2)
        headers[name.strip().lower()] = value.strip()
    raw = body.read_bytes() if body is not None else sys.stdin.buffer.read()
    try:
        event = verify(key, headers, raw)
    except WebhookVerificationError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"valid": True, "type": event.get("type"), "id": event.get("id")}))
