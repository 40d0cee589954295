"""What every `imagegate` command shares: settings from the options and IMAGEGATE_*, and the
database options (`--data-dir`, `--database-url`) resolved as `serve` resolves them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def load_settings(**overrides: object):  # type: ignore[no-untyped-def]
    """Settings from the environment with the options given on the command line on top; a
    bad value (or an unreadable keys file) is a one-line error and exit 2, not a traceback."""
    from pydantic import ValidationError

    from .settings import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            where = ".".join(str(p) for p in err["loc"])
            line = f"error: {cause}" if cause is not None and not where else f"error: {where}: {err['msg']}"
            typer.echo(line, err=True)
        raise typer.Exit(2) from exc


DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", help="Holds the SQLite ledger unless --database-url is set [IMAGEGATE_DATA_DIR; data].")]
DatabaseUrlOption = Annotated[str | None, typer.Option(
    "--database-url", help="SQLAlchemy async URL of the ledger [IMAGEGATE_DATABASE_URL; SQLite in the data dir].")]


def database_url_of(data_dir: Path | None, database_url: str | None) -> tuple[str, Path | None]:
    """The ledger's URL from the options and IMAGEGATE_* (as `serve` resolves it), and its file if SQLite."""
    from sqlalchemy.engine import make_url

    given = {"data_dir": data_dir, "database_url": database_url}
    url = load_settings(**{k: v for k, v in given.items() if v is not None}).resolved_database_url
    u = make_url(url)
    sqlite_file = u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:")
    return url, Path(u.database) if sqlite_file and u.database else None


