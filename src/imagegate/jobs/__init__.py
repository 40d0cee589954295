"""Async work, durable in the database: files (Files API), the request queue and batches
(jobs run by workers in the server process), and webhooks. `Jobs` is the one object the
container builds and the app's lifespan starts and stops."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..core.events import Flow
from ..db.instances import Instance
from ..db.secrets import shared_secret
from ..settings import Settings
from ..storage import Store
from .batches import Batches
from .files import Files, owner_of
from .queue import JobQueue
from .runner import Runner
from .webhooks import Dispatcher, secret_from_bytes, verify

__all__ = ["Batches", "Files", "JobQueue", "Jobs", "owner_of", "verify"]


class Jobs:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], store: Store,
                 service: Flow, instance: Instance) -> None:
        s = settings
        postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self.files = Files(sessions, store)
        self.queue = JobQueue(sessions, postgres=postgres, lease_s=s.job_lease_s, max_attempts=s.job_max_attempts,
                              result_ttl_s=s.result_ttl_s)
        self.batches = Batches(sessions, self.files, self.queue, self.notify)
        self.runner = Runner(self.queue, service, self.files, self.batches, workers=s.job_workers,
                             discount=s.batch_discount, grace_s=s.shutdown_grace_s, instance=instance)
        self.settings = settings
        self.sessions = sessions
        self.dispatcher = Dispatcher(sessions, "", schedule=s.webhook_retry_schedule_s,
                                     timeout_s=s.webhook_timeout_s, allow_hosts=s.webhook_allow_hosts)
        self.allow_hosts = list(s.webhook_allow_hosts)
        self._dispatch: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New work: wake idle workers and the webhook dispatcher."""
        self.runner.wake.set()
        self.dispatcher.wake.set()

    async def webhook_secret(self) -> str:
        """IMAGEGATE_WEBHOOK_SECRET, or the one the database keeps for every process (made on
        first use, from the data dir's key file where an older imagegate made one)."""
        s = self.settings
        if s.webhook_secret:
            return s.webhook_secret.get_secret_value()
        legacy = s.data_dir / "webhook-secret.key"
        return secret_from_bytes(await shared_secret(self.sessions, "webhook-secret", legacy))

    async def start(self) -> None:
        self.dispatcher.secret = await self.webhook_secret()
        await self.runner.start()
        self._dispatch = asyncio.create_task(self.dispatcher.run())

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish within the grace period (then re-queue them)."""
        await self.runner.stop()
        if self._dispatch is not None:
            self._dispatch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatch
