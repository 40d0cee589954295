"""The request ledger (SQLAlchemy async): one row per request, success or not, the base
that metering and billing build on. SQLite by default; any async URL (PostgreSQL via
asyncpg) works."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    endpoint: Mapped[str] = mapped_column(String(64))
    api_key: Mapped[str | None] = mapped_column(String(64))  # sha256 prefix, never the key itself
    user: Mapped[str | None] = mapped_column(String(256))
    model_requested: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # running (accepted, not finished) | ok | error | cancelled | interrupted (the process
    # stopped while it ran: marked at the next start)
    status: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int] = mapped_column(Integer)  # 0 while running / when interrupted
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    n: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)
    queue_s: Mapped[float | None] = mapped_column(Float)
    inference_s: Mapped[float | None] = mapped_column(Float)
    encode_s: Mapped[float | None] = mapped_column(Float)
    total_s: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Which pipeline call served it, and how many requests/images shared that call.
    batch_id: Mapped[int | None] = mapped_column(Integer)
    batch_jobs: Mapped[int | None] = mapped_column(Integer)
    batch_images: Mapped[int | None] = mapped_column(Integer)


class Ledger:
    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def record(self, row: RequestRow) -> None:
        async with self.sessions() as s:
            s.add(row)
            await s.commit()

    async def update(self, row: RequestRow) -> None:
        """Replace the row written when the request was accepted with its final state."""
        async with self.sessions() as s:
            await s.merge(row)
            await s.commit()

    async def mark_interrupted(self) -> int:
        """Rows still `running` at start-up belong to a process that stopped mid-request.
        (One process per database: with several sharing one, this needs a per-process id.)"""
        async with self.sessions() as s:
            res = await s.execute(
                update(RequestRow).where(RequestRow.status == "running").values(
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
