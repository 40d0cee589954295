"""Alembic driven from code: `Ledger.start()` and `imagegate db` pass their own (sync-side)
connection in, so one transaction covers the whole upgrade and no alembic.ini is needed."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

log = logging.getLogger("imagegate.db")

MIGRATIONS = Path(__file__).parent / "migrations"
# The schema `Base.metadata.create_all` made before migrations existed: a database with the
# `requests` table and no `alembic_version` is at this revision.
BASELINE = "0001"
# Serialises upgrades of one PostgreSQL database by several processes starting together
# (a transaction-scoped advisory lock, released at commit); any fixed bigint will do.
_PG_LOCK_KEY = int.from_bytes(b"imagegat", "big")


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer imagegate: this one cannot know its tables."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    rev = ScriptDirectory.from_config(config()).get_current_head()
    assert rev is not None
    return rev


def known(revision: str) -> bool:
    return revision in {s.revision for s in ScriptDirectory.from_config(config()).walk_revisions()}


def current(connection: Connection) -> str | None:
    """The database's revision; None for an empty database or one from before migrations."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema to `revision`, in place. Run it inside a transaction
    (`async with engine.begin() as conn: await conn.run_sync(upgrade)`)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    cfg = config(connection)
    tables = set(inspect(connection).get_table_names())
    if "requests" in tables and "alembic_version" not in tables:
        log.info("ledger database from before migrations: stamping it at revision %s", BASELINE)
        command.stamp(cfg, BASELINE)
    before = current(connection)
    if before is not None and not known(before):
        raise SchemaTooNew(f"the ledger database is at schema revision {before}, newer than this imagegate knows "
                           f"(its newest is {head()}): run the newer imagegate, or use another database")
    command.upgrade(cfg, revision)
    after = current(connection)
    if after != before:
        log.info("ledger schema upgraded from %s to %s", before or "empty", after)
