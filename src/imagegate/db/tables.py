"""The database's tables: the request ledger, API keys, and the counters rate limits and
budgets keep. A change here needs a migration in `migrations/versions/` (the tests compare
the two, so a forgotten migration fails them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text
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
    # Accounts (migration 0002): who pays, for what, and how much. `api_key_id` is the
    # database key's id, or `static_<digest prefix>` for a key from IMAGEGATE_API_KEYS.
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[str | None] = mapped_column(String(32))  # as generated (WxH)
    quality: Mapped[str | None] = mapped_column(String(16))  # as generated (low | medium | high)
    images: Mapped[int | None] = mapped_column(Integer)  # images delivered (0 on failure)
    cost_usd: Mapped[float | None] = mapped_column(Float)  # 0 for failures; None before 0002

    __table_args__ = (Index("ix_requests_created_at", "created_at"),
                      Index("ix_requests_api_key_id_created_at", "api_key_id", "created_at"))


class ApiKeyRow(Base):
    """A key handed out by `imagegate keys create` or the admin API. Only its HMAC-SHA256
    digest under the server's key secret is stored: the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # key_<hex>, shown in usage
    name: Mapped[str] = mapped_column(String(128), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    redacted: Mapped[str] = mapped_column(String(32))  # sk-ig-...abcd: enough to tell keys apart
    project: Mapped[str] = mapped_column(String(128))
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None: every model
    rpm: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    ipm: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)  # per calendar month (UTC)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class RateCounterRow(Base):
    """Fixed-window counters of the rate limiter (the `limits` library's strategy over
    this table when no Redis is configured): shared by every process on the database."""

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # unix time the window ends


class SpendRow(Base):
    """Month-to-date spending of one key, settled when its requests end."""

    __tablename__ = "key_spend"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM, UTC
    spent_usd: Mapped[float] = mapped_column(Float)


class BudgetHoldRow(Base):
    """The estimate a running request holds against its key's budget until it settles; a
    hold whose process died is ignored once it expires."""

    __tablename__ = "budget_holds"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_usd: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
