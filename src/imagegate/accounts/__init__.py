"""Accounts: who may call (keys), how fast (rate limits), how much they may spend (budgets),
and what each request cost. One `Accounts` object per process, on the ledger's database."""

from __future__ import annotations

import hmac
import logging

from limits.aio.storage import Storage
from limits.storage import storage_from_string
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .budget import Budgets
from .keys import KeyInfo, KeyStore, Principal, parse_duration
from .ratelimit import RateLimits, SQLStorage, Window, headers

log = logging.getLogger("imagegate.accounts")

__all__ = ["Accounts", "KeyInfo", "Principal", "Window", "headers", "parse_duration"]


class Accounts:
    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], *, key_secret: bytes,
                 static_keys: list[str], admin_key: str | None = None, redis_url: str | None = None,
                 hold_seconds: float = 3600.0) -> None:
        self.keys = KeyStore(sessions, key_secret, static_keys)
        self.sql_counters = SQLStorage(engine)
        storage: Storage = self.sql_counters
        if redis_url:
            # limits' own Redis storage (package `coredis`, the `redis` extra); counters then
            # live there, shared by every process that names the same Redis.
            storage = storage_from_string(  # type: ignore[assignment]
                "async+" + redis_url if not redis_url.startswith("async+") else redis_url)
        self.limits = RateLimits(storage)
        self.budgets = Budgets(engine, hold_seconds)
        self._admin = admin_key

    def is_admin(self, token: str | None) -> bool:
        return bool(self._admin and token and hmac.compare_digest(token.encode("utf-8", "surrogatepass"),
                                                                  self._admin.encode()))

    async def sweep(self) -> int:
        """Expired rate-limit counters and budget holds (the janitor's round)."""
        return await self.sql_counters.sweep() + await self.budgets.sweep()
