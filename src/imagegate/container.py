"""The object graph built from Settings, shared by the server (app.py's lifespan) and the
CLI's local mode: registry, engine, ledger, storage, encode pool and the ImageService.

Backends are imported only for the kinds configured, so a process that serves no local
model never imports torch."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import catalogue as routes_file
from .accounts import Accounts
from .catalogue import Catalogue
from .core.gateway import Gateway
from .core.service import ImageService
from .db import Ledger
from .db.instances import Instance
from .db.secrets import shared_secret
from .engine.base import Backend
from .engine.local import LocalEngine, ModelWorker
from .jobs import Jobs
from .observability import Metrics, Observer, Tracer
from .registry import ModelConfig, Registry, builtin_mini_config, load_models_file
from .safety import Moderation, Signer, load_credentials
from .settings import Settings
from .storage import SignedLinks, open_store
from .storage.s3 import S3Store

if TYPE_CHECKING:
    from .engine.ray import RayEngine

log = logging.getLogger("imagegate")

# Builds the engine of a process whose models run elsewhere (ray_serve.py's ingress), given
# the registry it should fill in once the models have loaded.
EngineFactory = Callable[[Registry], "RayEngine"]


def model_configs(settings: Settings) -> list[ModelConfig]:
    if settings.models_file is not None:
        return load_models_file(settings.models_file)
    return [builtin_mini_config()]


def catalogue_for(settings: Settings, configs: list[ModelConfig]) -> Catalogue:
    """The models file's providers and routed names, checked against the local models."""
    cat = routes_file.load(settings.models_file)
    cat.check({c.name for c in configs})
    return cat


def backend_for(config: ModelConfig, settings: Settings) -> Backend:
    """The backend for one configured model, by its kind."""
    if config.backend == "diffusers":
        import torch

        from .backends.diffusers import DiffusersBackend

        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
        return DiffusersBackend(config)
    raise ValueError(f"model {config.name!r}: unknown backend {config.backend!r}")


@dataclass
class Container:
    settings: Settings
    registry: Registry
    engine: LocalEngine | RayEngine
    ledger: Ledger
    storage: SignedLinks
    pool: ThreadPoolExecutor
    service: ImageService
    accounts: Accounts
    moderation: Moderation
    jobs: Jobs
    gateway: Gateway
    instance: Instance
    observer: Observer | None = None

    @classmethod
    async def start(cls, settings: Settings, configs: list[ModelConfig] | None = None,
                    registry: Registry | None = None, catalogue: Catalogue | None = None,
                    engine_factory: EngineFactory | None = None) -> Container:
        configs = configs if configs is not None else model_configs(settings)
        catalogue = catalogue if catalogue is not None else catalogue_for(settings, configs)
        registry = registry or Registry(configs, default=settings.default_model, allow_empty=bool(catalogue),
                                        gpu_hour_usd=settings.gpu_hour_usd)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(settings.resolved_database_url)
        await ledger.start()
        storage = await open_storage(settings, ledger)  # first: a store that cannot work leaves no trace
        accounts = await make_accounts(settings, ledger)
        instance = Instance(ledger.sessions, settings.janitor_interval_seconds)
        await instance.register()
        ledger.instance_id = instance.id
        await mark_interrupted(ledger, instance)
        engine = engine_factory(registry) if engine_factory is not None else local_engine(settings, configs, registry)
        pool = ThreadPoolExecutor(max_workers=settings.encode_workers or os.cpu_count() or 1,
                                  thread_name_prefix="encode")
        moderation = Moderation(settings, pool)
        signer = Signer(load_credentials(settings.data_dir, settings.c2pa_cert, settings.c2pa_key)) \
            if settings.c2pa == "on" else None
        observer = Observer(Metrics(engine, ledger), Tracer.from_env())
        service = ImageService(settings, registry, engine, storage, ledger, pool, accounts=accounts,
                               moderation=moderation, signer=signer, observer=observer)
        gateway = Gateway(service, catalogue, int(settings.gateway_cache_mb * 2**20))
        # Jobs run through the gateway, so a batch line may name a routed model too.
        jobs = Jobs(settings, ledger.sessions, storage.store, gateway, instance)
        return cls(settings, registry, engine, ledger, storage, pool, service, accounts, moderation, jobs, gateway,
                   instance, observer)

    async def load(self) -> None:
        """Validate every model and load those marked `preload` (the server runs this in
        the background so /health can say "loading")."""
        await self.engine.load_all()

    async def heartbeat(self) -> None:
        """Beat this process's row and take over the running requests of processes gone
        since (the janitor calls it every round)."""
        await self.instance.beat()
        await mark_interrupted(self.ledger, self.instance)

    async def close(self) -> None:
        await self.gateway.close()
        self.engine.shutdown()
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:
            await self.instance.retire()
        except Exception:  # the database is away: our row lapses like a crashed process's
            log.exception("could not remove this process's instance row")
        await self.ledger.close()
        if self.observer is not None:
            self.observer.close()


