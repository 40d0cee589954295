"""The job table on SQLite and PostgreSQL (db_url): several claimers over separate
connection pools (as separate processes would be) take every job exactly once; a claim
that ran out of lease is taken over and the old holder's result is refused; a dead
process's job is re-queued by lease expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from imagegate.db import Ledger
from imagegate.db.tables import JobRow
from imagegate.jobs.queue import JobQueue, order_key


def _job(i: int) -> JobRow:
    now = time.time()
    return JobRow(id=f"req_{i:04d}", kind="queue", owner="anonymous", principal=None, endpoint="images.generations",
                  body={"prompt": str(i)}, base_url="http://t/", order_key=order_key(0, now, i), status="queued",
                  attempts=0, cancel_requested=False, request_id=f"req_{i:04d}", created_at=now)


async def test_concurrent_claims_take_each_job_once(db_url: str) -> None:
    ledgers = [Ledger(db_url) for _ in range(2)]
    await ledgers[0].start()
    postgres = db_url.startswith("postgresql")
    queues = [JobQueue(lg.sessions, postgres=postgres, lease_s=30, max_attempts=3, result_ttl_s=60) for lg in ledgers]
    try:
        await queues[0].add([_job(i) for i in range(40)])
        taken: list[str] = []

        async def claimer(q: JobQueue, name: str) -> None:
            while (job := await q.claim(name)) is not None:
                taken.append(job.id)
                assert await q.finish(job, name, "completed", 200, {"ok": True})

        await asyncio.gather(*(claimer(queues[i % 2], f"w{i}") for i in range(8)))
        assert sorted(taken) == [f"req_{i:04d}" for i in range(40)]
    finally:
        for lg in ledgers:
            await lg.close()


async def test_lease_expiry_hands_a_job_over(db_url: str) -> None:
    ledger = Ledger(db_url)
    await ledger.start()
    q = JobQueue(ledger.sessions, postgres=db_url.startswith("postgresql"), lease_s=0.2, max_attempts=3,
                 result_ttl_s=60)
    try:
        await q.add([_job(1)])
        first = await q.claim("dead")
        assert first is not None and first.attempts == 1
        assert await q.claim("other") is None
        await asyncio.sleep(0.3)
        requeued, failed = await q.recover()
        assert (requeued, failed) == (1, [])
        second: Any = await q.claim("alive")
        assert second.id == first.id and second.attempts == 2
        assert not await q.finish(first, "dead", "completed", 200, {"late": True})  # the old claim is refused
        assert await q.finish(second, "alive", "completed", 200, {"ok": True})
        assert (await q.get("anonymous", first.id)).result == {"ok": True}
    finally:
        await ledger.close()
