"""The ledger's tables. A change here needs a migration in `migrations/versions/` (the
tests compare the two, so a forgotten migration fails them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text
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
