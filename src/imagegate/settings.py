"""One typed settings object, built once and passed into create_app(settings).

Every field is documented in the README's settings table (a test keeps the two in step).
Environment variables use the prefix IMAGEGATE_ (e.g. IMAGEGATE_API_KEYS='["k1","k2"]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def local_path(url: str) -> Path:
    """The directory of a file:// storage URL; ValueError naming the setting unless it is
    an absolute local path."""
    parts = urlsplit(url)
    path = Path(unquote(parts.path))
    if parts.netloc not in ("", "localhost") or not path.is_absolute() or parts.query or parts.fragment:
        raise ValueError(f"IMAGEGATE_STORAGE_URL={url!r}: a file URL names an absolute local directory, "
                         "as file:///srv/imagegate/images")
    return path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGEGATE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, description="TCP port the server listens on.")
    engine: Literal["local", "ray"] = Field(
        "local", description="Where models run: `local` (this process, the default) or `ray` (Ray Serve: an ingress "
                             "deployment and one deployment per model, replicas per device; joins RAY_ADDRESS, else "
                             "starts a local Ray instance; docs/scaling.md).")
    ray_ingress_replicas: int = Field(
        1, ge=1, description="Replicas of the ingress deployment (the FastAPI app) under `--engine ray`.")
    data_dir: Path = Field(
        Path("data"), description="Directory for the SQLite ledger and (with the default storage_url) stored images.")
    models_file: Path | None = Field(
        None, description="TOML file with [[models]] tables; empty means the built-in imagegate-mini only.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL of the request ledger; default sqlite+aiosqlite in data_dir.")
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted bearer keys; empty means no authentication.")
    api_keys_file: Path | None = Field(
        None, description="File of accepted bearer keys, one a line (blank lines and # comments ignored), merged with "
                          "api_keys; keeps keys off the command line.")
    admin_key: SecretStr | None = Field(
        None,
        description="Bearer key of the admin API (/admin/v1/keys) and of every key's usage; not an image key unless "
                    "it is also in api_keys or the database.")
    key_secret: SecretStr | None = Field(
        None,
        description="HMAC secret under which API keys are stored (as digests), at least 32 characters. Default: one "
                    "kept in the database, made on first start (or imported from data_dir's key-secret.key), so every "
                    "process sharing the database agrees.")
    redis_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0) for the rate-limit counters; default: they live in the database.")
    budget_hold_seconds: float = Field(
        3600.0, gt=0,
        description="How long a request's cost estimate stays held against its key's budget if its process dies "
                    "before settling it.")
    allow_anonymous: bool = Field(False, description="Allow binding a non-loopback address with no API key configured.")
    public_base_url: str | None = Field(
        None, description="Base URL used in `url` responses; default: the request's own base URL.")
    url_ttl_seconds: int = Field(3600, ge=1, description="Lifetime of signed image URLs (OpenAI's is 60 minutes).")
    url_signing_key: SecretStr | None = Field(
        None,
        description="HMAC key for signed image URLs, at least 32 characters. Default: one kept in the database, made "
                    "on first start (or imported from data_dir's url-signing.key), so every replica sharing the "
                    "database and the store serves every link.")
    storage_url: str | None = Field(
        None,
        description="Where images and uploaded files are stored: file:///absolute/dir, or s3://bucket/prefix for any "
                    "S3-compatible store (endpoint and credentials from the standard AWS_* variables). Default: "
                    "file://<data_dir>/images.")
    presigned_urls: bool = Field(
        False,
        description="`url` responses are presigned S3 GET URLs (same lifetime) instead of our own signed links; "
                    "needs an s3:// storage_url.")
    janitor_interval_seconds: float = Field(60.0, gt=0, description="How often expired stored images are deleted.")
    max_body_bytes: int = Field(128 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it).")
    max_image_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest single uploaded image (OpenAI's limit is 50 MB).")
    max_input_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Decompression-bomb guard: largest width*height of an input image, checked before decoding.",
    )
    max_input_images: int = Field(16, ge=1, description="Most images one edit request may carry.")
    max_request_pixels: int = Field(
        80_000_000, ge=1,
        description="Most decoded input pixels (all images and the mask) one request may carry; "
                    "400 image_too_large above.")
    max_inflight_pixels: int = Field(
        160_000_000, ge=1,
        description="Server-wide budget of input pixels being decoded or composited at once; 503 + Retry-After above.")
    max_inflight_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1024,
        description="Server-wide budget of request-body bytes held in memory at once; 503 + Retry-After above.")
    ledger_text_chars: int = Field(
        1000, ge=0,
        description="Longest text (prompt, user, ...) stored in a ledger row; longer ones keep their byte length "
                    "and SHA-256.")
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Weights allowed in memory per device; least recently used idle models are unloaded.")
    max_inference_steps: int = Field(
        100, ge=1, le=200,
        description="Most denoising steps a request may ask for (num_inference_steps); bounds its cost.")
    queue_size: int = Field(
        32, ge=1, description="Requests that may be queued or running per model before 503 + Retry-After.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: the machine's cores.")
    encode_workers: int | None = Field(
        None, ge=1, description="Threads for image encoding; default: the machine's cores.")
    default_model: str | None = Field(
        None, description="Model that OpenAI names and a missing `model` resolve to; default: the first model served."
    )
    log_level: str = Field("info", description="uvicorn / imagegate log level.")
    gpu_hour_usd: float | None = Field(
        None, ge=0,
        description="Price of an hour of device time for local models without a pricing table: their cost is "
                    "this rate times the measured device-seconds of the batch, shared by its images.")
    gateway_cache_mb: float = Field(
        256.0, ge=0,
        description="Memory for the gateway's response cache and Idempotency-Key results (per process; least "
                    "recently used first out).")

    # Safety and provenance (safety/).
    moderation: Literal["on", "off"] = Field(
        "on", description="Input and output moderation; off for operators who moderate elsewhere (reported in "
                          "x-imagegate-notes).")
    moderation_deny_file: Path | None = Field(
        None, description="Operator deny list: one phrase a line (`category: phrase` names its category), blocked at "
                          "every moderation level.")
    moderation_allow_file: Path | None = Field(
        None, description="Operator allow list: phrases taken out of a prompt before the shipped lists are matched "
                          "(they do not override the deny list).")
    moderation_output_threshold_auto: float = Field(
        0.6, ge=0, le=1, description="NSFW score (0..1) at or above which an output or input image is blocked at "
                                     "moderation=auto.")
    moderation_output_threshold_low: float = Field(
        0.85, ge=0, le=1, description="NSFW score (0..1) at or above which an output or input image is blocked at "
                                      "moderation=low.")
    c2pa: Literal["on", "off"] = Field("on", description="Sign every output image with a C2PA manifest.")
    c2pa_cert: Path | None = Field(
        None, description="PEM certificate chain (signing certificate first) for C2PA; default: a development chain "
                          "made in data_dir/c2pa on first start.")
    c2pa_key: Path | None = Field(None, description="PEM private key (ES256) of c2pa_cert.")
    c2pa_trust_anchors: Path | None = Field(
        None, description="PEM trust anchors `imagegate verify` checks against; default: the development CA in "
                          "data_dir/c2pa.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object a line, each with the request id it was logged for.")

    # Connections (server.py). The defaults keep a slow but live client working and bound
    # what an idle or stalling one can hold.
    header_timeout_seconds: float = Field(
        10.0, gt=0,
        description="Longest time from opening a connection (or a later request's first byte) to the end of the "
                    "request's headers; the connection is closed after it.")
    body_timeout_seconds: float = Field(
        30.0, gt=0,
        description="Longest wait for the next chunk of a request body (408 request_timeout after it); also how long "
                    "an unread rest of a body is drained after an early response.")
    body_total_timeout_seconds: float = Field(
        900.0, gt=0,
        description="Longest time to receive a whole request body (408 request_timeout after it): a 50 MB image "
                    "finishes at 0.45 Mbit/s.")
    keep_alive_timeout_seconds: float = Field(
        5.0, gt=0, description="How long an idle kept-alive connection stays open between requests.")
    max_connections: int = Field(
        512, ge=1,
        description="Open connections beyond which a new request gets 503 + Retry-After (uvicorn's limit_concurrency).")

    # Async work (jobs/): files, the request queue, batches, webhooks.
    result_ttl_s: int = Field(
        86400, ge=1, description="How long a queue request's result is kept after it ends (then 404).")
    batch_discount: float = Field(
        0.5, ge=0.0, le=1.0, description="Price factor of batch lines (0.5: half price, as OpenAI's Batch API).")
    job_workers: int = Field(
        2, ge=0,
        description="Queue and batch jobs run at once per process (each at bulk priority, behind interactive "
                    "requests); 0 runs none (an API-only process).")
    job_max_attempts: int = Field(
        3, ge=1, description="Runs a job may start; one running when its process died is retried until then, "
                             "then failed with code job_interrupted.")
    job_lease_s: float = Field(
        60.0, gt=0,
        description="A running job's claim lasts this long unless its worker renews it; after that another "
                    "process sharing a PostgreSQL database takes it over.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On shutdown, how long running jobs may take to finish before they are re-queued.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="Standard Webhooks signing secret (whsec_<base64>). Default: one kept in the database, made on "
                    "first start (or imported from data_dir's webhook-secret.key).")
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts webhooks may be sent to; empty: any public host. Private, loopback and link-local "
                    "addresses are refused unless their host is listed.")
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        description="Delays between webhook delivery attempts until a 2xx (the default spans 27.6 hours).")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Time a webhook receiver has to answer one attempt.")

    @model_validator(mode="after")
    def _merge_api_keys_file(self) -> Settings:
        """Keys from `api_keys_file` join `api_keys` here, once, so everything downstream
        reads one list. An unreadable or empty file is an error, not an open server."""
        if self.api_keys_file is None:
            return self
        path = self.api_keys_file
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"cannot read the API keys file {path}: {reason}") from None
        keys = [k for k in (line.strip() for line in text.splitlines()) if k and not k.startswith("#")]
        if not keys:
            raise ValueError(f"the API keys file {path} has no keys (one a line; # starts a comment)")
        self.api_keys = list(dict.fromkeys([*self.api_keys, *keys]))
        return self

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        for name in ("key_secret", "url_signing_key"):
            value = getattr(self, name)
            if value is not None and len(value.get_secret_value()) < 32:
                raise ValueError(f"{name} must be at least 32 characters")
        return self

    @model_validator(mode="after")
    def _check_storage(self) -> Settings:
        """A storage URL that cannot work is refused here, naming the setting, not on the
        first request that stores an image."""
        url = self.storage_url
        if url is not None and not url.startswith(("file://", "s3://")):
            raise ValueError(f"IMAGEGATE_STORAGE_URL={url!r}: unknown scheme; use file:///absolute/dir or "
                             "s3://bucket/prefix")
        if url is not None and url.startswith("file://"):
            local_path(url)
        if url is not None and url.startswith("s3://") and not url[len("s3://"):].split("/", 1)[0]:
            raise ValueError(f"IMAGEGATE_STORAGE_URL={url!r} names no bucket: use s3://BUCKET or s3://BUCKET/PREFIX")
        if self.presigned_urls and not (url or "").startswith("s3://"):
            raise ValueError("IMAGEGATE_PRESIGNED_URLS=true needs an s3:// IMAGEGATE_STORAGE_URL: a file:// store "
                             "has nothing to presign (its images are served by our own signed links)")
        return self

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "images").resolve().as_uri()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'imagegate.db').resolve()}"
