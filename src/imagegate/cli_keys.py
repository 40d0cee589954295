"""`imagegate keys create | list | revoke`: API keys in the configured database, with the
server running or not (a key made here works on the server's next request)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from .cli_common import DatabaseUrlOption, DataDirOption, load_settings

if TYPE_CHECKING:
    from .accounts import Accounts
    from .settings import Settings

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
T = TypeVar("T")


def _run(data_dir: Path | None, database_url: str | None, work: Callable[..., Awaitable[T]]) -> T:
    given = {"data_dir": data_dir, "database_url": database_url}
    return _with_accounts(load_settings(**{k: v for k, v in given.items() if v is not None}), work)


def _with_accounts(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    """Open the database (migrating it if need be) and the accounts on it, as the server does."""
    from .container import make_accounts
    from .db import Ledger, migrate
    from .errors import ImagegateError

    async def go() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(settings.resolved_database_url)
        try:
            await ledger.start()
            return await work(await make_accounts(settings, ledger))
        finally:
            await ledger.close()

    try:
        return asyncio.run(go())
    except ImagegateError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except migrate.SchemaTooNew as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def database_has_keys(settings: Settings) -> bool:
    """Whether the configured database holds any key (then the server authenticates)."""
    async def work(acc: Accounts) -> bool:
        return await acc.keys.any_keys()

    return _with_accounts(settings, work)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name (letters, digits, . _ @ : -).")],
    project: Annotated[str | None, typer.Option(help="The project it bills to [default].")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated models it may use [all].")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute [unlimited].")] = None,
    ipm: Annotated[int | None, typer.Option(min=1, help="Images per minute [unlimited].")] = None,
    budget_usd: Annotated[float | None, typer.Option(min=0, help="Monthly budget in USD [unlimited].")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime: 30d, 12h, 2w [never].")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make a key and print it on stdout, alone: it is not stored and cannot be shown again."""
    from .accounts import parse_duration

    expires_at = None
    if expires is not None:
        try:
            expires_at = dt.datetime.now(dt.timezone.utc) + parse_duration(expires)
        except ValueError as exc:
            typer.echo(f"error: --expires: {exc}", err=True)
            raise typer.Exit(2) from exc
    model_list = [m.strip() for m in models.split(",")] if models is not None else None

    async def work(acc):  # type: ignore[no-untyped-def]
        return await acc.keys.create(name, project=project, models=model_list, rpm=rpm, ipm=ipm,
                                     budget_usd=budget_usd, expires_at=expires_at)

    info, key = _run(data_dir, database_url, work)
    typer.echo(key)
    typer.echo(f"created {info.name} ({info.id}, project {info.project}); the key above is shown only once",
               err=True)


@keys_app.command("list")
def list_keys(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Every key with its limits and state (never the keys themselves)."""
    from rich.console import Console
    from rich.table import Table

    async def work(acc):  # type: ignore[no-untyped-def]
        keys = await acc.keys.list()
        return [(k, await acc.budgets.spent(k.id) if k.budget_usd is not None else None) for k in keys]

    rows = _run(data_dir, database_url, work)
    table = Table("name", "id", "key", "project", "models", "rpm", "ipm", "budget (spent) USD", "expires", "status")
    for k, spent in rows:
        budget = "-" if k.budget_usd is None else f"{k.budget_usd:.2f} ({spent:.4f})"
        table.add_row(k.name, k.id, k.redacted, k.project, ",".join(k.models) if k.models else "all",
                      str(k.rpm or "-"), str(k.ipm or "-"), budget,
                      k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "never", k.status)
    Console(width=200).print(table)


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke a key: it gets 401 within a second, on every server sharing the database."""
    async def work(acc):  # type: ignore[no-untyped-def]
        return await acc.keys.revoke(name)

    info = _run(data_dir, database_url, work)
    typer.echo(f"revoked {info.name} ({info.id})")
