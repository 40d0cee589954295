"""The typed internal request: built once from the wire models by the routes (or by the
CLI), read by the flow. Every field is what the client asked for, before any rule that
depends on the model is applied (normalize.py turns it into an ImageSpec)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..accounts import Principal, Window
    from ..protocol import (
        CreateImageEditForm,
        CreateImageEditJSONRequest,
        CreateImageRequest,
        CreateImageVariationForm,
    )

Task = Literal["generate", "edit", "variation"]


@dataclass(frozen=True)
class Upload:
    """One uploaded image, still compressed: where it came from (for messages) and its bytes."""

    param: str
    data: bytes


@dataclass(frozen=True)
class ImageRequest:
    task: Task
    prompt: str
    model: str | None = None
    n: int | None = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    response_format: str | None = None
    stream: bool = False
    partial_images: int | None = None
    moderation: str | None = None
    style: str | None = None
    user: str | None = None
    input_fidelity: str | None = None
    images: tuple[Upload, ...] = ()
    mask: Upload | None = None
    # Extensions for open models.
    negative_prompt: str | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    lora: str | None = None
    lora_scale: float | None = None
    # Parameters we do not know, kept for routed models whose upstream takes them as they
    # came (docs/gateway.md); empty for everything else (unknown parameters are a 400).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fidelity(self) -> str:
        return self.input_fidelity or "low"

    @classmethod
    def generation(cls, body: CreateImageRequest) -> ImageRequest:
        return cls(
            task="generate", prompt=body.prompt, model=body.model, n=body.n, size=body.size, quality=body.quality,
            background=body.background, output_format=body.output_format, output_compression=body.output_compression,
            response_format=body.response_format, stream=bool(body.stream), partial_images=body.partial_images,
            moderation=body.moderation, style=body.style, user=body.safety_identifier or body.user,
            negative_prompt=body.negative_prompt, seed=body.seed, num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale, aspect_ratio=body.aspect_ratio, resolution=body.resolution,
            lora=body.lora, lora_scale=body.lora_scale)

    @classmethod
    def edit(cls, body: CreateImageEditForm | CreateImageEditJSONRequest, images: list[Upload],
             mask: Upload | None) -> ImageRequest:
        return cls(
            task="edit", prompt=body.prompt, model=body.model, n=body.n, size=body.size, quality=body.quality,
            background=body.background, output_format=body.output_format, output_compression=body.output_compression,
            response_format=body.response_format, stream=bool(body.stream), partial_images=body.partial_images,
            moderation=body.moderation, user=body.safety_identifier or body.user, input_fidelity=body.input_fidelity,
            images=tuple(images), mask=mask,
            negative_prompt=body.negative_prompt, seed=body.seed, num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale, aspect_ratio=body.aspect_ratio, resolution=body.resolution,
            lora=body.lora, lora_scale=body.lora_scale)

    @classmethod
    def variation(cls, body: CreateImageVariationForm, image: Upload) -> ImageRequest:
        return cls(
            task="variation", prompt="", model=body.model, n=body.n, size=body.size,
            output_format=body.output_format, output_compression=body.output_compression,
            response_format=body.response_format, user=body.user, images=(image,),
            negative_prompt=body.negative_prompt, seed=body.seed, num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale, aspect_ratio=body.aspect_ratio, resolution=body.resolution,
            lora=body.lora, lora_scale=body.lora_scale)


@dataclass
class RequestContext:
    """Per-request facts the flow needs and fills in (timings and notes end up in headers)."""

    request_id: str
    endpoint: str
    base_url: str
    api_key: str | None = None
    priority: str = "interactive"
    started: float = field(default_factory=time.perf_counter)
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    composited: int = 0
    model: str | None = None  # the served model, once resolved
    recorded: bool = False  # the final ledger row is written
    started_row: bool = False  # a `running` row was written when the request was accepted
    batch: tuple[int, int, int] | None = None  # (batch id, requests in it, images in it)
    replica: str | None = None  # the Ray model replica that ran it (ray_serve.py)
    # Accounts: the caller (None while no key exists), its rate-limit windows (for the
    # x-ratelimit-* headers), the cost held against its budget, and the request's cost.
    principal: Principal | None = None
    rate_windows: list[Window] = field(default_factory=list)
    held_usd: float | None = None
    cost_usd: float | None = None
    price_factor: float = 1.0  # batch lines: settings.batch_discount (jobs/runner.py)
    # The gateway (core/gateway.py): who served it (a provider name, or "local"), the model
    # that served, the routes tried, a cache hit, and the client's Idempotency-Key.
    provider: str | None = None
    served_model: str | None = None
    attempts: int = 0
    cache: str | None = None
    idempotency_key: str | None = None
    # (step, total) from the model's thread while the job runs: the CLI's progress bar.
    on_step: Callable[[int, int], None] | None = None


    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's time to timings[name] (a Server-Timing entry)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def hash_key(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None
