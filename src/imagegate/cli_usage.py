"""`imagegate usage`: the ledger's requests, images and cost per time bucket (and per model,
key, project, size or source), the data of the usage and costs APIs as a table, read straight
from the configured database (the server need not run)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Annotated

import typer

from .cli_common import DatabaseUrlOption, DataDirOption, database_url_of

BY = ("model", "api_key_id", "project_id", "size", "source")


def usage_command(
    since: Annotated[str, typer.Option(help="How far back: 7d, 12h, 90m, 2w.")] = "7d",
    by: Annotated[str | None, typer.Option(help=f"Group by one of: {', '.join(BY)}.")] = None,
    bucket: Annotated[str, typer.Option(help="Bucket width (aligned in UTC): 1m, 1h or 1d.")] = "1d",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Requests, images and cost (USD) per bucket since a time ago, with a total. Requests and
    images count successful requests only; cost counts every request (failures cost nothing)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .accounts.keys import parse_duration
    from .accounts.usage import WIDTHS, Cell, aggregate
    from .db import Ledger, migrate

    try:
        span = parse_duration(since)
    except ValueError as exc:
        typer.echo(f"error: --since: {exc}", err=True)
        raise typer.Exit(2) from exc
    if by is not None and by not in BY:
        typer.echo(f"error: --by must be one of {', '.join(BY)}", err=True)
        raise typer.Exit(2)
    if bucket not in WIDTHS:
        typer.echo(f"error: --bucket must be one of {', '.join(WIDTHS)}", err=True)
        raise typer.Exit(2)
    url, db_file = database_url_of(data_dir, database_url)
    if db_file is not None and not db_file.exists():  # don't create an empty file just to look
        typer.echo(f"error: no ledger database at {db_file}", err=True)
        raise typer.Exit(1)
    end = int(time.time())
    start = max(0, end - int(span.total_seconds()))
    width = WIDTHS[bucket]
    groups = [by] if by else []

    async def run() -> list[Cell]:
        ledger = Ledger(url)
        try:
            await ledger.start()  # as the server and `keys` do: an older schema is upgraded first
            return await aggregate(ledger.sessions, start=start, end=end + 1, width=width, group_by=groups)
        finally:
            await ledger.close()

    try:
        cells = asyncio.run(run())
    except migrate.SchemaTooNew as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    shown = [c for c in cells if c.requests or c.cost_usd]  # a bucket of only failures shows nothing
    stamp = "%Y-%m-%d" if bucket == "1d" else "%Y-%m-%d %H:%M"
    title = f"since {_utc(start).strftime('%Y-%m-%d %H:%M')} UTC ({since}), {bucket} buckets" + (
        f", by {by}" if by else "")
    console = Console(highlight=False, soft_wrap=True)
    if not shown:
        console.print(f"no requests {title}")
        return
    table = Table(title=f"Usage {title}", box=box.SIMPLE_HEAD, show_footer=True)
    requests, images = sum(c.requests for c in shown), sum(c.images for c in shown)
    cost = sum(c.cost_usd for c in shown)
    table.add_column("Bucket (UTC)", footer="total", no_wrap=True)
    if by:
        table.add_column(by, no_wrap=True)
    table.add_column("Requests", justify="right", footer=str(requests))
    table.add_column("Images", justify="right", footer=str(images))
    table.add_column("Cost (USD)", justify="right", footer=_money(cost))
    for c in shown:
        group = [str(c.group[by]) if c.group[by] is not None else "(none)"] if by else []
        table.add_row(_utc(c.start).strftime(stamp), *group, str(c.requests), str(c.images), _money(c.cost_usd))
    console.print(table)


def _utc(t: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def _money(value: float) -> str:
    return f"{round(value, 6):.6f}"
