"""Per-key requests and images per minute, shared by every process on one database (or one
Redis): the `limits` library's fixed-window strategy, whose counters live in the
`rate_counters` table (SQLStorage below) or, with IMAGEGATE_REDIS_URL, in limits' own Redis
storage.

A request takes 1 from its key's requests-per-minute window and `n` from its images-per-
minute window; one that does not fit gives back what it took, so refused requests do not
eat the window, and exactly `rpm` requests succeed per window however many arrive at once
(the counter is one atomic upsert)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import Float, Integer, String, bindparam, delete, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db.tables import RateCounterRow
from ..errors import RateLimited
from .keys import Principal

_UPSERT = text(
    "INSERT INTO rate_counters (key, count, expires_at) VALUES (:key, :amount, :end) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN rate_counters.expires_at <= :now THEN :amount ELSE rate_counters.count + :amount END, "
    "expires_at = CASE WHEN rate_counters.expires_at <= :now THEN :end ELSE rate_counters.expires_at END "
    "RETURNING count, expires_at").bindparams(
        bindparam("key", type_=String), bindparam("amount", type_=Integer), bindparam("now", type_=Float),
        bindparam("end", type_=Float))


class SQLStorage(Storage):
    """limits' storage interface over the database (SQLite or PostgreSQL): each counter is a
    row; `incr` is a single upsert that starts a new window when the old one has ended.
    `incr_many` takes several counters in one transaction (a request's two windows)."""

    STORAGE_SCHEME: list[str] | None = ["imagegate+sql"]  # noqa: RUF012 - limits declares it so

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine
        # A window's end never changes while it lasts: remember it from the upsert.
        self._ends: dict[str, float] = {}

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return (await self.incr_many([(key, expiry, amount)]))[0]

    async def incr_many(self, items: list[tuple[str, int, int]],
                        limits: list[int] | None = None) -> list[int]:
        """(key, expiry, amount) each, in one transaction; the counts after. With `limits`,
        the first count over its limit rolls the whole transaction back (nothing taken; the
        counts returned stop at that one). The counters' rows stay locked until the end, so
        requests of one key take their turns and none sees another's refused attempt."""
        now = time.time()
        counts: list[int] = []
        async with self.engine.connect() as conn, conn.begin() as tx:
            for i, (key, expiry, amount) in enumerate(items):
                row = (await conn.execute(_UPSERT, {"key": key, "amount": amount, "now": now,
                                                    "end": now + float(expiry)})).one()
                counts.append(int(row[0]))
                if len(self._ends) > 10_000:
                    self._ends.clear()
                self._ends[key] = float(row[1])
                if limits is not None and counts[-1] > limits[i]:
                    await tx.rollback()
                    return counts
        return counts

    async def get(self, key: str) -> int:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(RateCounterRow.count, RateCounterRow.expires_at)
                                      .where(RateCounterRow.key == key))).one_or_none()
        return int(row[0]) if row is not None and row[1] > time.time() else 0

    async def get_expiry(self, key: str) -> float:
        end = self._ends.get(key)
        if end is not None and end > time.time():
            return end
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(RateCounterRow.expires_at).where(RateCounterRow.key == key))).scalar()
        return float(value) if value is not None and value > time.time() else time.time()

    async def check(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    async def reset(self) -> int | None:
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(RateCounterRow))
        self._ends.clear()
        return int(res.rowcount or 0)

    async def clear(self, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(RateCounterRow).where(RateCounterRow.key == key))
        self._ends.pop(key, None)

    async def sweep(self) -> int:
        """Delete counters whose window ended over a minute ago (the janitor calls it)."""
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(RateCounterRow).where(RateCounterRow.expires_at < time.time() - 60))
        return int(res.rowcount or 0)


@dataclass(frozen=True)
class Window:
    kind: str  # requests | images
    limit: int
    remaining: int
    reset_s: float  # seconds until the window starts again


class RateLimits:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.limiter = FixedWindowRateLimiter(storage)

    async def take(self, who: Principal, images: int) -> list[Window]:
        """Take one request and `images` images from the key's windows; 429 (nothing taken)
        when either would go over. The windows' state, for the x-ratelimit-* headers."""
        wanted = [(k, RateLimitItemPerMinute(limit), cost)
                  for k, limit, cost in (("requests", who.rpm, 1), ("images", who.ipm, max(1, images)))
                  if limit is not None]
        if not wanted:
            return []
        calls = [(item.key_for("imagegate", who.key_id, kind), item.get_expiry(), cost) for kind, item, cost in wanted]
        if isinstance(self.storage, SQLStorage):  # one transaction: over a limit, nothing is taken
            counts = await self.storage.incr_many(calls, [item.amount for _, item, _ in wanted])
        else:
            counts = []
            for (key, expiry, cost), (_, item, _) in zip(calls, wanted, strict=True):
                counts.append(await self.storage.incr(key, expiry, amount=cost))
                if counts[-1] > item.amount:
                    for k, e, c in calls[: len(counts)]:  # give back what this request took
                        await self.storage.incr(k, e, amount=-c)
                    break
        windows: list[Window] = []
        for (kind, item, cost), (key, _, _), count in zip(wanted, calls, counts, strict=False):
            reset = max(0.0, await self.storage.get_expiry(key) - time.time())
            if count > item.amount:
                if cost > item.amount:
                    msg = (f"This request asks for {cost} images; the key's limit is {item.amount} images per "
                           "minute.")
                else:
                    msg = (f"Rate limit reached for {kind} per minute: limit {item.amount}, "
                           f"try again in {reset:.1f}s.")
                hdrs = headers([*windows, Window(kind, item.amount, max(0, item.amount - (count - cost)), reset)])
                hdrs["retry-after"] = str(max(1, math.ceil(reset)))
                hdrs["retry-after-ms"] = str(int(reset * 1000))
                raise RateLimited(msg, headers=hdrs)
            windows.append(Window(kind, item.amount, item.amount - count, reset))
        return windows


def headers(windows: list[Window]) -> dict[str, str]:
    """OpenAI's names: x-ratelimit-{limit,remaining,reset}-{requests,images}; the reset as
    OpenAI writes it (`1s`, `6m0s`)."""
    out: dict[str, str] = {}
    for w in windows:
        out[f"x-ratelimit-limit-{w.kind}"] = str(w.limit)
        out[f"x-ratelimit-remaining-{w.kind}"] = str(max(0, w.remaining))
        out[f"x-ratelimit-reset-{w.kind}"] = _duration(w.reset_s)
    return out


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes >= 1 else f"{secs:.0f}s"
