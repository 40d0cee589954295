"""Workers: each claims a job, runs it through the gateway's flow (ImageService.run for local
models) at bulk priority (one more thin consumer of the flow's events, like the JSON
response), and ends it with its result in one transaction. While a job runs its claim is
renewed and a cancel request is noticed within a second. A full engine queue or a loading
model puts the job back without counting an attempt. On shutdown workers stop claiming,
running jobs get `grace` seconds to finish, and those still running are put back in the
queue for the next start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from ..accounts import Principal
from ..core.events import Completed, Failed, Flow
from ..core.request import ImageRequest, RequestContext, Upload
from ..db.instances import Instance
from ..db.tables import JobRow, WebhookRow
from ..errors import ImagegateError, InternalError, InvalidRequest, Overloaded
from ..inputs import decode_data_url
from ..protocol import CreateImageEditForm, CreateImageRequest, ImagesResponse
from ..storage import BlobNotFound
from .batches import Batches
from .files import Files
from .queue import JobQueue, error_body, upload_blobs
from .webhooks import event_row

log = logging.getLogger("imagegate.jobs")
TICK_S = 1.0  # how often a running job renews its lease and reads its cancel flag (one UPDATE)


def principal_dict(p: Principal | None, api_key_hash: str | None) -> dict[str, Any] | None:
    """What a job keeps of its caller: the key's identity, allow-list and budget. Rate
    limits were taken when it was submitted (queue) or do not apply (batch lines)."""
    if p is None:
        return {"api_key": api_key_hash} if api_key_hash else None
    return {"key_id": p.key_id, "name": p.name, "project": p.project,
            "models": list(p.models) if p.models is not None else None, "budget_usd": p.budget_usd,
            "api_key": api_key_hash}


def _principal(d: dict[str, Any] | None) -> Principal | None:
    if not d or "key_id" not in d:
        return None
    return Principal(key_id=d["key_id"], name=d["name"], project=d["project"],
                     models=tuple(d["models"]) if d.get("models") is not None else None, budget_usd=d.get("budget_usd"))


class _Requeue(Exception):
    """Run it later: the engine's queue is full or the model is loading."""


