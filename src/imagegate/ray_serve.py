"""imagegate on Ray Serve: `imagegate serve --engine ray`, or `serve run/deploy` with
`import_path: imagegate.ray_serve:build_app`.

One application, two kinds of deployment:
- `imagegate`, the ingress: the same FastAPI app as the one-process server (every route,
  auth, accounts, jobs, streaming, errors), built by create_app() inside each replica,
  with a RayEngine (engine/ray.py) in place of the local scheduler.
- `model-<name>`, one per configured model: each replica owns one device (`num_gpus: 1` on
  GPU models, CPU replicas for the built-in model) and runs the local engine for that one
  model inside it, so the micro-batching of engine/local.py happens per replica. Replica
  counts and autoscaling come from the models file (registry.Scaling).

State that must be shared (ledger, keys, limits, jobs, files, images) lives in the
database and the store, never in a replica: run with PostgreSQL and an s3:// store on
more than one machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from ray import serve

from .engine.base import Capabilities, Job
from .engine.client import Done
from .engine.local import LocalEngine, ModelWorker
from .engine.ray import Raised, RayEngine, Step
from .errors import ImagegateError
from .normalize import ImageSpec
from .registry import ModelConfig
from .settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger("imagegate.ray")

INGRESS = "imagegate"
APP_NAME = "imagegate"


def deployment_name(model: str) -> str:
    """`model-<name>`: Ray Serve names allow letters, digits, '-', '_' and '.'."""
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


# -- the model replica ---------------------------------------------------------------------
class ModelServer:
    """One replica of one model: the local engine with a single worker, so requests routed
    to this replica form micro-batches exactly as in the one-process server."""

    async def __init__(self, config: ModelConfig, settings: Settings) -> None:  # type: ignore[misc]
        from .container import backend_for  # torch and diffusers are imported in replicas only

        self.name = config.name
        worker = ModelWorker(backend_for(config, settings), settings.queue_size, config.max_batch_images)
        budget = int(settings.memory_budget_gb * 2**30) if settings.memory_budget_gb else None
        self.engine = LocalEngine({config.name: worker}, budget)
        self.worker = worker
        await self.engine.load_all()
        try:
            self.replica = serve.get_replica_context().replica_tag
        except Exception:  # noqa: BLE001 - outside Serve (a unit test): the process id still tells replicas apart
            self.replica = f"pid-{os.getpid()}"
        log.info("replica %s of %s ready", self.replica, self.name)

    def check_health(self) -> None:
        """Serve restarts a replica whose model failed to load."""
        if self.worker.load_error:
            raise RuntimeError(f"model {self.name!r}: {self.worker.load_error}")

    def stats(self) -> dict[str, Any]:
        """This replica's counters (tests and operators: which replica did what)."""
        w = self.worker
        return {"replica": self.replica, "pid": os.getpid(), "waiting": w.waiting,
                "pipeline_calls": w.pipeline_calls, "cancelled_runs": w.cancelled_runs}

    def describe(self) -> tuple[ModelConfig, Capabilities]:
        """The config with the detected family's defaults filled in, and the capabilities."""
        return self.worker.backend.config, self.worker.backend.capabilities

    def plan(self, spec: ImageSpec, mode: str, images: Sequence[Image.Image], mask: Image.Image | None) -> Job:
        return self.engine.plan(self.name, spec, mode, images, mask)

    def segment(self, image: Image.Image, text: str) -> Image.Image | None:
        return self.engine.segment(self.name, image, text)

    async def submit(self, job: Job, priority: str, steps: bool) -> AsyncGenerator[object, None]:
        """The engine's events for `job` (Preview..., Done), Step events when asked, and a
        Raised event for an ImagegateError."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[object] = asyncio.Queue()

        def on_step(step: int, total: int) -> None:  # called from the model's thread
            loop.call_soon_threadsafe(events.put_nowait, Step(step, total))

        async def pump() -> None:
            try:
                async with contextlib.aclosing(self.engine.submit(
                        self.name, job, priority, on_step if steps else None)) as run:
                    async for ev in run:
                        events.put_nowait(Done(replace(ev.result, replica=self.replica))
                                          if isinstance(ev, Done) else ev)
            except ImagegateError as exc:
                events.put_nowait(Raised(exc))

        task = asyncio.create_task(pump())
        try:
            while True:
                ev = await events.get()
                yield ev
                if isinstance(ev, Done | Raised):
                    return
        finally:
            # The ingress cancelled (its client went away) or the stream ended: closing the
            # local submit cancels the job if it is still queued or running.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- the application -----------------------------------------------------------------------
@serve.ingress()
class Ingress:
    """The FastAPI app, built in each ingress replica (its lifespan starts the container:
    database, store, accounts, jobs, with a RayEngine on the model deployments)."""

    def __init__(self, settings: Settings, configs: list[ModelConfig],
                 handles: dict[str, DeploymentHandle[Any]]) -> None:
        self.settings, self.configs, self.handles = settings, configs, handles

    def __serve_build_asgi_app__(self) -> FastAPI:
        from .app import create_app

        return create_app(self.settings, self.configs,
                          engine=lambda registry: RayEngine(self.handles, on_loaded=registry.update))


def replica_resources(config: ModelConfig, settings: Settings) -> dict[str, float]:
    """What one replica of `config` reserves: the models file's num_gpus / num_cpus, else
    one GPU for a model placed on CUDA (its `device` option, or `auto` on a cluster that has
    GPUs) and none for the built-in model, which is served on CPU replicas."""
    s = config.scaling
    gpus = s.num_gpus
    if gpus is None:
        device = str(config.options.get("device", "auto"))
        if config.builtin or device == "cpu":
            gpus = 0
        elif device.startswith("cuda"):
            gpus = 1
        else:
            import ray

            gpus = 1 if ray.is_initialized() and ray.cluster_resources().get(  # type: ignore[no-untyped-call]
                "GPU", 0) > 0 else 0
    cpus = s.num_cpus if s.num_cpus is not None else (1.0 if not gpus else 2.0)
    return {"num_gpus": float(gpus), "num_cpus": float(cpus)}


def model_options(config: ModelConfig, settings: Settings) -> dict[str, Any]:
    """Ray Serve deployment options for one model."""
    s = config.scaling
    opts: dict[str, Any] = {
        "name": deployment_name(config.name),
        "ray_actor_options": replica_resources(config, settings),
        # Requests a replica takes at once: enough to fill a micro-batch while one runs.
        "max_ongoing_requests": max(4, 2 * config.max_batch_images),
        # Beyond this many waiting at the handles, Serve refuses (-> 503 with Retry-After).
        "max_queued_requests": settings.queue_size,
        "graceful_shutdown_timeout_s": 60,
    }
    if s.autoscaling:
        opts["autoscaling_config"] = {
            "min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests or float(config.max_batch_images)}
    else:
        opts["num_replicas"] = s.replicas or 1
    return opts


def replica_settings(settings: Settings, resources: dict[str, float]) -> Settings:
    """A CPU replica runs torch on the CPUs it reserved (Ray sets OMP_NUM_THREADS the same
    way), not on every core of the machine, which its neighbours share."""
    if settings.torch_threads or resources["num_gpus"]:
        return settings
    return settings.model_copy(update={"torch_threads": max(1, int(resources["num_cpus"]))})


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (the `import_path` of a Serve config file). `args`:
    `models_file` (else IMAGEGATE_MODELS_FILE or the built-in model alone),
    `ingress_replicas` (1), `ingress_num_cpus` (1). Every other setting comes from the
    IMAGEGATE_* variables, as for `imagegate serve`."""
    args = dict(args or {})
    unknown = sorted(set(args) - {"models_file", "ingress_replicas", "ingress_num_cpus"})
    if unknown:
        raise ValueError(f"unknown imagegate application args {unknown}")
    given = {"models_file": Path(str(args["models_file"]))} if args.get("models_file") else {}
    settings = Settings(**given)  # type: ignore[arg-type]
    return application(settings, int(args.get("ingress_replicas", 1)), float(args.get("ingress_num_cpus", 1)))


