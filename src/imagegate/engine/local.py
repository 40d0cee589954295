"""The in-process engine (the first EngineClient): per-model queues that form
micro-batches, drained by one worker thread per model.

- The event loop never runs a model: batches go to a single-thread executor per model,
  so calls into one pipeline never overlap.
- Batches form while the previous batch runs: the dispatcher takes the head of the queue
  (interactive before bulk, then first come) and every waiting job with the same batching
  key (Backend.batch_key), up to `max_batch_images` images. A lone request starts at once;
  there is no fixed wait.
- A full queue answers 503 with Retry-After. A client that goes away cancels its job:
  dropped if still queued; if running, its share of the batch is discarded and the call
  stops at the next step once every job in it is cancelled."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from ..admission import trim_heap
from ..errors import Cancelled, GenerationFailed, ImagegateError, Overloaded
from ..normalize import ImageSpec
from .base import Backend, Capabilities, Job, JobRuntime, RunCancelled, RunResult
from .client import Done, EngineEvent, Preview

log = logging.getLogger("imagegate.scheduler")

PRIORITIES = {"interactive": 0, "bulk": 1}


@dataclass
class _Entry:
    priority: int
    seq: int
    job: Job
    runtime: JobRuntime
    future: asyncio.Future[RunResult]
    enqueued: float = field(default_factory=time.perf_counter)


class ModelWorker:
    def __init__(self, backend: Backend, queue_size: int, max_batch_images: int = 8) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.max_batch_images = max(1, max_batch_images)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{backend.name}")
        self.pending: list[_Entry] = []
        self.waiting = 0  # queued + running requests
        self.ready = False
        self.load_error: str | None = None
        self._avg_run_s = 1.0  # moving average of one batch's run time, for Retry-After
        self._seq = itertools.count()
        self._batch_ids = itertools.count(1)
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self.pipeline_calls = 0
        self.batches_run = 0
        self.cancelled_runs = 0  # calls stopped mid-way because every job in them was cancelled
        self._trimmed_at = 0
        self.on_loaded: Callable[[Backend], None] | None = None
        # Set by the Scheduler: loads this model's weights, evicting others under the memory budget.
        self.ensure_loaded: Callable[[ModelWorker], Awaitable[None]] | None = None
        self.last_used = 0.0
        self.memory = 0  # bytes measured after loading

    async def prepare(self) -> None:
        """Validate files and detect the family (no weights); start the dispatcher."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.backend.prepare)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        if self.on_loaded is not None:
            self.on_loaded(self.backend)
        self._wakeup = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"dispatch-{self.backend.name}")

    async def load_weights(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.backend.load)
            self.memory = await loop.run_in_executor(self.executor, self.backend.memory_bytes)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        self.load_error = None
        self.last_used = time.monotonic()

    async def unload(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.backend.unload)
        self.memory = 0

    async def load(self) -> None:
        """Prepare and load now (a model served alone, and tests)."""
        await self.prepare()
        await self.load_weights()
        self.ready = True

    def _retry_after(self) -> float:
        return max(1.0, self._avg_run_s * (self.waiting + 1) / max(1, self.max_batch_images))

    def check_capacity(self) -> None:
        if not self.ready:
            raise Overloaded(f"Model '{self.backend.name}' is still loading.", retry_after=5.0)
        if self.waiting >= self.queue_size:
            raise Overloaded(
                f"Model '{self.backend.name}' has {self.waiting} requests waiting; try again shortly.",
                retry_after=self._retry_after(),
            )

    async def run(self, job: Job, priority: str = "interactive", runtime: JobRuntime | None = None) -> RunResult:
        self.check_capacity()
        assert self._wakeup is not None
        if runtime is None:
            runtime = JobRuntime()
        entry = _Entry(PRIORITIES.get(priority, 0), next(self._seq), job, runtime,
                       asyncio.get_running_loop().create_future())
        self.waiting += 1  # counted before loading, so this model is not evicted under us
        try:
            if not self.backend.loaded:
                if self.ensure_loaded is None:
                    raise Overloaded(f"Model '{self.backend.name}' is not loaded.", retry_after=5.0)
                try:
                    await self.ensure_loaded(self)
                except ValueError as exc:  # bad weights found at first use: the server's fault, not the client's
                    raise GenerationFailed(f"The model '{self.backend.name}' could not be loaded.",
                                           detail=str(exc)) from exc
            self.last_used = time.monotonic()
            entry.enqueued = time.perf_counter()
            self.pending.append(entry)
            self._wakeup.set()
            return await entry.future
        except asyncio.CancelledError:
            runtime.cancel.set()
            if entry in self.pending:
                self.pending.remove(entry)
            raise
        finally:
            self.waiting -= 1

    def _take_batch(self) -> list[_Entry]:
        self.pending = [e for e in self.pending if not (e.runtime.cancel.is_set() or e.future.done())]
        if not self.pending:
            return []
        self.pending.sort(key=lambda e: (e.priority, e.seq))
        head = self.pending[0]
        key = self.backend.batch_key(head.job)
        batch, images = [head], head.job.spec.n
        for e in self.pending[1:]:
            if images + e.job.spec.n > self.max_batch_images:
                continue
            if self.backend.batch_key(e.job) == key:
                batch.append(e)
                images += e.job.spec.n
        for e in batch:
            self.pending.remove(e)
        return batch

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take_batch()
            if not batch:
                if self.batches_run != self._trimmed_at:
                    # Idle after work: hand the heap that batches grew back to the system
                    # (under 10x overload RSS stayed ~150 MB above idle without this).
                    self._trimmed_at = self.batches_run
                    await loop.run_in_executor(self.executor, trim_heap)
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs, runtimes = [e.job for e in batch], [e.runtime for e in batch]
            started = time.perf_counter()
            batch_id = next(self._batch_ids)
            try:
                results = await loop.run_in_executor(self.executor, self.backend.run_batch, jobs, runtimes)
            except RunCancelled:
                self.cancelled_runs += 1
                self._settle(batch, exc=Cancelled("The request was cancelled."))
                continue
            except ImagegateError as exc:
                self._settle(batch, exc=exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the dispatcher
                if len(batch) == 1:
                    self._settle(batch, exc=self._failed(exc))
                else:
                    # One request's input can fail a call shared by many: run them one by one
                    # so that only the culpable request fails.
                    log.warning("model %s: a batch of %d requests failed (%s: %s); retrying them one by one",
                                self.backend.name, len(batch), type(exc).__name__, exc)
                    await self._run_alone(batch, batch_id)
                continue
            run_s = time.perf_counter() - started
            self._avg_run_s = 0.8 * self._avg_run_s + 0.2 * run_s
            self.pipeline_calls += 1
            self.batches_run += 1
            n_images = sum(j.spec.n for j in jobs)
            if len(results) != len(batch):  # a backend bug: fail the batch, keep the dispatcher
                self._settle(batch, exc=self._failed(ValueError(f"{len(results)} results for {len(batch)} jobs")))
                continue
            for e, images in zip(batch, results, strict=True):
                if not e.future.done():
                    e.future.set_result(RunResult(images=images, queue_s=started - e.enqueued, inference_s=run_s,
                                                  seed=e.runtime.seed_used, batch_id=batch_id, batch_jobs=len(batch),
                                                  batch_images=n_images))

    async def _run_alone(self, batch: list[_Entry], batch_id: int) -> None:
        loop = asyncio.get_running_loop()
        for e in batch:
            if e.future.done() or e.runtime.cancel.is_set():
                self._settle([e], exc=Cancelled("The request was cancelled."))
                continue
            started = time.perf_counter()
            try:
                [images] = await loop.run_in_executor(self.executor, self.backend.run_batch, [e.job], [e.runtime])
            except RunCancelled:
                self._settle([e], exc=Cancelled("The request was cancelled."))
                continue
            except ImagegateError as exc:
                self._settle([e], exc=exc)
                continue
            except Exception as exc:  # noqa: BLE001 - this request alone fails
                self._settle([e], exc=self._failed(exc))
                continue
            self.pipeline_calls += 1
            if not e.future.done():
                e.future.set_result(RunResult(images=images, queue_s=started - e.enqueued,
                                              inference_s=time.perf_counter() - started, seed=e.runtime.seed_used,
                                              batch_id=batch_id, batch_jobs=1, batch_images=e.job.spec.n))

    def _failed(self, exc: Exception) -> GenerationFailed:
        log.error("model %s failed", self.backend.name, exc_info=exc)
        return GenerationFailed(
            f"The model '{self.backend.name}' failed to generate this request; the server log has the details.",
            detail=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _settle(batch: list[_Entry], exc: Exception) -> None:
        for e in batch:
            if not e.future.done():
                e.future.set_exception(exc)

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class LocalEngine:
    """All models' workers, and their weights under one memory budget per device: models
    load on first use (or at start-up when `preload`), and the least recently used idle
    models are unloaded to make room."""

    def __init__(self, workers: dict[str, ModelWorker], memory_budget_bytes: int | None = None) -> None:
        self.workers = workers
        self.budget = memory_budget_bytes
        self._lock: asyncio.Lock | None = None
        for w in workers.values():
            w.ensure_loaded = self.ensure_loaded

    def _used(self, device: str, but: ModelWorker) -> int:
        return sum(w.memory for w in self.workers.values()
                   if w is not but and w.backend.loaded and w.backend.device == device)

    async def ensure_loaded(self, worker: ModelWorker) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if worker.backend.loaded:
                return
            need = worker.backend.estimated_bytes()
            device = worker.backend.device
            while self.budget is not None and self._used(device, worker) + need > self.budget:
                idle = [w for w in self.workers.values() if w is not worker and w.backend.loaded
                        and w.backend.device == device and w.waiting == 0]
                if not idle:
                    raise Overloaded(
                        f"Model '{worker.backend.name}' does not fit the memory budget while other models are busy.",
                        retry_after=max(1.0, min(w._avg_run_s for w in self.workers.values())))
                victim = min(idle, key=lambda w: w.last_used)
                log.info("unloading %s (least recently used) to load %s", victim.backend.name, worker.backend.name)
                await victim.unload()
            await worker.load_weights()

    def worker(self, model: str) -> ModelWorker:
        return self.workers[model]

    # -- EngineClient ---------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        return self.workers[model].backend.capabilities

    def check_capacity(self, model: str) -> None:
        self.workers[model].check_capacity()

    def segment(self, model: str, image: Image.Image, text: str) -> Image.Image | None:
        return self.workers[model].backend.segment(image, text)

    def plan(self, model: str, spec: ImageSpec, mode: str, images: Sequence[Image.Image],
             mask: Image.Image | None) -> Job:
        return self.workers[model].backend.plan(spec, mode, images, mask)

    async def submit(self, model: str, job: Job, priority: str = "interactive",
                     on_step: Callable[[int, int], None] | None = None) -> AsyncGenerator[EngineEvent, None]:
        loop = asyncio.get_running_loop()
        previews: asyncio.Queue[Preview] = asyncio.Queue()
        def on_preview(i: int, k: int, im: Image.Image) -> None:  # called from the model's thread
            loop.call_soon_threadsafe(previews.put_nowait, Preview(i, k, im))

        runtime = JobRuntime(on_preview=on_preview, on_step=on_step)  # on_step: called from the model's thread
        run = asyncio.ensure_future(self.workers[model].run(job, priority, runtime))
        try:
            while not run.done() or not previews.empty():
                getter = asyncio.ensure_future(previews.get())
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            yield Done(run.result())
        finally:
            if not run.done():  # the consumer went away: cancel the job
                runtime.cancel.set()
                run.cancel()

    @property
    def ready(self) -> bool:
        return all(w.ready for w in self.workers.values())

    async def load_all(self) -> None:
        """Validate every model, then load those marked `preload` while they fit the budget."""
        for w in self.workers.values():
            await w.prepare()
        for w in self.workers.values():
            if w.backend.config.preload:
                try:
                    await self.ensure_loaded(w)
                except Overloaded:
                    log.warning("%s stays unloaded at start-up: over the memory budget", w.backend.name)
            w.ready = True

    def shutdown(self) -> None:
        for w in self.workers.values():
            w.shutdown()