class Runner:
    def __init__(self, queue: JobQueue, service: Flow, files: Files, batches: Batches, *, workers: int,
                 discount: float, grace_s: float, instance: Instance) -> None:
        self.queue = queue
        self.service = service
        self.files = files
        self.batches = batches
        self.n = workers
        self.discount = discount
        self.grace_s = grace_s
        self.instance = instance
        self.wake = asyncio.Event()
        self.stopping = False
        self.process = instance.id  # workers are `<instance id>-<n>`: see JobQueue.recover
        self._workers: list[asyncio.Task[None]] = []
        self._maint: asyncio.Task[None] | None = None
        self._running: dict[str, bool] = {}  # job id -> cancel requested by the user

    async def start(self) -> None:
        """Recover what a dead process left, then start the workers and the maintenance round."""
        requeued, failed = await self.queue.recover(alive=await self.instance.alive(), on_failed=self._events_for)
        if requeued or failed:
            log.warning("%d job(s) were running when the server stopped: %d re-queued, %d failed after "
                        "too many attempts", requeued + len(failed), requeued, len(failed))
        for job in failed:
            if job.batch_id:
                await self.batches.finalize(job.batch_id)
        self._workers = [asyncio.create_task(self._worker(f"{self.process}-{i}")) for i in range(self.n)]
        self._maint = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self._maint is not None:
            self._maint.cancel()
        if not self._workers:
            return
        _, late = await asyncio.wait(self._workers, timeout=self.grace_s)
        for t in late:
            t.cancel()  # its job goes back to the queue (see _run)
        await asyncio.gather(*self._workers, return_exceptions=True)

    # -- loops -----------------------------------------------------------------------
    async def _worker(self, name: str) -> None:
        while not self.stopping:
            try:
                job = await self.queue.claim(name)
            except Exception:  # the database is away: try again shortly
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                continue
            try:
                await self._run(job, name)
            except Exception:  # the database went away mid-job: its lease runs out and it is retried
                log.exception("job %s: its worker failed; the job is retried once its claim expires", job.id)
                await asyncio.sleep(1.0)

    async def _maintain(self) -> None:
        swept = 0.0
        while True:
            await asyncio.sleep(2.0)
            try:
                _, failed = await self.queue.recover(alive=await self.instance.alive(), on_failed=self._events_for)
                await self.batches.expire_due()
                await self.batches.finalize_ready()
                if time.time() - swept > 60:
                    swept = time.time()
                    _, names = await self.queue.sweep()
                    await asyncio.to_thread(self._drop, names)
                if failed:
                    self.wake.set()
            except Exception:
                log.exception("job maintenance failed")

    # -- one job ---------------------------------------------------------------------
    async def _run(self, job: JobRow, worker: str) -> None:
        task = asyncio.create_task(self._execute(job))
        user_cancelled = False
        last_renew = time.monotonic()
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=TICK_S)
                if task.done():
                    break
                ours, cancel = await self.queue.renew(job.id, worker)
                last_renew = time.monotonic()
                if not ours or cancel:
                    user_cancelled = cancel
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    break
        except asyncio.CancelledError:  # shutdown ran out of grace: back to the queue, attempt not counted
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await asyncio.shield(self.queue.release(job, worker, count_attempt=False))
            raise
        del last_renew
        try:
            if user_cancelled:
                status, code, result = "cancelled", 400, error_body("The request was cancelled.",
                                                                   "request_cancelled", "invalid_request_error")
            elif task.cancelled():
                return  # the claim was lost: the process that holds it now ends the job
            else:
                status, code, result = task.result()
                if status == "completed":  # the images go to the Store, the row keeps its name
                    name = f"result-{job.id}.json"  # the same on every attempt: a retry overwrites it
                    data = json.dumps(result, separators=(",", ":")).encode()
                    await asyncio.to_thread(self.files.put_blob, name, data)
                    result = {"blob": name}
        except _Requeue:
            await self.queue.release(job, worker, count_attempt=False)
            await asyncio.sleep(1.0)
            return
        job.status, job.http_status = status, code
        if await self.queue.finish(job, worker, status, code, result, self._events_for(job)):
            await asyncio.to_thread(self._drop, upload_blobs(job.body))  # the uploads are not needed any more
        if job.batch_id:
            await self.batches.finalize(job.batch_id)

    def _drop(self, names: list[str]) -> None:
        for name in names:
            self.files.store.delete(name)

    def _events_for(self, job: JobRow) -> list[WebhookRow]:
        if job.kind != "queue" or not job.webhook_url or job.status not in ("completed", "failed"):
            return []
        return [event_row(job.webhook_url, f"image.request.{job.status}", {"id": job.id, "status": job.status})]

    async def _execute(self, job: JobRow) -> tuple[str, int, dict[str, Any]]:
        who = _principal(job.principal)
        ctx = RequestContext(request_id=job.request_id, endpoint=job.endpoint, base_url=job.base_url,
                             api_key=(job.principal or {}).get("api_key"), priority="bulk", principal=who,
                             price_factor=self.discount if job.kind == "batch" else 1.0)
        # Every ledger write of a job replaces the row under its id (the same on every attempt),
        # so a retried or re-queued job has one row and is billed once.
        ctx.started_row = True
        try:
            req = await self._request(job, who)
            async with contextlib.aclosing(self.service.run(req, ctx)) as events:
                async for ev in events:
                    if isinstance(ev, Failed):
                        raise ev.error
                    if isinstance(ev, Completed):
                        s = ev.spec
                        body = ImagesResponse(created=int(time.time()), data=list(ev.data), background=s.background,
                                              output_format=s.output_format, size=s.size, quality=s.quality,
                                              usage=ev.usage)
                        return "completed", 200, body.model_dump(exclude_none=True)
        except Overloaded as exc:
            raise _Requeue() from exc
        except ImagegateError as exc:
            return "failed", exc.status, exc.body()
        except Exception:  # a bug, not the request's fault: a 500 with the id to quote, the detail in the log
            log.exception("job %s failed", job.id)
            return "failed", 500, InternalError(f"The server had an error processing request {job.id}.").body()
        raise AssertionError("the flow ended without a result")

    async def _request(self, job: JobRow, who: Principal | None) -> ImageRequest:
        body = dict(job.body)
        if job.endpoint == "images.generations":
            return ImageRequest.generation(CreateImageRequest.model_validate(body))
        refs = body.pop("images", [])
        mask_ref = body.pop("mask", None)
        uploads = [Upload(f"images[{i}]", await self._ref(job, r, f"images[{i}]")) for i, r in enumerate(refs)]
        mask = Upload("mask", await self._ref(job, mask_ref, "mask")) if mask_ref else None
        return ImageRequest.edit(CreateImageEditForm.model_validate(body), uploads, mask)

    async def _ref(self, job: JobRow, ref: dict[str, Any], param: str) -> bytes:
        if ref.get("file_id"):
            return await self.files.read_input(job.owner, ref["file_id"], param=f"{param}.file_id")
        if ref.get("blob"):  # a multipart upload of a queue request
            try:
                return await asyncio.to_thread(self.files.store.get, ref["blob"])
            except BlobNotFound:
                raise InvalidRequest(f"{param}: the uploaded image is gone.", param=param) from None
        return decode_data_url(str(ref.get("image_url", "")), param=f"{param}.image_url")
