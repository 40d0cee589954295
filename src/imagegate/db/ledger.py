"""The request ledger (SQLAlchemy async): one row per request, success or not, the base
that metering and billing build on. SQLite by default; any async URL (PostgreSQL via
asyncpg) works."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy import true as sa_true
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from . import migrate
from .tables import RequestRow

log = logging.getLogger("imagegate.db")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer, and a commit is one append (the embedded
    default serves many requests at once)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Ledger:
    def __init__(self, url: str) -> None:
        sqlite = url.startswith("sqlite")
        # SQLite: writers from many requests (ledger rows, rate-limit counters, budget holds)
        # wait their turn for up to 30 s instead of failing at once.
        self.engine: AsyncEngine = create_async_engine(url, connect_args={"timeout": 30} if sqlite else {})
        if sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Rows that could not be written since start (the request itself was still
        # answered): each is logged at ERROR with its request id; to be exported as a metric.
        self.write_failures = 0
        # This process's Instance id, recorded on every row it writes (None: not recorded).
        self.instance_id: str | None = None

    async def start(self) -> None:
        """Upgrade the schema to the newest revision, in place (a database from before
        migrations is stamped at the first one, keeping its rows). A database a newer
        imagegate upgraded raises `migrate.SchemaTooNew`, untouched."""
        async with self.engine.begin() as conn:
            await conn.run_sync(migrate.upgrade)

    async def revision(self) -> str | None:
        """The schema revision of the database (None: empty, or from before migrations)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(migrate.current)

    async def record(self, row: RequestRow) -> bool:
        """Write a new row; False (logged and counted) when the write failed."""
        request_id = row.id
        row.instance_id = row.instance_id or self.instance_id
        try:
            async with self.sessions() as s:
                s.add(row)
                await s.commit()
        except Exception as exc:  # noqa: BLE001 - a ledger outage must not fail the request; it is counted
            self._failed("record", request_id, exc)
            return False
        return True

    async def update(self, row: RequestRow) -> bool:
        """Replace the row written when the request was accepted with its final state (or
        write it, if that first write failed); False (logged and counted) when it failed."""
        request_id = row.id
        row.instance_id = row.instance_id or self.instance_id
        try:
            async with self.sessions() as s:
                await s.merge(row)
                await s.commit()
        except Exception as exc:  # noqa: BLE001 - as in record()
            self._failed("update", request_id, exc)
            return False
        return True

    def _failed(self, op: str, request_id: str, exc: Exception) -> None:
        self.write_failures += 1
        log.error("ledger %s failed for request %s: its row is missing or stale (failed writes since start: %d)",
                  op, request_id, self.write_failures, exc_info=exc)

    async def mark_interrupted(self, alive: Collection[str] = ()) -> int:
        """Rows still `running` whose process is not among the `alive` instance ids (see
        db/instances.py) belong to a process that stopped mid-request; rows of no known
        process (written before instances were recorded) too."""
        gone = (RequestRow.instance_id.is_(None) | RequestRow.instance_id.not_in(list(alive))) if alive else sa_true()
        async with self.sessions() as s:
            res = await s.execute(
                update(RequestRow).where(RequestRow.status == "running", gone).values(
                    status="interrupted", error_code="interrupted",
                    error_message="The server stopped before this request finished."))
            await s.commit()
            return int(getattr(res, "rowcount", 0) or 0)

    async def get(self, request_id: str) -> RequestRow | None:
        async with self.sessions() as s:
            return await s.get(RequestRow, request_id)

    async def recent(self, limit: int = 100) -> list[RequestRow]:
        async with self.sessions() as s:
            res = await s.execute(select(RequestRow).order_by(RequestRow.created_at.desc()).limit(limit))
            return list(res.scalars())

    async def close(self) -> None:
        await self.engine.dispose()
