"""The ledger's schema is Alembic's: a new database is created at the newest revision, one
made before migrations (by `create_all`) is stamped and upgraded in place with its rows,
the migrations build exactly the tables the code maps, `imagegate db` shows and upgrades
the revision, and a ledger write that fails is logged and counted, never raised into the
request. Each runs on SQLite and on PostgreSQL (the `db_url` / `pg_url` fixtures of
tests/pg_support.py: a throwaway server, skipped with the reason where none can run)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import logging
import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from cli_fixtures import clean_env  # noqa: F401 - fixture
from imagegate.cli import app as cli
from imagegate.db import Base, Ledger, RequestRow, migrate

HEAD = migrate.head()

# What the code before migrations made (`Base.metadata.create_all`, printed from that code's
# tables with CreateTable for each dialect): copied, not derived, so that it stays the old schema.
OLD_SQLITE = """
CREATE TABLE requests (
    id VARCHAR(64) NOT NULL,
    created_at DATETIME NOT NULL,
    endpoint VARCHAR(64) NOT NULL,
    api_key VARCHAR(64),
    user VARCHAR(256),
    model_requested VARCHAR(256),
    model VARCHAR(256),
    params JSON NOT NULL,
    status VARCHAR(32) NOT NULL,
    http_status INTEGER NOT NULL,
    error_code VARCHAR(64),
    error_message TEXT,
    n INTEGER,
    seed INTEGER,
    queue_s FLOAT,
    inference_s FLOAT,
    encode_s FLOAT,
    total_s FLOAT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    notes JSON NOT NULL,
    batch_id INTEGER,
    batch_jobs INTEGER,
    batch_images INTEGER,
    PRIMARY KEY (id)
)"""
OLD_POSTGRES = (OLD_SQLITE.replace("created_at DATETIME", "created_at TIMESTAMP WITH TIME ZONE")
                .replace(" user VARCHAR", ' "user" VARCHAR'))
# A row as the old code wrote it (SQLite keeps the time without its zone).
OLD_ROW = ("INSERT INTO requests (id, created_at, endpoint, api_key, \"user\", model, params, status, http_status, n, "
           "seed, input_tokens, output_tokens, notes) VALUES ('req_old', '2026-11-30 12:00:00.000000', "
           "'images.generations', 'abc123', 'alice', 'tiny-sd', '{\"prompt\": \"a red circle\"}', 'ok', 200, 1, 7, "
           "13, 272, '[\"kept\"]')")


def _row(request_id: str, **kw: Any) -> RequestRow:
    fields: dict[str, Any] = dict(created_at=dt.datetime.now(dt.timezone.utc), endpoint="images.generations",
                                  params={}, status="running", http_status=0, notes=[])
    return RequestRow(id=request_id, **{**fields, **kw})


async def _diff(ledger: Ledger) -> list[Any]:
    """What autogenerate would write to bring the database to the ORM tables ([]: nothing)."""
    async with ledger.engine.connect() as conn:
        return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))


async def _tables(ledger: Ledger) -> set[str]:
    async with ledger.engine.connect() as conn:
        return await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))


async def _exec(ledger: Ledger, *sql: str) -> None:
    async with ledger.engine.begin() as conn:
        for s in sql:
            await conn.execute(sa.text(s))


# -- the checks, run on each database -----------------------------------------------------
async def check_fresh_database_is_at_head(url: str) -> None:
    ledger = Ledger(url)
    try:
        assert await ledger.revision() is None
        await ledger.start()
        assert await ledger.revision() == HEAD
        assert await _tables(ledger) == {*Base.metadata.tables, "alembic_version"}
        assert await _diff(ledger) == []
        await ledger.start()  # a second start is a no-op
        assert await ledger.revision() == HEAD
        assert await ledger.record(_row("req_1", user="u"))
        assert await ledger.update(_row("req_1", user="u", status="ok", http_status=200))
        got = await ledger.get("req_1")
        assert got is not None and (got.status, got.user) == ("ok", "u")
    finally:
        await ledger.close()


async def check_old_database_is_upgraded_in_place(url: str, create_old: str) -> None:
    ledger = Ledger(url)
    try:
        await _exec(ledger, create_old, OLD_ROW)
        assert await ledger.revision() is None
        await ledger.start()
        assert await ledger.revision() == HEAD
        assert await _diff(ledger) == []  # the old table is exactly what the migrations build
        old = await ledger.get("req_old")
        assert old is not None
        assert (old.status, old.http_status, old.user, old.model, old.seed, old.output_tokens) == (
            "ok", 200, "alice", "tiny-sd", 7, 272)
        assert old.params == {"prompt": "a red circle"} and old.notes == ["kept"]
        # Accounts' columns (0002) are empty on rows from before them: no cost was known then.
        assert (old.api_key_id, old.project_id, old.cost_usd, old.images) == (None, None, None, None)
        assert old.created_at.replace(tzinfo=dt.timezone.utc) == dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)
        assert await ledger.record(_row("req_new"))
        assert await ledger.mark_interrupted() == 1
        assert [r.id for r in await ledger.recent()] == ["req_new", "req_old"]
    finally:
        await ledger.close()


async def check_failed_writes_are_logged_and_counted(url: str, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(url)
    try:
        await ledger.start()
        assert await ledger.record(_row("req_dup", user="first"))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="imagegate.db"):
            assert await ledger.record(_row("req_dup", user="second")) is False  # duplicate primary key
            assert await ledger.update(_row("req_bad", status=None)) is False  # status is NOT NULL
        assert ledger.write_failures == 2
        errors = [r for r in caplog.records if r.name == "imagegate.db" and r.levelno == logging.ERROR]
        assert [("req_dup" in r.getMessage(), "req_bad" in r.getMessage()) for r in errors] == [
            (True, False), (False, True)]
        assert all(r.exc_info for r in errors)  # with the database's error
        kept = await ledger.get("req_dup")
        assert kept is not None and kept.user == "first"
        assert await ledger.get("req_bad") is None
        assert await ledger.record(_row("req_after"))  # the ledger still works
        assert ledger.write_failures == 2
    finally:
        await ledger.close()


# -- each database (db_url: [sqlite] and [postgresql]) -------------------------------------
async def test_a_fresh_database_is_created_at_head(db_url: str) -> None:
    await check_fresh_database_is_at_head(db_url)


async def test_a_database_from_before_migrations_is_upgraded_in_place(db_url: str) -> None:
    old = OLD_POSTGRES if db_url.startswith("postgresql") else OLD_SQLITE
    await check_old_database_is_upgraded_in_place(db_url, old)


async def test_failed_writes_are_logged_and_counted(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    await check_failed_writes_are_logged_and_counted(db_url, caplog)


async def test_a_database_from_a_newer_imagegate_is_refused_untouched(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        await ledger.start()
        await _exec(ledger, "UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(migrate.SchemaTooNew, match="9999"):
            await ledger.start()
        assert await ledger.revision() == "9999"
    finally:
        await ledger.close()


# -- SQLite only ---------------------------------------------------------------------------
def _sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'imagegate.db'}"


async def test_the_comparison_sees_a_missing_migration(tmp_path: Path) -> None:
    """The no-difference checks above would catch a table change without its migration."""
    ledger = Ledger(_sqlite(tmp_path))
    try:
        await ledger.start()
        changed = sa.MetaData()
        table = Base.metadata.tables["requests"].to_metadata(changed)
        table.append_column(sa.Column("forgotten", sa.Float))
        async with ledger.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), changed))
        added = [(d[0], d[2], d[3].name) for d in diff if d[0] == "add_column"]
        assert added == [("add_column", "requests", "forgotten")]
    finally:
        await ledger.close()


def test_cli_refuses_a_database_from_a_newer_imagegate(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--data-dir", str(tmp_path)]).exit_code == 0
    with sqlite3.connect(tmp_path / "imagegate.db") as c:
        c.execute("UPDATE alembic_version SET version_num = '9999'")
    r = runner.invoke(cli, ["db", "current", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0 and r.output.strip() == "9999 (newer than this imagegate knows)"
    r = runner.invoke(cli, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "newer than this imagegate knows" in r.output


async def test_a_ledger_outage_does_not_fail_the_request(app: Any, client: Any) -> None:
    await _exec(app.state.ledger, "DROP TABLE requests")
    with pytest.raises(openai.BadRequestError):  # still the request's own answer, not a 500
        await client.images.generate(prompt="x", n=11)
    assert app.state.ledger.write_failures == 1


def test_postgres_sql_renders_offline() -> None:
    """`alembic upgrade head --sql` for PostgreSQL (no server needed): the reserved word
    `user` is quoted and times keep their zone."""
    out = io.StringIO()
    cfg = migrate.config()
    cfg.output_buffer = out
    cfg.cmd_opts = argparse.Namespace(x=["url=postgresql+asyncpg://u@localhost/db"])
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE requests" in sql and '"user" VARCHAR(256)' in sql
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in sql and f"'{HEAD}'" in sql


# -- the command line ---------------------------------------------------------------------
def test_cli_db_current_and_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    r = runner.invoke(cli, ["db", "current", "--data-dir", str(data)])
    assert r.exit_code == 1 and "no ledger database" in r.output
    assert not data.exists()  # looking creates nothing

    r = runner.invoke(cli, ["db", "upgrade", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"none -> {HEAD} (head)"
    r = runner.invoke(cli, ["db", "upgrade", "--data-dir", str(data)])
    assert r.exit_code == 0 and r.output.strip() == f"already at {HEAD} (head)"
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(data))  # the default comes from Settings, as for serve
    r = runner.invoke(cli, ["db", "current"])
    assert r.exit_code == 0 and r.output.strip() == f"{HEAD} (head)"

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as c:
        c.execute(OLD_SQLITE)
        c.execute(OLD_ROW)
    url = f"sqlite+aiosqlite:///{old}"
    r = runner.invoke(cli, ["db", "current", "--database-url", url])
    assert r.exit_code == 0 and r.output.strip() == "none (from before migrations)"
    r = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert r.exit_code == 0 and r.output.strip() == f"none (from before migrations) -> {HEAD} (head)"
    with sqlite3.connect(old) as c:
        assert c.execute("SELECT id FROM requests").fetchall() == [("req_old",)]


# -- PostgreSQL only ----------------------------------------------------------------------
async def test_postgres_servers_starting_together_upgrade_once(pg_url: str) -> None:
    """Several processes starting at once on one new database: the advisory lock lets one
    create the tables and the others find them at head."""
    ledgers = [Ledger(pg_url) for _ in range(4)]
    try:
        # Without the lock they block each other's CREATE TABLE: a bound, not a hung suite.
        await asyncio.wait_for(asyncio.gather(*(ledger.start() for ledger in ledgers)), 60)
        assert {await ledger.revision() for ledger in ledgers} == {HEAD}
    finally:
        for ledger in ledgers:
            await ledger.close()
