"""A bounded queue in front of each model's pipeline, drained by one worker thread.

The event loop never runs a model: jobs go to a single-thread executor per model, so
calls into one pipeline never overlap. A full queue answers 503 with Retry-After; a
client that goes away cancels its job whether it is still queued or already running."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from .backends import Backend, Job, RunCancelled
from .errors import Cancelled, GenerationFailed, ImagegateError, Overloaded

log = logging.getLogger("imagegate.scheduler")


@dataclass
class RunResult:
    images: list[Image.Image]
    queue_s: float
    inference_s: float


class ModelWorker:
    def __init__(self, backend: Backend, queue_size: int) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{backend.name}")
        self.waiting = 0
        self.running = 0
        self.ready = False
        self.load_error: str | None = None
        self._lock = asyncio.Lock()
        # Moving average of one job's run time, for Retry-After.
        self._avg_run_s = 1.0
        self.pipeline_calls = 0

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.backend.load)
        except Exception as exc:  # noqa: BLE001 - reported by /health and start-up
            self.load_error = str(exc)
            raise
        self.ready = True

    def _retry_after(self) -> float:
        return max(1.0, self._avg_run_s * (self.waiting + 1))

    def check_capacity(self) -> None:
        if not self.ready:
            raise Overloaded(f"Model '{self.backend.name}' is still loading.", retry_after=5.0)
        if self.waiting >= self.queue_size:
            raise Overloaded(
                f"Model '{self.backend.name}' has {self.waiting} requests waiting; try again shortly.",
                retry_after=self._retry_after(),
            )

    async def run(self, job: Job, on_start: Callable[[], None] | None = None) -> RunResult:
        self.check_capacity()
        loop = asyncio.get_running_loop()
        enqueued = time.perf_counter()
        started: list[float] = []

        def work() -> list[Image.Image]:
            started.append(time.perf_counter())
            if job.cancel.is_set():
                raise RunCancelled()
            if on_start is not None:
                loop.call_soon_threadsafe(on_start)
            return self.backend.run(job)

        self.waiting += 1
        fut = loop.run_in_executor(self.executor, work)
        try:
            images = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The client went away: stop the job at its next step; the executor's future
            # finishes on its own (its exception is consumed below).
            job.cancel.set()
            fut.add_done_callback(_consume)
            raise
        except RunCancelled as exc:
            raise Cancelled("The request was cancelled.") from exc
        except ImagegateError:
            raise
        except Exception as exc:
            log.exception("model %s failed", self.backend.name)
            raise GenerationFailed(f"The model '{self.backend.name}' failed to generate: {type(exc).__name__}: {exc}") from exc
        finally:
            self.waiting -= 1
        done = time.perf_counter()
        start = started[0] if started else done
        run_s = done - start
        self._avg_run_s = 0.8 * self._avg_run_s + 0.2 * run_s
        self.pipeline_calls += job.pipeline_calls
        return RunResult(images=images, queue_s=start - enqueued, inference_s=run_s)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _consume(fut: asyncio.Future) -> None:  # type: ignore[type-arg]
    if not fut.cancelled():
        fut.exception()


class Scheduler:
    def __init__(self, workers: dict[str, ModelWorker]) -> None:
        self.workers = workers

    def worker(self, model: str) -> ModelWorker:
        return self.workers[model]

    @property
    def ready(self) -> bool:
        return all(w.ready for w in self.workers.values())

    async def load_all(self) -> None:
        for w in self.workers.values():
            await w.load()

    def shutdown(self) -> None:
        for w in self.workers.values():
            w.shutdown()