def local_engine(settings: Settings, configs: list[ModelConfig], registry: Registry) -> LocalEngine:
    """The models served in this process, one worker (queue + micro-batching) each."""
    workers = {c.name: ModelWorker(backend_for(c, settings), settings.queue_size, c.max_batch_images)
               for c in configs}
    budget = int(settings.memory_budget_gb * 2**30) if settings.memory_budget_gb else None
    for w in workers.values():
        # The family detected at load fills the presets the models file left out.
        w.on_loaded = lambda backend: registry.update(backend.config)
    return LocalEngine(workers, budget)


async def mark_interrupted(ledger: Ledger, instance: Instance) -> None:
    interrupted = await ledger.mark_interrupted(await instance.alive())
    if interrupted:
        log.warning("%d request(s) were still running when their process stopped: marked interrupted", interrupted)


async def open_storage(settings: Settings, ledger: Ledger) -> SignedLinks:
    """The Store IMAGEGATE_STORAGE_URL names behind links signed with the shared key (the
    setting's, else the database's); presigned by the store itself where configured."""
    store = await asyncio.to_thread(open_store, settings.resolved_storage_url)
    key = settings.url_signing_key
    secret = key.get_secret_value().encode() if key else await shared_secret(
        ledger.sessions, "url-signing-key", settings.data_dir / "url-signing.key")
    presign = store.presign if settings.presigned_urls and isinstance(store, S3Store) else None
    return SignedLinks(store, secret, settings.url_ttl_seconds, presign=presign)


async def make_accounts(settings: Settings, ledger: Ledger) -> Accounts:
    """Accounts on the ledger's database (the server, and the CLI's `keys` commands), their
    key secret the setting's, else the one the database keeps for every process."""
    secret = settings.key_secret
    key_secret = (secret.get_secret_value().encode() if secret
                  else await shared_secret(ledger.sessions, "key-secret", settings.data_dir / "key-secret.key"))
    admin = settings.admin_key.get_secret_value() if settings.admin_key else None
    return Accounts(ledger.engine, ledger.sessions, key_secret=key_secret, static_keys=settings.api_keys,
                    admin_key=admin, redis_url=settings.redis_url, hold_seconds=settings.budget_hold_seconds)


async def janitor(storage: SignedLinks, interval: float, accounts: Accounts | None = None,
                  heartbeat: Callable[[], Awaitable[None]] | None = None) -> None:
    """Every `interval`: beats this process's heartbeat, deletes expired images through the
    Store, and ended rate-limit windows and budget holds. Replicas sharing a store and a
    database each run one: deleting the same thing twice is harmless, so no coordination is
    needed. A sweep runs in a thread and may outlast a round (listing a large bucket): the
    next starts when it ends, and the heartbeat never waits for it, or a busy process would
    look dead to its peers."""
    sweep: asyncio.Task[int] | None = None
    while True:
        if sweep is None or sweep.done():
            if sweep is not None and not sweep.cancelled():
                if sweep.exception() is not None:
                    log.error("janitor failed to sweep the store", exc_info=sweep.exception())
                elif removed := sweep.result():
                    log.info("janitor removed %d expired images", removed)
            sweep = asyncio.create_task(asyncio.to_thread(storage.sweep))
        for step in (heartbeat, accounts.sweep if accounts is not None else None):
            try:
                if step is not None:
                    await step()
            except Exception:  # keep sweeping
                log.exception("janitor failed")
        try:
            await asyncio.sleep(interval)
        except asyncio.CancelledError:
            sweep.cancel()
            raise
