"""Parameter normalisation for upstream routes: one request (ImageSpec + what the client
sent) → the call(s) a provider kind takes, and what the gateway must emulate around them.
docs/gateway.md has the same rules as a table; each emulation leaves a note (the
x-imagegate-notes header and the ledger). Pure functions, except finish() (CPU work, run in
a worker thread)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .. import metering, postprocess
from ..backends.upstream import Call
from ..catalogue import Route, UpstreamCaps
from ..normalize import ImageSpec
from ..pricing import Pricing
from ..protocol import ImagesUsage
from .request import ImageRequest

# Our extensions for open models: sent to upstreams that take them, under the same names.
EXTENSIONS = ("seed", "negative_prompt", "num_inference_steps", "guidance_scale", "lora", "lora_scale")
# OpenAI's own optional parameters that the OpenAI-shaped kinds take as they are.
OPENAI_PASSED = ("moderation", "user", "style", "input_fidelity")
PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "AVIF": "avif", "GIF": "gif"}


class Ineligible(Exception):
    """This route cannot serve the request at all (an edit on a generation-only upstream,
    a parameter it refuses): the next route is tried; nothing was sent."""

    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.param = reason, param


@dataclass
class Plan:
    calls: list[Call]
    size: str  # what the upstream is asked for
    stream: bool  # the upstream streams (partials relayed)
    reencode: bool  # output_format / output_compression done by us
    matte: bool  # transparent background done by us
    notes: list[str] = field(default_factory=list)


def nearest_size(width: int, height: int, sizes: tuple[str, ...]) -> str:
    """The supported size closest in aspect ratio, then in area (log scale both)."""
    def dist(s: str) -> tuple[float, float]:
        w, _, h = s.partition("x")
        sw, sh = int(w), int(h)
        return abs(math.log(width / height) - math.log(sw / sh)), abs(math.log(width * height / (sw * sh)))
    return min(sizes, key=dist)


def plan(route: Route, spec: ImageSpec, req: ImageRequest, idempotency_key: str, steer: Any) -> Plan:
    """The upstream call(s) for `spec` on `route` (an upstream one); raises Ineligible.
    `steer`: the matter's prompt steering, for an emulated transparent background."""
    assert route.provider is not None
    caps: UpstreamCaps = route.caps()
    kind, name = route.provider.kind, route.provider.name
    notes: list[str] = []
    if req.task == "variation":
        raise Ineligible(f"{name} is not asked for variations (local models only)", "model")
    if req.task == "edit":
        if not caps.edits:
            raise Ineligible(f"{name} does not edit images", "image")
        if len(req.images) > caps.max_input_images:
            raise Ineligible(f"{name} takes at most {caps.max_input_images} input image(s)", "image")
        if req.mask is not None and not caps.masks:
            raise Ineligible(f"{name} does not take a mask", "mask")
    if req.extra and not caps.passthrough:
        first = sorted(req.extra)[0]
        raise Ineligible(f"{name} ({kind}) does not take the parameter '{first}'", first)
    # size: the nearest the upstream offers; the image is resized to what was asked
    size = spec.size
    if caps.sizes is not None and size not in caps.sizes:
        size = nearest_size(spec.width, spec.height, caps.sizes)
        notes.append(f"size {spec.size} emulated: {name} made {size}, resized by the gateway")
    # output_format / output_compression / background
    fmt: str | None = spec.output_format
    compression = spec.compression
    reencode = False
    if fmt not in caps.output_formats:
        notes.append(f"output_format={fmt} emulated: {name} made png, re-encoded by the gateway")
        fmt, compression, reencode = ("png" if "png" in caps.output_formats else None), None, True
    elif compression is not None and not caps.compression:
        notes.append(f"output_compression={compression} emulated: re-encoded by the gateway")
        compression, reencode = None, True
    prompt = spec.prompt
    background: str | None = spec.requested.background if spec.requested.background != "auto" else None
    matte = False
    if background is not None and not caps.background:
        if background == "transparent":
            notes.append(f"background=transparent emulated: {name} made a plain backdrop, keyed out by the gateway")
            prompt, matte = steer(prompt), True
            if fmt not in ("png", "webp", "avif"):
                fmt, reencode = ("png" if "png" in caps.output_formats else None), True
        background = None  # opaque is every upstream's default
    # response_format: we always take the image itself and deliver it ourselves
    if spec.response_format == "url" and "url" not in caps.response_formats:
        notes.append(f"response_format=url emulated: {name} answers base64 only; stored behind our signed URL")
    # the rest: passed through where the kind takes them, else noted as not sent
    extra: dict[str, Any] = {}
    for key in EXTENSIONS:
        value = getattr(req, key)
        if value is None:
            continue
        if caps.extensions:
            extra[key] = value
        else:
            notes.append(f"{key} not sent: {name} ({kind}) does not take it")
    for key in OPENAI_PASSED:
        value = getattr(req, key)
        if value is None or (key == "moderation" and value == "auto"):
            continue
        if kind == "fal":
            notes.append(f"{key} not sent: fal has no such argument")
        else:
            extra[key] = value
    extra.update(req.extra)
    quality = req.quality if req.quality not in (None, "auto") else None
    if quality is not None and kind == "fal":
        notes.append("quality not sent: fal has no such argument")
        quality = None
    # n: above the upstream's limit, several calls in parallel
    chunks = [caps.max_n] * (spec.n // caps.max_n) + ([spec.n % caps.max_n] if spec.n % caps.max_n else [])
    if len(chunks) > 1:
        notes.append(f"n={spec.n} emulated: {len(chunks)} parallel calls (at most {caps.max_n} each)")
    stream = spec.stream and caps.streaming and len(chunks) == 1
    if spec.stream and not stream:
        notes.append(f"stream emulated: {name} does not stream here; one completed event per image")
    calls = [Call(task="edit" if req.task == "edit" else "generate", model=route.model, prompt=prompt, n=k,
                  size=size, quality=quality, output_format=fmt, compression=compression, background=background,
                  stream=stream, partial_images=spec.partial_images, idempotency_key=f"{idempotency_key}-{i}",
                  images=tuple(u.data for u in req.images), mask=req.mask.data if req.mask else None, extra=extra)
             for i, k in enumerate(chunks)]
    return Plan(calls=calls, size=size, stream=stream, reencode=reencode, matte=matte, notes=notes)


def finish(data: bytes, spec: ImageSpec, p: Plan, matter: postprocess.Matter) -> bytes:
    """An upstream's image → what the client asked for: untouched when it already is (the
    common case), else resized, keyed and re-encoded. Raises ValueError for non-images."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = PIL_FORMATS.get(im.format or "")
            if not (p.matte or p.reencode or im.size != (spec.width, spec.height) or fmt != spec.output_format):
                return data
            im.load()
            img = im.copy()
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image ({type(exc).__name__})") from None
    if p.matte:
        # Keyed at the size the upstream drew, then resized with alpha, as postprocess.finish does
        # for local models: keyed after an upscale, the edges kept a ring of the backdrop's colour.
        img = matter.matte(img)
    return postprocess.encode(postprocess.resize_to(img, spec.width, spec.height), spec.output_format,
                              spec.compression)


def usage(upstream: list[dict[str, Any] | None], spec: ImageSpec, input_sizes: list[tuple[int, int]],
          fidelity: str) -> tuple[ImagesUsage, bool]:
    """The upstream's usage (summed over emulated calls) when every call sent one, else
    ours (metering.py); the flag says which."""
    parsed: list[ImagesUsage] = []
    for u in upstream:
        try:
            parsed.append(ImagesUsage.model_validate(u))
        except ValueError:
            break
    if not upstream or len(parsed) != len(upstream):
        return metering.usage(spec, input_sizes, fidelity), False
    total = parsed[0]
    for more in parsed[1:]:
        total = ImagesUsage.model_validate({
            "total_tokens": total.total_tokens + more.total_tokens,
            "input_tokens": total.input_tokens + more.input_tokens,
            "output_tokens": total.output_tokens + more.output_tokens,
            "input_tokens_details": {
                "text_tokens": total.input_tokens_details.text_tokens + more.input_tokens_details.text_tokens,
                "image_tokens": total.input_tokens_details.image_tokens + more.input_tokens_details.image_tokens}})
    return total, True


def cost(price: Pricing, *, quality: str, size: str, images: int, usage: ImagesUsage, from_upstream: bool) -> float:
    """An upstream's images: by tokens when the upstream reported its usage and the route
    has token prices (what OpenAI bills: text in, image in, image out, each at its own rate),
    else by its per-image table at the size and quality it made."""
    if images <= 0 or price.free:
        return 0.0
    w, _, h = size.partition("x")
    q = quality if quality in ("low", "medium", "high") else "medium"
    if from_upstream and price.per_token:
        return Pricing(per_token=price.per_token).cost(quality=q, width=int(w), height=int(h), images=images,
                                                       tokens=metering.tokens(usage))
    return price.cost(quality=q, width=int(w), height=int(h), images=images, tokens=metering.tokens(usage))