# Read from the environment inside the replicas, not through Settings: the S3 store's
# endpoint and credentials (the standard AWS variables), tracing's exporter, the model hub.
FORWARDED_PREFIXES = ("AWS_", "OTEL_", "HF_")


def forwarded_env() -> dict[str, str]:
    """The variables of this process that replicas need too: Ray starts them from the raylet
    of their node, whose environment is not this one's."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


def application(settings: Settings, ingress_replicas: int = 1, ingress_num_cpus: float = 1.0) -> Any:
    from .container import model_configs

    # Replicas do not start in this process's working directory: relative paths would
    # point elsewhere there.
    settings = settings.model_copy(update={
        "data_dir": settings.data_dir.resolve(),
        "models_file": settings.models_file.resolve() if settings.models_file else None})
    configs = model_configs(settings)
    env = {"env_vars": forwarded_env()}
    handles: dict[str, Any] = {}
    for c in configs:
        opts = model_options(c, settings)
        opts["ray_actor_options"]["runtime_env"] = env
        handles[c.name] = serve.deployment(ModelServer).options(**opts).bind(  # type: ignore[attr-defined]
            c, replica_settings(settings, opts["ray_actor_options"]))
    ingress = serve.deployment(Ingress).options(  # type: ignore[attr-defined]
        name=INGRESS, num_replicas=ingress_replicas,
        ray_actor_options={"num_cpus": ingress_num_cpus, "runtime_env": env},
        # The ingress holds streams open while models work: many requests at once.
        max_ongoing_requests=max(100, settings.queue_size * max(1, len(configs))))
    return ingress.bind(settings, configs, handles)


def cpus_needed(settings: Settings, ingress_replicas: int = 1, ingress_num_cpus: float = 1.0) -> float:
    """Logical CPUs the application reserves at its largest: a local Ray instance is started
    with at least this many, so every replica can be placed on one machine."""
    from .container import model_configs

    total = ingress_replicas * ingress_num_cpus
    for c in model_configs(settings):
        s = c.scaling
        total += (s.max_replicas or s.replicas or 1) * replica_resources(c, settings)["num_cpus"]
    return total


def run(settings: Settings) -> None:
    """`imagegate serve --engine ray`: join RAY_ADDRESS or start a local Ray instance, deploy
    the application on Serve's HTTP proxy at settings.host:settings.port, and keep it up
    until SIGINT/SIGTERM; then delete it (a joined cluster keeps running) or stop the local
    instance."""
    import math
    import signal
    import threading

    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        need = math.ceil(cpus_needed(settings, settings.ray_ingress_replicas))
        ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from ray.serve.context import _get_global_client

    # Serve may already run on a joined cluster, with its own HTTP address: ours is then
    # ignored, so say where the application really is. Serve started here stops with us.
    running = _get_global_client(raise_if_no_controller_running=False)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(application(settings, settings.ray_ingress_replicas), name=APP_NAME, route_prefix="/")
        client = _get_global_client()
        assert client is not None  # serve.start made one
        http = client.http_config
        where = f"http://{http.host}:{http.port}"
        if running is not None and (http.host, http.port) != (settings.host, settings.port):
            log.warning("Serve was already running on this cluster: its HTTP address %s wins over %s:%d",
                        where, settings.host, settings.port)
        log.warning("imagegate on Ray Serve: %s (%s)", where, f"cluster {address}" if address else "local Ray instance")
        stop.wait()
    finally:
        with contextlib.suppress(Exception):
            if running is None:
                serve.shutdown()  # type: ignore[no-untyped-call]
            else:
                serve.delete(APP_NAME)
        ray.shutdown()
