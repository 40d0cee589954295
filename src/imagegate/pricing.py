"""What a request costs, from its model's price table (the models file's `pricing`).

Three ways to price a model, one per table:

    pricing = { per_image = { low = { "1024x1024" = 0.011, ... }, medium = {...}, high = {...} } }
    pricing = { per_token = { text_in = 5.0, image_in = 10.0, image_out = 40.0 } }  # USD per 1M tokens
    pricing = { gpu_hour_usd = 2.5 }                                                 # device time

`per_image` may be given with `per_token`: images are then priced by the table and the
input images of edits by `per_token.image_in` (OpenAI bills edits that way). A size missing
from a per-image table is priced by area from the table's 1024x1024 entry. Models without a
table are free, except that OpenAI's model names default to gpt-image-1's published prices
(the table below), so a gateway in front of OpenAI bills what OpenAI bills.

Failures cost nothing: callers price only delivered images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# OpenAI's published gpt-image-1 prices (USD): per image by quality and size, and per
# million tokens (text input $5, image input $10, image output $40).
GPT_IMAGE_1_PER_IMAGE: dict[str, dict[str, float]] = {
    "low": {"1024x1024": 0.011, "1024x1536": 0.016, "1536x1024": 0.016},
    "medium": {"1024x1024": 0.042, "1024x1536": 0.063, "1536x1024": 0.063},
    "high": {"1024x1024": 0.167, "1024x1536": 0.25, "1536x1024": 0.25},
}
GPT_IMAGE_1_PER_TOKEN = {"text_in": 5.0, "image_in": 10.0, "image_out": 40.0}
QUALITIES = ("low", "medium", "high")
TOKEN_KINDS = ("text_in", "image_in", "image_out")
# What a gpu-priced model is assumed to take per image before it has served one (seconds).
DEFAULT_GPU_SECONDS_PER_IMAGE = 20.0


@dataclass(frozen=True)
class Tokens:
    text_in: int = 0
    image_in: int = 0
    image_out: int = 0


@dataclass(frozen=True)
class Pricing:
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    per_token: dict[str, float] = field(default_factory=dict)  # USD per million tokens
    gpu_hour_usd: float | None = None
    gpu_seconds_per_image: float = DEFAULT_GPU_SECONDS_PER_IMAGE  # the budget estimate before any run
    source: str = "models file"  # or "default (gpt-image-1)", "free"

    @property
    def free(self) -> bool:
        return not self.per_image and not self.per_token and not self.gpu_hour_usd

    @property
    def by_device_time(self) -> bool:
        return self.gpu_hour_usd is not None

    def image_price(self, quality: str, width: int, height: int) -> float:
        table = self.per_image[quality]
        exact = table.get(f"{width}x{height}")
        if exact is not None:
            return exact
        base = table.get("1024x1024")
        if base is None:  # scale from the table's first entry
            size, base = next(iter(table.items()))
            w, h = (int(v) for v in size.split("x"))
            return base * width * height / (w * h)
        return base * width * height / (1024 * 1024)

    def cost(self, *, quality: str, width: int, height: int, images: int, tokens: Tokens,
             device_seconds: float = 0.0) -> float:
        """USD for `images` delivered images (0 for none: failures are not billed)."""
        if images <= 0:
            return 0.0
        if self.gpu_hour_usd is not None:
            return _round(device_seconds * self.gpu_hour_usd / 3600)
        total = 0.0
        rate = self.per_token
        if self.per_image:
            total = images * self.image_price(quality, width, height)
            total += tokens.image_in * rate.get("image_in", 0.0) / 1e6
        elif rate:
            total = (tokens.text_in * rate.get("text_in", 0.0) + tokens.image_in * rate.get("image_in", 0.0)
                     + tokens.image_out * rate.get("image_out", 0.0)) / 1e6
        return _round(total)

    def estimate(self, *, quality: str, width: int, height: int, images: int, tokens: Tokens,
                 seconds_per_image: float | None = None) -> float:
        """The cost held against a budget before the work runs: exact for table prices,
        from the seconds per image seen so far (or the configured guess) for device time."""
        if self.gpu_hour_usd is not None:
            per = seconds_per_image if seconds_per_image is not None else self.gpu_seconds_per_image
            return self.cost(quality=quality, width=width, height=height, images=images, tokens=tokens,
                             device_seconds=per * images)
        return self.cost(quality=quality, width=width, height=height, images=images, tokens=tokens)

    def card(self) -> dict[str, Any]:
        """As `GET /v1/models/{id}` shows it."""
        out: dict[str, Any] = {"currency": "usd", "source": self.source}
        if self.per_image:
            out["per_image"] = self.per_image
        if self.per_token:
            out["per_million_tokens"] = self.per_token
        if self.gpu_hour_usd is not None:
            out["gpu_hour_usd"] = self.gpu_hour_usd
        return out


class DeviceSpeed:
    """Device seconds per image seen so far, per model (an exponential average): the budget
    estimate of models priced by device time."""

    def __init__(self) -> None:
        self._per_image: dict[str, float] = {}

    def get(self, model: str) -> float | None:
        return self._per_image.get(model)

    def learn(self, model: str, device_s: float, images: int) -> None:
        if images <= 0:
            return
        per = device_s / images
        old = self._per_image.get(model)
        self._per_image[model] = per if old is None else 0.8 * old + 0.2 * per


FREE = Pricing(source="free")
GPT_IMAGE_1 = Pricing(per_image=GPT_IMAGE_1_PER_IMAGE, per_token=GPT_IMAGE_1_PER_TOKEN,
                      source="default (gpt-image-1's published prices)")


def _round(usd: float) -> float:
    return round(usd, 8)


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def parse(table: Any, model: str) -> Pricing:
    """A models file's `pricing` table; a clear error for anything off."""
    where = f"model {model!r}: pricing"
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - {"per_image", "per_token", "gpu_hour_usd", "gpu_seconds_per_image"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (per_image, per_token, gpu_hour_usd, gpu_seconds_per_image)")
    per_image: dict[str, dict[str, float]] = {}
    if "per_image" in table:
        raw = table["per_image"]
        if not isinstance(raw, dict) or set(raw) != set(QUALITIES):
            raise ValueError(f"{where}.per_image needs exactly low, medium and high tables of size = price")
        for quality, sizes in raw.items():
            if not isinstance(sizes, dict) or not sizes:
                raise ValueError(f"{where}.per_image.{quality} must be a table of \"WxH\" = price")
            per_image[quality] = {}
            for size, price in sizes.items():
                w, _, h = str(size).partition("x")
                if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                    raise ValueError(f"{where}.per_image.{quality}: size {size!r} is not WxH")
                per_image[quality][f"{int(w)}x{int(h)}"] = _price(price, f"{where}.per_image.{quality}.{size}")
    per_token: dict[str, float] = {}
    if "per_token" in table:
        raw = table["per_token"]
        if not isinstance(raw, dict) or not raw or set(raw) - set(TOKEN_KINDS):
            raise ValueError(f"{where}.per_token takes text_in, image_in and image_out (USD per million tokens)")
        per_token = {k: _price(v, f"{where}.per_token.{k}") for k, v in raw.items()}
    gpu = table.get("gpu_hour_usd")
    if gpu is not None:
        gpu = _price(gpu, f"{where}.gpu_hour_usd")
        if per_image or per_token:
            raise ValueError(f"{where}: gpu_hour_usd prices device time; it cannot be combined with "
                             "per_image or per_token")
    guess = _price(table.get("gpu_seconds_per_image", DEFAULT_GPU_SECONDS_PER_IMAGE), f"{where}.gpu_seconds_per_image")
    if not (per_image or per_token or gpu is not None):
        raise ValueError(f"{where} needs per_image, per_token or gpu_hour_usd")
    return Pricing(per_image=per_image, per_token=per_token, gpu_hour_usd=gpu, gpu_seconds_per_image=guess)
