"""The database's tables: the request ledger, API keys, and the counters rate limits and
budgets keep. A change here needs a migration in `migrations/versions/` (the tests compare
the two, so a forgotten migration fails them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text
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
    # The gateway (migration 0004): who served it (a provider name from the models file, or
    # "local") and how many routes were tried; notes say what was emulated.
    provider: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int | None] = mapped_column(Integer)
    # Shared state (migration 0005): the process (InstanceRow.id) that ran it, so a start-up
    # marks interrupted only the rows of processes that are gone, not those of its peers.
    instance_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_requests_created_at", "created_at"),
                      Index("ix_requests_api_key_id_created_at", "api_key_id", "created_at"),
                      # Marking interrupted rows runs every janitor round: it finds the few
                      # running rows without reading the whole ledger.
                      Index("ix_requests_status", "status"))


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


class SettlementRow(Base):
    """A request whose cost was added to its key's spend (migration 0006): a job retried under
    the same request id after its process died settles once, not once per attempt."""

    __tablename__ = "budget_settlements"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    cost_usd: Mapped[float] = mapped_column(Float)
    settled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


# -- async work (migration 0003): files, durable jobs, batches, webhook deliveries -------------
class FileRow(Base):
    """An uploaded file (OpenAI's Files API) or a batch's output/error file. The bytes live in
    the Store under `blob`; `owner` is the key id that uploaded it (`anonymous` on an open
    server): another key never sees it."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-<hex>
    owner: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(Integer)  # unix seconds, as OpenAI reports it

    __table_args__ = (Index("ix_files_owner_created_at", "owner", "created_at"),)


class JobRow(Base):
    """One unit of async work: a queue request or one line of a batch. It is claimed by one
    worker at a time (status `in_progress`, `claimed_by`, `lease_until`), and its result is
    written in the same transaction that ends it. `request_id` is the ledger row's id: the
    same on every attempt, so a retried job replaces its ledger row instead of adding one."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # queue | batch
    owner: Mapped[str] = mapped_column(String(128))
    principal: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the caller's key, as it was at submission
    endpoint: Mapped[str] = mapped_column(String(64))  # images.generations | images.edits
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_url: Mapped[str] = mapped_column(String(512))
    batch_id: Mapped[str | None] = mapped_column(String(64))
    custom_id: Mapped[str | None] = mapped_column(String(512))
    line: Mapped[int | None] = mapped_column(Integer)
    order_key: Mapped[str] = mapped_column(String(64))  # claim order: queue before batch, then first come
    # queued | in_progress | completed | failed | cancelled | expired
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    request_id: Mapped[str] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # ImagesResponse, or the error envelope
    webhook_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)  # results are deleted after it

    __table_args__ = (Index("ix_jobs_status_order_key", "status", "order_key"),
                      Index("ix_jobs_batch_id_status", "batch_id", "status"))


class BatchRow(Base):
    """A batch (OpenAI's Batch API): its lines are JobRows with `batch_id`; timestamps are
    unix seconds as OpenAI reports them."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # batch_<hex>
    owner: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(Integer)
    in_progress_at: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[int | None] = mapped_column(Integer)
    finalizing_at: Mapped[int | None] = mapped_column(Integer)
    completed_at: Mapped[int | None] = mapped_column(Integer)
    failed_at: Mapped[int | None] = mapped_column(Integer)
    expired_at: Mapped[int | None] = mapped_column(Integer)
    cancelling_at: Mapped[int | None] = mapped_column(Integer)
    cancelled_at: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_batches_owner_created_at", "owner", "created_at"),)


class WebhookRow(Base):
    """One webhook event to one URL, written in the transaction that ended its job or batch
    (so it is sent at least once), retried with backoff until a 2xx; `attempts_log` keeps
    every delivery attempt (time, status code or error)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # msg_<hex>: the webhook-id header
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempts_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)


# -- shared state (migration 0005): what every process on one database must agree on ----------
class SecretRow(Base):
    """A secret every process sharing the database uses (the URL-signing key, the API-key
    HMAC secret, the webhook secret) unless a setting gives it: written once by the first
    process to start (insert-if-absent), read by all the others."""

    __tablename__ = "shared_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


class InstanceRow(Base):
    """One running process (server, worker, or the CLI's local mode) and its heartbeat: a row
    whose `seen_at` is recent belongs to a live process, whose running requests and jobs no
    other process may take for interrupted."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)
