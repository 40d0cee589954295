"""The Ray Serve engine client: the ingress's EngineClient over DeploymentHandles to the
model deployments that ray_serve.py builds (one per model, replicas per device).

Across the hop, `plan`, `segment` and `describe` are plain remote calls and `submit` a
streaming one: the replica yields the engine's events (previews, then Done) plus Step
counts, and an ImagegateError raised there comes back as a `Raised` event and is raised
again here, with its status and fields (errors.py pickles them). Closing this side's
iterator (the client went away) cancels the streaming call; Ray raises CancelledError
inside the replica's generator, which closes the local submit and so cancels the job. A
replica that dies, or a deployment whose queue is full, is a 503 with Retry-After: the
openai SDK retries those on its own."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from ..errors import ImagegateError, Overloaded
from ..normalize import ImageSpec
from ..registry import ModelConfig
from .base import Capabilities, Job
from .client import Done, EngineEvent, Preview

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

log = logging.getLogger("imagegate.ray")

# How long a plan/segment/describe call may wait for a replica (one that is starting
# loads its weights first: the built-in model takes ~3 s on a 2-core CPU, SDXL a minute).
CALL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Step:
    step: int
    total: int


@dataclass(frozen=True)
class Raised:
    error: ImagegateError


# -- the ingress side ----------------------------------------------------------------------
class RemoteModel:
    """What /health and /metrics read of a model served by replicas (the shape of
    engine/local.ModelWorker they use): ready once a replica has described it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = False
        self.load_error: str | None = None
        self.waiting = 0  # this ingress replica's requests in flight to the model

    @property
    def backend(self) -> RemoteModel:
        return self

    @property
    def loaded(self) -> bool:
        return self.ready


def _unavailable(model: str, exc: BaseException) -> Overloaded:
    if isinstance(exc, BackPressureError):
        return Overloaded(f"Model '{model}' has a full queue on every replica; try again shortly.", retry_after=2.0)
    return Overloaded(f"The replica serving model '{model}' stopped or is restarting ({type(exc).__name__}); "
                      "try again.", retry_after=1.0)


RETRYABLE = (RayActorError, BackPressureError, DeploymentUnavailableError)


class RayEngine:
    """EngineClient over DeploymentHandles to the model deployments."""

    def __init__(self, handles: dict[str, DeploymentHandle[Any]],
                 on_loaded: Callable[[ModelConfig], None] | None = None) -> None:
        self.handles = handles
        self.on_loaded = on_loaded
        self.workers = {name: RemoteModel(name) for name in handles}
        self._caps: dict[str, Capabilities] = {}

    @property
    def ready(self) -> bool:
        return all(w.ready for w in self.workers.values())

    async def load_all(self) -> None:
        """Wait for one replica of each model to describe it (Serve queues the call until a
        replica is up, so this returns when the models have loaded)."""
        for name, handle in self.handles.items():
            w = self.workers[name]
            try:
                config, caps = await handle.describe.remote()
            except Exception as exc:  # noqa: BLE001 - reported by /health, the others still load
                w.load_error = f"{type(exc).__name__}: {exc}"
                log.error("model %s: no replica came up: %s", name, w.load_error)
                continue
            self._caps[name] = caps
            if self.on_loaded is not None:
                self.on_loaded(config)
            w.ready = True

    def shutdown(self) -> None:
        """Nothing to stop: Serve owns the replicas."""

    def capabilities(self, model: str) -> Capabilities:
        caps = self._caps.get(model)
        if caps is None:
            raise Overloaded(f"Model '{model}' is still loading.", retry_after=5.0)
        return caps

    def check_capacity(self, model: str) -> None:
        # A full queue is the model deployment's to say (max_queued_requests -> 503 at submit).
        self.capabilities(model)

    def _call(self, model: str, method: str, *args: Any) -> Any:
        """Blocking: called from the service's worker threads, never the event loop."""
        try:
            return getattr(self.handles[model], method).remote(*args).result(timeout_s=CALL_TIMEOUT_S)
        except RETRYABLE as exc:
            raise _unavailable(model, exc) from exc
        except TimeoutError as exc:
            raise Overloaded(f"No replica of model '{model}' answered in time.", retry_after=5.0) from exc

    def plan(self, model: str, spec: ImageSpec, mode: str, images: Sequence[Image.Image],
             mask: Image.Image | None) -> Job:
        job: Job = self._call(model, "plan", spec, mode, list(images), mask)
        return job

    def segment(self, model: str, image: Image.Image, text: str) -> Image.Image | None:
        region: Image.Image | None = self._call(model, "segment", image, text)
        return region

    async def submit(self, model: str, job: Job, priority: str = "interactive",
                     on_step: Callable[[int, int], None] | None = None) -> AsyncGenerator[EngineEvent, None]:
        worker = self.workers[model]
        stream: DeploymentResponseGenerator[object] = self.handles[model].options(stream=True).submit.remote(
            job, priority, on_step is not None)  # type: ignore[assignment]
        finished = False
        worker.waiting += 1
        try:
            async for ev in stream:
                if isinstance(ev, Step):
                    if on_step is not None:
                        on_step(ev.step, ev.total)
                elif isinstance(ev, Raised):
                    finished = True
                    raise ev.error
                elif isinstance(ev, Preview | Done):
                    finished = isinstance(ev, Done)
                    yield ev
        except RETRYABLE as exc:
            finished = True
            raise _unavailable(model, exc) from exc
        finally:
            worker.waiting -= 1
            if not finished:  # our consumer went away: cancel the replica's work
                stream.cancel()  # type: ignore[no-untyped-call]
