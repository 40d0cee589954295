"""The durable job table: jobs are added in one transaction, claimed by one worker at a
time, renewed while they run, and ended in one transaction together with their result
(and their webhook event). A claim is `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so
several server processes share the work; on SQLite (one process per database) it is a
conditional `UPDATE … WHERE status = 'queued'`, atomic under SQLite's single writer. A
worker's name is `<instance id>-<n>` (db/instances.py), so the work of a process that is gone
is taken over without waiting for its leases to run out."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.tables import BudgetHoldRow, JobRow, WebhookRow
from ..errors import InvalidRequest, NotFound

log = logging.getLogger("imagegate.jobs")

PENDING = ("queued", "in_progress")
ENDED = ("completed", "failed", "cancelled", "expired")


def order_key(rank: int, created: float, line: int = 0) -> str:
    """Claim order: rank 0 (queue requests) before rank 1 (batch lines), then first come."""
    return f"{rank}{int(created * 1e6):020d}{line:07d}"


def error_body(message: str, code: str, type_: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def job_blobs(body: dict[str, Any], result: dict[str, Any] | None) -> list[str]:
    """Everything a job keeps in the Store: its uploads and its result."""
    return upload_blobs(body) + ([result["blob"]] if result and isinstance(result.get("blob"), str) else [])


def instance_of(worker: str | None) -> str | None:
    """The instance id in a worker name (`<instance id>-<n>`)."""
    return worker.rsplit("-", 1)[0] if worker else None


def upload_blobs(body: dict[str, Any]) -> list[str]:
    """Store names of the multipart uploads a queued edit carries."""
    refs = [*(body.get("images") or []), *([body["mask"]] if body.get("mask") else [])]
    return [r["blob"] for r in refs if isinstance(r, dict) and isinstance(r.get("blob"), str)]


class JobQueue:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, postgres: bool, lease_s: float,
                 max_attempts: int, result_ttl_s: int) -> None:
        self.sessions = sessions
        self.postgres = postgres
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.result_ttl_s = result_ttl_s

    # -- workers ---------------------------------------------------------------------
    async def claim(self, worker: str) -> JobRow | None:
        now = time.time()
        values = dict(status="in_progress", attempts=JobRow.attempts + 1, claimed_by=worker,
                      lease_until=now + self.lease_s, started_at=now)
        async with self.sessions() as s:
            if self.postgres:
                pick = (select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.order_key).limit(1)
                        .with_for_update(skip_locked=True).scalar_subquery())
                job_id = (await s.execute(update(JobRow).where(JobRow.id == pick).values(**values)
                                          .returning(JobRow.id))).scalar()
                await s.commit()
            else:
                job_id = None
                for _ in range(5):  # another worker may take the same candidate first
                    cand = (await s.execute(select(JobRow.id).where(JobRow.status == "queued")
                                            .order_by(JobRow.order_key).limit(1))).scalar()
                    if cand is None:
                        break
                    res = await s.execute(update(JobRow).where(JobRow.id == cand, JobRow.status == "queued")
                                          .values(**values))
                    await s.commit()
                    if getattr(res, "rowcount", 0) == 1:
                        job_id = cand
                        break
            if job_id is None:
                return None
            return await s.get(JobRow, job_id)

    async def renew(self, job_id: str, worker: str) -> tuple[bool, bool]:
        """Extend the claim; returns (still ours, cancel requested)."""
        async with self.sessions() as s:
            res = await s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.claimed_by == worker,
                                                       JobRow.status == "in_progress")
                                  .values(lease_until=time.time() + self.lease_s).returning(JobRow.cancel_requested))
            flag = res.scalar()
            await s.commit()
        return flag is not None, bool(flag)

    async def finish(self, job: JobRow, worker: str, status: str, http_status: int, result: dict[str, Any],
                     events: Sequence[WebhookRow] = ()) -> bool:
        """End a claimed job with its result and its webhook events, in one transaction;
        False when the claim was lost (another process took the job over after our lease
        ran out: its result will be the one kept)."""
        now = time.time()
        async with self.sessions() as s:
            res = await s.execute(update(JobRow).where(
                JobRow.id == job.id, JobRow.claimed_by == worker, JobRow.status == "in_progress").values(
                status=status, http_status=http_status, result=result, finished_at=now, lease_until=None,
                expires_at=now + self.result_ttl_s))
            if getattr(res, "rowcount", 0) != 1:
                await s.rollback()
                log.warning("job %s: claim lost before it ended; its result was dropped", job.id)
                return False
            s.add_all(list(events))
            await s.commit()
        return True

    async def release(self, job: JobRow, worker: str, *, count_attempt: bool) -> None:
        """Put a claimed job back in the queue (shutdown, or a full engine queue)."""
        async with self.sessions() as s:
            await s.execute(update(JobRow).where(JobRow.id == job.id, JobRow.claimed_by == worker,
                                                 JobRow.status == "in_progress").values(
                status="queued", claimed_by=None, lease_until=None,
                attempts=JobRow.attempts if count_attempt else JobRow.attempts - 1))
            await s.execute(delete(BudgetHoldRow).where(BudgetHoldRow.request_id == job.request_id))
            await s.commit()

    async def recover(self, *, alive: Collection[str] | None = None, on_failed: Any = None) -> tuple[int, list[JobRow]]:
        """Jobs left `in_progress` by a process that died: re-queued, or failed with code
        job_interrupted once they have started `max_attempts` times. Those whose lease ran
        out, and, given the ids of the `alive` instances, those claimed by any other (a
        process that is gone, or a worker name of no known instance).
        Returns (re-queued, failed rows)."""
        now = time.time()
        async with self.sessions() as s:
            rows = [r for r in (await s.execute(select(JobRow).where(JobRow.status == "in_progress"))).scalars()
                    if (r.lease_until is not None and r.lease_until < now)
                    or (alive is not None and instance_of(r.claimed_by) not in alive)]
            requeued, failed = 0, []
            for row in rows:
                guard = [JobRow.id == row.id, JobRow.status == "in_progress", JobRow.claimed_by == row.claimed_by]
                if row.attempts >= self.max_attempts:
                    msg = (f"The server stopped while this request ran, {row.attempts} time(s); "
                           "it is not retried again.")
                    res = await s.execute(update(JobRow).where(*guard).values(
                        status="failed", http_status=500, result=error_body(msg, "job_interrupted"),
                        finished_at=now, lease_until=None, expires_at=now + self.result_ttl_s))
                    if getattr(res, "rowcount", 0) == 1:
                        row.status, row.http_status = "failed", 500
                        row.result = error_body(msg, "job_interrupted")
                        failed.append(row)
                        if on_failed is not None:
                            s.add_all(on_failed(row))
                else:
                    res = await s.execute(update(JobRow).where(*guard).values(
                        status="queued", claimed_by=None, lease_until=None))
                    requeued += getattr(res, "rowcount", 0)
                # A hold the dead process left: the retry takes its own under the same id.
                await s.execute(delete(BudgetHoldRow).where(BudgetHoldRow.request_id == row.request_id))
            await s.commit()
        return requeued, failed

    async def sweep(self) -> tuple[int, list[str]]:
        """Delete queue requests whose results have outlived IMAGEGATE_RESULT_TTL_S; returns
        how many, and the Store names of the uploads they held (for the caller to delete)."""
        cond = (JobRow.kind == "queue", JobRow.status.in_(ENDED), JobRow.expires_at < time.time())
        async with self.sessions() as s:
            rows = (await s.execute(select(JobRow.body, JobRow.result).where(*cond))).all()
            res = await s.execute(delete(JobRow).where(*cond))
            await s.commit()
        return int(getattr(res, "rowcount", 0) or 0), [n for b, r in rows for n in job_blobs(b, r)]

    # -- the API ---------------------------------------------------------------------
    async def add(self, rows: Sequence[Any]) -> None:
        async with self.sessions() as s:
            s.add_all(list(rows))
            await s.commit()

    async def get(self, owner: str, job_id: str, kind: str = "queue") -> JobRow:
        async with self.sessions() as s:
            row = await s.get(JobRow, job_id[:64])
        if row is None or row.owner != owner or row.kind != kind:
            raise NotFound(f"No such request: {job_id[:64]}", code="request_not_found")
        return row

    async def position(self, job: JobRow) -> int:
        """Jobs that will be claimed before this one (0: next)."""
        async with self.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(JobRow).where(
                JobRow.status == "queued", JobRow.order_key < job.order_key))).scalar() or 0)

    async def cancel(self, owner: str, job_id: str) -> JobRow:
        """A queued request ends at once; a running one is stopped by its worker (within a
        second); an ended one is a 400."""
        job = await self.get(owner, job_id)
        now = time.time()
        async with self.sessions() as s:
            res = await s.execute(update(JobRow).where(JobRow.id == job.id, JobRow.status == "queued").values(
                status="cancelled", http_status=400, finished_at=now, expires_at=now + self.result_ttl_s,
                result=error_body("The request was cancelled.", "request_cancelled", "invalid_request_error")))
            if getattr(res, "rowcount", 0) != 1:
                await s.execute(update(JobRow).where(JobRow.id == job.id, JobRow.status == "in_progress")
                                .values(cancel_requested=True))
            await s.commit()
        job = await self.get(owner, job_id)
        if job.status in ("completed", "failed"):
            raise InvalidRequest(f"Request {job.id} already ended ({job.status}).", code="request_already_ended")
        return job

    async def counts(self, batch_id: str) -> dict[str, int]:
        async with self.sessions() as s:
            res = await s.execute(select(JobRow.status, func.count()).where(JobRow.batch_id == batch_id)
                                  .group_by(JobRow.status))
            return {str(k): int(v) for k, v in res.all()}
