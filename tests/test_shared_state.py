"""State that several processes on one database share (issue #26), on SQLite and PostgreSQL
(db_url): each process is an instance with a heartbeat, and only the work of instances that
are gone is marked interrupted or taken over; the secrets come from the database, the same
for every process, the first writer winning; migration 0005 upgrades and downgrades."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from conftest import make_settings, running, tiny_config
from imagegate.app import create_app
from imagegate.db import Ledger, RequestRow, instances, migrate
from imagegate.db.instances import MISSED_BEATS, Instance
from imagegate.db.secrets import shared_secret
from imagegate.db.tables import InstanceRow, JobRow
from imagegate.jobs.queue import JobQueue, order_key


def _row(request_id: str, instance: str | None) -> RequestRow:
    return RequestRow(id=request_id, created_at=dt.datetime.now(dt.timezone.utc), endpoint="images.generations",
                      params={}, status="running", http_status=0, notes=[], instance_id=instance)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process
    return proc.pid


async def _status(ledger: Ledger, request_id: str) -> str:
    row = await ledger.get(request_id)
    assert row is not None
    return row.status


async def test_only_the_work_of_instances_that_are_gone_is_taken(db_url: str) -> None:
    ledger = Ledger(db_url)
    await ledger.start()
    me = Instance(ledger.sessions, interval_s=10)
    try:
        await me.register()
        now = time.time()
        peers = {  # id -> (host, pid, last beat)
            "livepeer": ("other-host", 1, now - 10),  # missed no beat
            "latepeer": ("other-host", 1, now - (MISSED_BEATS - 0.5) * 10),  # late, not yet gone
            "deadpeer": ("other-host", 1, now - (MISSED_BEATS + 1) * 10),  # stopped beating
            "crashed": (me.host, _dead_pid(), now),  # beat just now, but its process is gone
            "restarted": (me.host, me.pid, now),  # our pid under another id: a restarted container
        }
        async with ledger.sessions() as s:
            s.add_all([InstanceRow(id=i, host=h, pid=p, started_at=now - 100, seen_at=seen)
                       for i, (h, p, seen) in peers.items()])
            await s.commit()
        alive = await me.alive()
        assert alive == {me.id, "livepeer", "latepeer"}
        for i in [*peers, me.id, None, "unknown"]:
            assert await ledger.record(_row(f"req_{i}", i))
        assert await ledger.mark_interrupted(alive) == 5
        running_now = {i for i in [*peers, me.id, None, "unknown"] if await _status(ledger, f"req_{i}") == "running"}
        assert running_now == {me.id, "livepeer", "latepeer"}
        interrupted = await ledger.get("req_deadpeer")
        assert interrupted is not None and interrupted.error_code == "interrupted"

        # Jobs: a live peer's claim stands until its lease runs out; a gone one's is taken now.
        queue = JobQueue(ledger.sessions, postgres=db_url.startswith("postgresql"), lease_s=300, max_attempts=3,
                         result_ttl_s=60)
        await queue.add([JobRow(id=f"job_{w}", kind="queue", owner="anonymous", principal=None,
                                endpoint="images.generations", body={}, base_url="http://t/",
                                order_key=order_key(0, now, n), status="queued", attempts=0, cancel_requested=False,
                                request_id=f"job_{w}", created_at=now) for n, w in enumerate(["livepeer", "deadpeer"])])
        for w in ("livepeer", "deadpeer"):
            job = await queue.claim(f"{w}-0")
            assert job is not None
        requeued, failed = await queue.recover(alive=alive)
        assert (requeued, failed) == (1, [])
        async with ledger.sessions() as s:
            states = dict((await s.execute(sa.select(JobRow.id, JobRow.status))).all())
        assert states == {"job_livepeer": "in_progress", "job_deadpeer": "queued"}
    finally:
        await me.retire()
        await ledger.close()


async def test_a_heartbeat_keeps_an_instance_alive_and_a_clean_stop_retires_it(db_url: str) -> None:
    ledger = Ledger(db_url)
    await ledger.start()
    a, b = Instance(ledger.sessions, interval_s=0.2), Instance(ledger.sessions, interval_s=0.2)
    try:
        await a.register()
        await b.register()
        await asyncio.sleep(MISSED_BEATS * 0.2 + 0.1)
        await b.beat()
        assert await b.alive() == {a.id, b.id}  # a missed its beats but lives in this process
        # As another machine's process would see a: by its beats alone.
        instances._IN_THIS_PROCESS.discard(a.id)
        async with ledger.sessions() as s:
            await s.execute(sa.update(InstanceRow).where(InstanceRow.id == a.id).values(host="elsewhere"))
            await s.commit()
        assert await b.alive() == {b.id}
        await a.beat()
        assert await b.alive() == {a.id, b.id}
        async with ledger.sessions() as s:  # a peer deleted our row: the next beat makes it again
            await s.execute(sa.delete(InstanceRow).where(InstanceRow.id == b.id))
            await s.commit()
        await b.beat()
        await a.retire()
        async with ledger.sessions() as s:
            assert set((await s.execute(sa.select(InstanceRow.id))).scalars()) == {b.id}
    finally:
        await b.retire()
        await ledger.close()


async def test_an_app_starting_beside_a_live_one_leaves_its_running_requests(tmp_path: Path, tiny_sd_path: Path,
                                                                             db_url: str) -> None:
    """The second start marks nothing of the first's; once the first stops, the second's
    janitor marks what it left running."""
    first = create_app(make_settings(tmp_path / "a", database_url=db_url), [tiny_config(tiny_sd_path)])
    second = create_app(make_settings(tmp_path / "b", database_url=db_url, janitor_interval_seconds=0.05),
                        [tiny_config(tiny_sd_path)])
    async with contextlib.AsyncExitStack() as stack:
        first_running = contextlib.AsyncExitStack()
        await first_running.enter_async_context(running(first))
        stack.push_async_callback(first_running.aclose)
        ledger: Ledger = first.state.ledger
        assert await ledger.record(_row("req_inflight", None))  # recorded under the first's instance
        inflight = await ledger.get("req_inflight")
        assert inflight is not None and inflight.instance_id == first.state.container.instance.id
        await stack.enter_async_context(running(second))
        await asyncio.sleep(0.3)  # several janitor rounds of the second
        assert await _status(second.state.ledger, "req_inflight") == "running"
        await first_running.aclose()  # the first stops (cleanly: its instance row goes)
        deadline = time.monotonic() + 30
        while await _status(second.state.ledger, "req_inflight") == "running":
            assert time.monotonic() < deadline, "the second never marked the first's request"
            await asyncio.sleep(0.05)
        assert await _status(second.state.ledger, "req_inflight") == "interrupted"


async def test_processes_starting_together_agree_on_each_secret(tmp_path: Path, db_url: str) -> None:
    ledgers = [Ledger(db_url) for _ in range(4)]
    await ledgers[0].start()
    try:
        got = await asyncio.gather(*(shared_secret(lg.sessions, "url-signing-key") for lg in ledgers))
        assert len(set(got)) == 1 and len(got[0]) == 32
        legacy = tmp_path / "key-secret.key"
        legacy.write_bytes(b"s" * 32)
        assert await shared_secret(ledgers[1].sessions, "key-secret", legacy) == b"s" * 32  # imported
        legacy.write_bytes(b"t" * 32)
        assert await shared_secret(ledgers[2].sessions, "key-secret", legacy) == b"s" * 32  # read once
        assert await shared_secret(ledgers[3].sessions, "url-signing-key", legacy) == got[0]
    finally:
        for lg in ledgers:
            await lg.close()


async def test_migration_0005_upgrades_and_downgrades(db_url: str) -> None:
    ledger = Ledger(db_url)
    try:
        async with ledger.engine.begin() as conn:
            await conn.run_sync(migrate.upgrade, "0004")
            await conn.execute(sa.text(
                "INSERT INTO requests (id, created_at, endpoint, params, status, http_status, notes) "
                "VALUES ('req_old', '2026-12-01 10:00:00', 'images.generations', '{}', 'running', 0, '[]')"))
        await ledger.start()
        assert await ledger.revision() == migrate.head()
        old = await ledger.get("req_old")
        assert old is not None and old.instance_id is None  # no known process: marked at the next start
        assert await ledger.mark_interrupted({"someone"}) == 1

        def down(c: Any) -> None:
            from alembic import command

            command.downgrade(migrate.config(c), "0004")

        async with ledger.engine.begin() as conn:
            await conn.run_sync(down)
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("requests")})
        assert not {"instances", "shared_secrets"} & tables and "instance_id" not in columns
        assert await ledger.revision() == "0004"
    finally:
        await ledger.close()


async def test_an_old_data_dirs_key_files_are_imported_on_first_start(tmp_path: Path, tiny_sd_path: Path) -> None:
    """Links, keys and webhook receivers made before the upgrade keep working: each key file
    becomes the database's secret (and the files are not read again)."""
    from imagegate.jobs.webhooks import secret_from_bytes

    data = tmp_path / "data"
    data.mkdir()
    files = {name: bytes([n]) * 32 for n, name in enumerate(["url-signing.key", "key-secret.key",
                                                              "webhook-secret.key"], start=1)}
    for name, value in files.items():
        (data / name).write_bytes(value)
    for _ in range(2):
        app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
        async with running(app):
            assert app.state.accounts.keys.secret == files["key-secret.key"]
            assert app.state.jobs.dispatcher.secret == secret_from_bytes(files["webhook-secret.key"])
            assert app.state.storage._key == files["url-signing.key"]
        for name in files:  # the second start reads the database only
            (data / name).unlink(missing_ok=True)
