"""Alembic's environment for the ledger.

The server (at start-up) and `imagegate db` run it through `imagegate.db.migrate` with their
own connection in `config.attributes["connection"]`, inside their transaction.

From a checkout, the `alembic` command (configured by `[tool.alembic]` in pyproject.toml)
writes the next migration from the tables:
`alembic -x url=sqlite+aiosqlite:///scratch.db upgrade head` then
`alembic -x url=sqlite+aiosqlite:///scratch.db revision --autogenerate --rev-id 0002 -m "..."`
(without `-x url` it uses IMAGEGATE_DATABASE_URL / IMAGEGATE_DATA_DIR, as the server does).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from imagegate.db.tables import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead, and is a
        # plain ALTER on PostgreSQL, so one migration serves both.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from imagegate.settings import Settings

    return Settings().resolved_database_url


async def _run_own_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():  # `alembic upgrade --sql`: print the SQL
    url = _url()
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_own_engine(_url()))
