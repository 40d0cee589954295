"""One typed settings object, built once and passed into create_app(settings).

Every field is documented in the README's settings table (a test keeps the two in step).
Environment variables use the prefix IMAGEGATE_ (e.g. IMAGEGATE_API_KEYS='["k1","k2"]').
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGEGATE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, description="TCP port the server listens on.")
    data_dir: Path = Field(Path("data"), description="Directory for the SQLite ledger, stored images and the URL-signing key.")
    models_file: Path | None = Field(None, description="TOML file with [[models]] tables; empty means the built-in imagegate-mini only.")
    database_url: str | None = Field(None, description="SQLAlchemy async URL of the request ledger; default sqlite+aiosqlite in data_dir.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer keys; empty means no authentication.")
    allow_anonymous: bool = Field(False, description="Allow binding a non-loopback address with no API key configured.")
    public_base_url: str | None = Field(None, description="Base URL used in `url` responses; default: the request's own base URL.")
    url_ttl_seconds: int = Field(3600, ge=1, description="Lifetime of signed image URLs (OpenAI's is 60 minutes).")
    janitor_interval_seconds: float = Field(60.0, gt=0, description="How often expired stored images are deleted.")
    max_body_bytes: int = Field(128 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it).")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="Largest single uploaded image (OpenAI's limit is 50 MB).")
    max_input_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Decompression-bomb guard: largest width*height of an input image, checked before decoding.",
    )
    max_input_images: int = Field(16, ge=1, description="Most images one edit request may carry.")
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Weights allowed in memory per device; least recently used idle models are unloaded.")
    max_inference_steps: int = Field(
        100, ge=1, le=200, description="Most denoising steps a request may ask for (num_inference_steps); bounds its cost.")
    queue_size: int = Field(32, ge=1, description="Requests that may be queued or running per model before 503 + Retry-After.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: the machine's cores.")
    encode_workers: int | None = Field(None, ge=1, description="Threads for image encoding; default: the machine's cores.")
    default_model: str | None = Field(
        None, description="Model that OpenAI names and a missing `model` resolve to; default: the first model served."
    )
    log_level: str = Field("info", description="uvicorn / imagegate log level.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'imagegate.db').resolve()}"
