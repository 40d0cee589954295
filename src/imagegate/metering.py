"""Usage in OpenAI's terms. Output tokens come from gpt-image-1's table (scaled by area
for other sizes); input text tokens are estimated at 4 bytes of UTF-8 per token (we do
not ship OpenAI's tokenizer); input image tokens follow OpenAI's vision rule: fit within
2048x2048, shortest side to 512 (input_fidelity low) or 768 (high), then 65 tokens base
+ 129 per 512px tile (gpt-image-1's published figures)."""

from __future__ import annotations

import math

from .normalize import ImageSpec, output_tokens
from .pricing import Pricing, Tokens
from .protocol import ImagesUsage, InputTokensDetails, OutputTokensDetails


def text_tokens(prompt: str) -> int:
    return math.ceil(len(prompt.encode("utf-8")) / 4) if prompt else 0


def image_tokens(width: int, height: int, fidelity: str = "low") -> int:
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    short = 768 if fidelity == "high" else 512
    s2 = short / min(w, h)
    w, h = w * s2, h * s2
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 65 + 129 * tiles


def usage(spec: ImageSpec, input_sizes: list[tuple[int, int]], fidelity: str = "low",
          images: int | None = None) -> ImagesUsage:
    t = text_tokens(spec.prompt)
    i = sum(image_tokens(w, h, fidelity) for w, h in input_sizes)
    out = output_tokens(spec.quality, spec.width, spec.height) * (spec.n if images is None else images)
    return ImagesUsage(
        total_tokens=t + i + out,
        input_tokens=t + i,
        output_tokens=out,
        input_tokens_details=InputTokensDetails(text_tokens=t, image_tokens=i),
        output_tokens_details=OutputTokensDetails(image_tokens=out, text_tokens=0),
    )


def tokens(usage: ImagesUsage) -> Tokens:
    """The token counts a price table bills."""
    details = usage.input_tokens_details
    return Tokens(text_in=details.text_tokens, image_in=details.image_tokens, image_out=usage.output_tokens)


def estimate(price: Pricing, spec: ImageSpec, input_sizes: list[tuple[int, int]], fidelity: str, *,
             width: int | None = None, height: int | None = None, seconds_per_image: float | None = None) -> float:
    """What `spec`'s images will cost if every one is delivered (the budget hold), priced at
    `width` x `height` where the route makes another size than the spec's."""
    if price.free:
        return 0.0
    return price.estimate(quality=spec.quality, width=width or spec.width, height=height or spec.height,
                          images=spec.n, tokens=tokens(usage(spec, input_sizes, fidelity)),
                          seconds_per_image=seconds_per_image)
