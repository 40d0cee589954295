"""Batches (OpenAI's Batch API): the input file is validated whole, up front (a bad line
fails the batch with its line number and nothing runs); each line becomes a job; when the
last job ends the batch is finalised: its output and error files are written (each
custom_id exactly once) and the batch row, the file rows and the deletion of its jobs are
one transaction. Finalising is idempotent (file names derive from the batch id), so a
crash in the middle is finished by the next maintenance round."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.tables import BatchRow, FileRow, JobRow
from ..errors import InvalidRequest, NotFound, validation_error
from ..protocol import CreateImageEditJSONRequest, CreateImageRequest
from .files import Files
from .queue import PENDING, JobQueue, job_blobs, order_key
from .webhooks import event_row

log = logging.getLogger("imagegate.batches")

ENDPOINTS: dict[str, tuple[str, type[BaseModel]]] = {
    "/v1/images/generations": ("images.generations", CreateImageRequest),
    "/v1/images/edits": ("images.edits", CreateImageEditJSONRequest),
}
MAX_LINES = 50_000  # OpenAI's limit per batch
MAX_ERRORS = 1000  # errors reported for one input file
WINDOW_S = 24 * 3600


def _integers(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: 2.0 is an integer (as routes/images.py's bodies)."""
    props = model.model_json_schema().get("properties", {})
    ints = {k for k, v in props.items()
            if v.get("type") == "integer" or any(a.get("type") == "integer" for a in v.get("anyOf", []))}
    return {k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in data.items()}


def parse_input(raw: bytes, url: str, file_ids: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(lines, errors): each line {line, custom_id, body}; errors {code, message, param, line}
    in OpenAI's shape. `file_ids` are the files the caller owns (for edits' file_id inputs)."""
    model = ENDPOINTS[url][1]
    errors: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()

    def err(n: int, code: str, message: str, param: str | None = None) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": n})

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [], [{"code": "invalid_file", "message": "The input file is not UTF-8 text.", "param": None,
                     "line": None}]
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(lines) >= MAX_LINES:
            err(n, "too_many_requests", f"A batch holds at most {MAX_LINES} requests.")
            break
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            err(n, "invalid_json_line", "This line is not valid JSON.")
            continue
        if not isinstance(obj, dict):
            err(n, "invalid_json_line", "This line is not a JSON object.")
            continue
        extra = set(obj) - {"custom_id", "method", "url", "body"}
        cid = obj.get("custom_id")
        if extra:
            err(n, "invalid_request", f"Unknown field '{sorted(extra)[0][:64]}'.", sorted(extra)[0][:64])
        elif not isinstance(cid, str) or not cid or len(cid) > 512 or not cid.isprintable():
            err(n, "missing_custom_id", "custom_id must be a non-empty printable string (at most 512 characters).",
                "custom_id")
        elif cid in seen:
            err(n, "duplicate_custom_id", f"The custom_id '{cid[:64]}' is used by an earlier line.", "custom_id")
        elif obj.get("method") != "POST":
            err(n, "invalid_method", "method must be POST.", "method")
        elif obj.get("url") != url:
            err(n, "mismatched_url", f"url must be the batch's endpoint, {url}.", "url")
        elif not isinstance(obj.get("body"), dict):
            err(n, "invalid_body", "body must be a JSON object.", "body")
        else:
            seen.add(cid)
            body = obj["body"]
            try:
                parsed = model.model_validate(_integers(model, body), strict=True)
            except ValidationError as exc:
                e = validation_error(list(exc.errors()))
                err(n, "invalid_body", e.message, f"body.{e.param}" if e.param else "body")
                continue
            if getattr(parsed, "stream", False):
                err(n, "invalid_body", "stream is not available in a batch.", "body.stream")
                continue
            problem = _refs_problem(parsed, file_ids)
            if problem:
                err(n, "invalid_body", problem[1], problem[0])
                continue
            lines.append({"line": n, "custom_id": cid, "body": body})
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file has no requests.", "param": None,
                       "line": None})
    return lines, errors


def _refs_problem(parsed: BaseModel, file_ids: set[str]) -> tuple[str, str] | None:
    if not isinstance(parsed, CreateImageEditJSONRequest):
        return None
    refs = [(f"body.images[{i}]", r) for i, r in enumerate(parsed.images)]
    if parsed.mask is not None:
        refs.append(("body.mask", parsed.mask))
    for param, ref in refs:
        if (ref.file_id is None) == (ref.image_url is None):
            return param, f"{param}: give exactly one of image_url or file_id."
        if ref.file_id is not None and ref.file_id not in file_ids:
            return f"{param}.file_id", f"No such File object: {ref.file_id[:64]}"
        if ref.image_url is not None and not ref.image_url.startswith("data:"):
            return f"{param}.image_url", "image_url must be a data URL (the server never fetches URLs)."
    return None


def batch_object(b: BatchRow, live: dict[str, int] | None = None) -> dict[str, Any]:
    """OpenAI's batch object; `live` counts jobs by status while the batch runs."""
    if live is not None:
        counts = {"total": sum(live.values()), "completed": live.get("completed", 0),
                  "failed": sum(v for k, v in live.items() if k in ("failed", "cancelled", "expired"))}
    else:
        counts = {"total": b.total, "completed": b.completed, "failed": b.failed}
    meta = b.meta or None
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "input_file_id": b.input_file_id,
        "completion_window": b.completion_window, "status": b.status,
        "errors": {"object": "list", "data": b.errors} if b.errors else None,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id, "created_at": b.created_at,
        "in_progress_at": b.in_progress_at, "expires_at": b.expires_at, "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at, "failed_at": b.failed_at, "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at, "cancelled_at": b.cancelled_at, "request_counts": counts,
        "metadata": meta,
    }


class Batches:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], files: Files, queue: JobQueue,
                 notify: Callable[[], None]) -> None:
        self.sessions = sessions
        self.files = files
        self.queue = queue
        self.notify = notify  # wakes the workers and the webhook dispatcher

    async def create(self, owner: str, principal: dict[str, Any] | None, base_url: str, *, input_file_id: str,
                     endpoint: str, completion_window: str, metadata: dict[str, str] | None) -> BatchRow:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"Invalid value for 'endpoint': use one of {', '.join(ENDPOINTS)}.",
                                 param="endpoint", code="invalid_value")
        if completion_window != "24h":
            raise InvalidRequest("Invalid value for 'completion_window': only '24h' is supported.",
                                 param="completion_window", code="invalid_value")
        f = await self.files.get(owner, input_file_id, param="input_file_id")
        if f.purpose != "batch":
            raise InvalidRequest(f"File {f.id} has purpose '{f.purpose}'; a batch's input needs purpose 'batch'.",
                                 param="input_file_id", code="invalid_value")
        raw = await self.files.read(owner, input_file_id, param="input_file_id")
        async with self.sessions() as s:
            owned = set((await s.execute(select(FileRow.id).where(FileRow.owner == owner))).scalars())
        lines, errors = await asyncio.to_thread(parse_input, raw, endpoint, owned)
        now = time.time()
        batch_id = f"batch_{uuid.uuid4().hex}"
        b = BatchRow(id=batch_id, owner=owner, endpoint=endpoint, input_file_id=f.id,
                     completion_window=completion_window, meta=metadata, created_at=int(now), total=0, completed=0,
                     failed=0)
        if errors:
            b.status, b.errors, b.failed_at = "failed", errors, int(now)
            await self.queue.add([b])
            await self._announce_now(b)
            return b
        b.status, b.in_progress_at, b.expires_at, b.total = "in_progress", int(now), int(now) + WINDOW_S, len(lines)
        rows: list[Any] = [b]
        for ln in lines:
            jid = f"batch_req_{uuid.uuid4().hex}"
            rows.append(JobRow(id=jid, kind="batch", owner=owner, principal=principal, endpoint=ENDPOINTS[endpoint][0],
                               body=ln["body"], base_url=base_url, batch_id=batch_id, custom_id=ln["custom_id"],
                               line=ln["line"], order_key=order_key(1, now, ln["line"]), status="queued", attempts=0,
                               cancel_requested=False, request_id=jid, created_at=now))
        await self.queue.add(rows)
        self.notify()
        return b

    async def _announce_now(self, b: BatchRow) -> None:
        url = (b.meta or {}).get("webhook_url")
        if url:
            await self.queue.add([event_row(url, f"batch.{b.status}", {"id": b.id})])
            self.notify()

    def _drop(self, names: list[str]) -> None:
        for name in names:
            self.files.store.delete(name)

    async def get(self, owner: str, batch_id: str) -> BatchRow:
        async with self.sessions() as s:
            b = await s.get(BatchRow, batch_id[:64])
        if b is None or b.owner != owner:
            raise NotFound(f"No such batch: {batch_id[:64]}", code="batch_not_found")
        return b

    async def describe(self, b: BatchRow) -> dict[str, Any]:
        live = await self.queue.counts(b.id) if b.status in ("in_progress", "cancelling", "finalizing") else None
        return batch_object(b, live)

    async def list(self, owner: str, after: str | None, limit: int) -> tuple[Sequence[BatchRow], bool]:
        stmt = select(BatchRow).where(BatchRow.owner == owner)
        async with self.sessions() as s:
            if after:
                cur = await s.get(BatchRow, after[:64])
                if cur is None or cur.owner != owner:
                    raise NotFound(f"No such batch: {after[:64]}", param="after", code="batch_not_found")
                stmt = stmt.where((BatchRow.created_at < cur.created_at)
                                  | ((BatchRow.created_at == cur.created_at) & (BatchRow.id < cur.id)))
            rows = list((await s.execute(stmt.order_by(BatchRow.created_at.desc(), BatchRow.id.desc())
                                         .limit(limit + 1))).scalars())
        return rows[:limit], len(rows) > limit

    async def cancel(self, owner: str, batch_id: str) -> BatchRow:
        """Queued lines are cancelled at once; running ones finish; then the batch is
        finalised as `cancelled`, with what completed in its output file."""
        b = await self.get(owner, batch_id)
        if b.status not in ("validating", "in_progress"):
            if b.status in ("cancelling", "cancelled"):
                return b
            raise InvalidRequest(f"Batch {b.id} cannot be cancelled: it is {b.status}.", code="invalid_state")
        now = time.time()
        async with self.sessions() as s:
            await s.execute(update(BatchRow).where(BatchRow.id == b.id, BatchRow.status == "in_progress").values(
                status="cancelling", cancelling_at=int(now)))
            await s.execute(update(JobRow).where(JobRow.batch_id == b.id, JobRow.status == "queued").values(
                status="cancelled", finished_at=now))
            await s.commit()
        await self.finalize(b.id)
        return await self.get(owner, batch_id)

    async def expire_due(self) -> None:
        """Batches past their 24 h window: lines not started expire, the batch is finalised."""
        now = time.time()
        async with self.sessions() as s:
            due = list((await s.execute(select(BatchRow.id).where(
                BatchRow.status == "in_progress", BatchRow.expires_at < now))).scalars())
            for bid in due:
                await s.execute(update(JobRow).where(JobRow.batch_id == bid, JobRow.status == "queued").values(
                    status="expired", finished_at=now))
            await s.commit()

    async def finalize_ready(self) -> None:
        async with self.sessions() as s:
            ids = list((await s.execute(select(BatchRow.id).where(
                BatchRow.status.in_(("in_progress", "cancelling", "finalizing"))))).scalars())
        for bid in ids:
            await self.finalize(bid)

    async def finalize(self, batch_id: str) -> None:
        async with self.sessions() as s:
            b = await s.get(BatchRow, batch_id)
            if b is None or b.status not in ("in_progress", "cancelling", "finalizing"):
                return
            pending = (await s.execute(select(JobRow.id).where(JobRow.batch_id == batch_id,
                                                               JobRow.status.in_(PENDING)).limit(1))).scalar()
            if pending is not None:
                return
            jobs = list((await s.execute(select(JobRow).where(JobRow.batch_id == batch_id)
                                         .order_by(JobRow.line))).scalars())
        before, now = b.status, int(time.time())
        if before == "in_progress":
            async with self.sessions() as s:
                await s.execute(update(BatchRow).where(BatchRow.id == b.id, BatchRow.status == "in_progress")
                                .values(status="finalizing", finalizing_at=now))
                await s.commit()
            b.finalizing_at = now
        out, err, ok = await asyncio.to_thread(_result_files, jobs, self.files.load_result)
        hexid = b.id.removeprefix("batch_")
        out_id, err_id = f"file-{hexid}-output", f"file-{hexid}-errors"
        # Workers finishing the last lines and the sweeper may finalise one batch at once, and one that read the
        # lines before another finished (and dropped their results) writes lines whose results are gone: each
        # writes its own blobs, and only the one whose status change lands keeps them.
        attempt = uuid.uuid4().hex[:12]
        blobs = {out_id: f"{out_id}-{attempt}", err_id: f"{err_id}-{attempt}"}
        mine = [blobs[fid] for fid, data in ((out_id, out), (err_id, err)) if data]
        if out:
            await asyncio.to_thread(self.files.put_blob, blobs[out_id], out)
        if err:
            await asyncio.to_thread(self.files.put_blob, blobs[err_id], err)
        final = ("cancelled" if before == "cancelling" or b.cancelling_at is not None
                 else "expired" if any(j.status == "expired" for j in jobs) else "completed")
        stamp = {"cancelled": "cancelled_at", "expired": "expired_at", "completed": "completed_at"}[final]
        async with self.sessions() as s:
            current = "cancelling" if before == "cancelling" else "finalizing"
            res = await s.execute(update(BatchRow).where(BatchRow.id == b.id, BatchRow.status == current).values(
                status=final, output_file_id=out_id if out else None, error_file_id=err_id if err else None,
                total=len(jobs), completed=ok, failed=len(jobs) - ok, **{stamp: now},
                **({"finalizing_at": now} if b.finalizing_at is None else {})))
            if getattr(res, "rowcount", 0) != 1:  # another finaliser won: its files stand, these go
                await s.rollback()
                await asyncio.to_thread(self._drop, mine)
                return
            for fid, data, name in ((out_id, out, "output"), (err_id, err, "errors")):
                if data:
                    await s.merge(FileRow(id=fid, owner=b.owner, purpose="batch_output",
                                          filename=f"{b.id}_{name}.jsonl", bytes=len(data), blob=blobs[fid],
                                          created_at=now))
            await s.execute(delete(JobRow).where(JobRow.batch_id == b.id))
            url = (b.meta or {}).get("webhook_url")
            if url:
                s.add(event_row(url, f"batch.{final}", {"id": b.id}))
            await s.commit()
        self.notify()
        await asyncio.to_thread(self._drop, [n for j in jobs for n in job_blobs(j.body, j.result)])
        log.info("batch %s %s: %d of %d lines succeeded", b.id, final, ok, len(jobs))


def _result_files(jobs: Sequence[JobRow], load: Callable[[dict[str, Any] | None], dict[str, Any]]
                  ) -> tuple[bytes, bytes, int]:
    """(output file, error file, successes): one line per job, each custom_id exactly once."""
    out: list[str] = []
    err: list[str] = []
    for j in jobs:
        line: dict[str, Any] = {"id": j.id, "custom_id": j.custom_id}
        if j.status == "completed":
            line |= {"response": {"status_code": 200, "request_id": j.request_id, "body": load(j.result)},
                     "error": None}
            out.append(json.dumps(line, separators=(",", ":")))
        elif j.status == "failed":
            line |= {"response": {"status_code": j.http_status or 500, "request_id": j.request_id,
                                  "body": load(j.result)},
                     "error": None}
            err.append(json.dumps(line, separators=(",", ":")))
        else:  # cancelled or expired before it ran
            code = "batch_expired" if j.status == "expired" else "batch_cancelled"
            what = "expired with" if j.status == "expired" else "was cancelled with"
            line |= {"response": None, "error": {"code": code, "message": f"This request {what} its batch."}}
            err.append(json.dumps(line, separators=(",", ":")))
    return _jsonl(out), _jsonl(err), len(out)


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode() if lines else b""
