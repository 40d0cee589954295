"""Request + ModelConfig → ImageSpec. Pure functions, table-driven; every rule names the
parameter it rejects."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidRequest
from .registry import ModelConfig

Task = Literal["generate", "edit", "variation"]

# Sizes OpenAI's image models accept by name (gpt-image-*, dall-e-2, dall-e-3).
STANDARD_SIZES = {
    "1024x1024", "1536x1024", "1024x1536",  # GPT image models
    "256x256", "512x512",                   # dall-e-2
    "1792x1024", "1024x1792",               # dall-e-3
}
# gpt-image-2's free-form rule: sides multiples of 16, aspect 1:3..3:1, at most
# 3840x2160 pixels' worth and 3840 per edge. The lower bound is ours (256x256's area).
FREEFORM_MULTIPLE = 16
MAX_PIXELS = 3840 * 2160
MAX_EDGE = 3840
MIN_PIXELS = 256 * 256

PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000}
DEFAULT_PROMPT_LIMIT = 32000

# `auto` and the DALL·E tiers resolve to these GPT-image tiers.
QUALITY_ALIASES = {"auto": "medium", "standard": "medium", "hd": "high"}

ASPECT_RATIOS = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "9:21", "21:9", "1:2", "2:1"]
RESOLUTION_PIXELS = {"0.5K": 512 * 512, "1K": 1024 * 1024, "2K": 2048 * 2048, "4K": MAX_PIXELS}

# gpt-image-1's output tokens per image (OpenAI pricing table); other sizes scale by area.
OUTPUT_TOKENS = {
    "low": {(1024, 1024): 272, (1024, 1536): 408, (1536, 1024): 400},
    "medium": {(1024, 1024): 1056, (1024, 1536): 1584, (1536, 1024): 1568},
    "high": {(1024, 1024): 4160, (1024, 1536): 6240, (1536, 1024): 6208},
}

# [0-9], not \d (which takes other scripts' digits), and fullmatch: `$` accepts a trailing "\n".
_SIZE_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


@dataclass(frozen=True)
class Requested:
    """The values as the client sent them; stream events echo these."""

    size: str
    quality: str
    background: str
    output_format: str


@dataclass(frozen=True)
class ImageSpec:
    task: Task
    model: str
    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    # The size the model generates at: the output size until the serving backend's plan()
    # picks its own (diffusers: the family's native bucket nearest this aspect).
    gen_width: int
    gen_height: int
    quality: Literal["low", "medium", "high"]
    steps: int
    guidance: float
    strength: float | None
    seed: int | None
    output_format: str
    compression: int | None
    background: Literal["transparent", "opaque"]
    response_format: Literal["url", "b64_json"]
    stream: bool
    partial_images: int
    requested: Requested
    user: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    lora: str | None = None
    lora_scale: float = 1.0

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(size: str) -> tuple[int, int]:
    """A WxH size string, validated against OpenAI's standard sizes and gpt-image-2's free-form rule."""
    m = _SIZE_RE.fullmatch(size)
    if not m:
        raise InvalidRequest(
            f"Invalid size '{size}'. Use 'auto', a standard size such as '1024x1024', or WIDTHxHEIGHT.", param="size",
            code="invalid_size",
        )
    w, h = int(m.group(1)), int(m.group(2))
    if size in STANDARD_SIZES:
        return w, h
    problems = []
    if w % FREEFORM_MULTIPLE or h % FREEFORM_MULTIPLE:
        problems.append(f"width and height must be multiples of {FREEFORM_MULTIPLE}")
    if w == 0 or h == 0 or not (1 / 3 <= w / h <= 3):
        problems.append("the aspect ratio must be between 1:3 and 3:1")
    if w * h > MAX_PIXELS or max(w, h) > MAX_EDGE:
        problems.append("the size must not exceed 3840x2160 pixels' worth or 3840 per edge")
    if w * h < MIN_PIXELS:
        problems.append("the size must be at least 256x256 pixels' worth")
    if problems:
        raise InvalidRequest(f"Invalid size '{size}': " + "; ".join(problems) + ".", param="size", code="invalid_size")
    return w, h


def _round_to(x: float, m: int) -> int:
    return max(m, round(x / m) * m)


def parse_aspect_ratio(text: str) -> float:
    m = re.fullmatch(r" *([0-9]{1,5}(?:\.[0-9]{1,5})?) *: *([0-9]{1,5}(?:\.[0-9]{1,5})?) *", text)
    if not m or float(m.group(1)) <= 0 or float(m.group(2)) <= 0:
        raise InvalidRequest(f"Invalid aspect_ratio '{text}'; expected 'W:H' such as '16:9'.", param="aspect_ratio")
    wanted = float(m.group(1)) / float(m.group(2))
    # The nearest supported ratio, compared in log space so 1:2 and 2:1 are equally far from 1:1.
    best = min(ASPECT_RATIOS, key=lambda r: abs(math.log(wanted) - math.log(_ratio(r))))
    return _ratio(best)


def _ratio(r: str) -> float:
    a, b = r.split(":")
    return int(a) / int(b)


def size_from_extensions(aspect_ratio: str | None, resolution: str | None, model: ModelConfig) -> tuple[int, int]:
    """Lumenfall-style aspect_ratio + resolution → WxH, clamped to the model's limits keeping the ratio."""
    ar = parse_aspect_ratio(aspect_ratio) if aspect_ratio else 1.0
    pixels = RESOLUTION_PIXELS[resolution] if resolution else 1024 * 1024
    w = math.sqrt(pixels * ar)
    h = math.sqrt(pixels / ar)
    scale = min(1.0, model.max_side / max(w, h), MAX_EDGE / max(w, h), math.sqrt(MAX_PIXELS / (w * h)))
    w, h = w * scale, h * scale
    rw, rh = _round_to(w, FREEFORM_MULTIPLE), _round_to(h, FREEFORM_MULTIPLE)
    if rw * rh > MAX_PIXELS or max(rw, rh) > min(MAX_EDGE, model.max_side):
        # Rounding to the nearest multiple can step over a limit the scale just met (4K at 4:3
        # gave 3328x2496); round down instead.
        m = FREEFORM_MULTIPLE
        rw, rh = max(m, int(w // m) * m), max(m, int(h // m) * m)
    return rw, rh


def size_for_input(width: int, height: int) -> tuple[int, int]:
    """`size=auto` on an edit: the first input image's own size, shrunk (keeping its aspect)
    only where it exceeds the output limits, so unmasked pixels can come back unchanged."""
    scale = min(1.0, math.sqrt(MAX_PIXELS / (width * height)), MAX_EDGE / max(width, height))
    # Round down: rounding to nearest can land a few pixels over the budget (8000x6000 gave 3326x2494).
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def resolve_quality(quality: str | None, requested_model: str | None) -> Literal["low", "medium", "high"]:
    q = quality or "auto"
    if q in ("standard", "hd"):
        name = requested_model or ""
        allowed = {"dall-e-3": ("standard", "hd"), "dall-e-2": ("standard",)}.get(name, ())
        if q not in allowed:
            raise InvalidRequest(
                f"quality '{q}' is only supported for DALL·E model names; use low, medium, high or auto.",
                param="quality",
            )
    return QUALITY_ALIASES.get(q, q)  # type: ignore[return-value]


def check_prompt(prompt: str, requested_model: str | None, *, allow_empty: bool = False) -> str:
    limit = PROMPT_LIMITS.get(requested_model or "", DEFAULT_PROMPT_LIMIT)
    if not allow_empty and not prompt.strip():
        raise InvalidRequest("prompt must not be empty.", param="prompt", code="empty_prompt")
    if len(prompt) > limit:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters long; the limit is {limit}.", param="prompt",
            code="string_above_max_length",
        )
    return prompt


def check_output(output_format: str, background: str, compression: int | None) -> None:
    if background == "transparent" and output_format not in ("png", "webp", "avif"):
        raise InvalidRequest(
            f"background 'transparent' needs output_format png, webp or avif, not {output_format}.", param="background"
        )


def output_tokens(quality: str, width: int, height: int) -> int:
    table = OUTPUT_TOKENS[quality]
    if (width, height) in table:
        return table[(width, height)]
    return max(1, round(table[(1024, 1024)] * width * height / (1024 * 1024)))


def build_spec(
    *,
    task: Task,
    model: ModelConfig,
    requested_model: str | None,
    prompt: str,
    n: int | None,
    size: str | None,
    quality: str | None,
    background: str | None,
    output_format: str | None,
    output_compression: int | None,
    response_format: str | None,
    stream: bool | None,
    partial_images: int | None,
    style: str | None = None,
    user: str | None = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    aspect_ratio: str | None = None,
    resolution: str | None = None,
    input_fidelity: str | None = None,
    first_image_size: tuple[int, int] | None = None,
    lora: str | None = None,
    lora_scale: float | None = None,
) -> ImageSpec:
    notes: list[str] = []
    name = requested_model or ""
    # 1. prompt and n
    prompt = check_prompt(prompt, requested_model, allow_empty=(task == "variation"))
    n = 1 if n is None else n
    if name == "dall-e-3" and n != 1:
        raise InvalidRequest("dall-e-3 only supports n=1.", param="n")
    # 2. size: `size` wins over aspect_ratio/resolution; `auto` = native square, or the input's size for edits
    size_req = "auto" if size is None else size
    if aspect_ratio is not None:
        parse_aspect_ratio(aspect_ratio)  # a bad value is a 400 even when `size` wins over it
    if size_req != "auto":
        width, height = parse_size(size_req)
        if aspect_ratio or resolution:
            notes.append("size overrides aspect_ratio/resolution")
    elif aspect_ratio or resolution:
        width, height = size_from_extensions(aspect_ratio, resolution, model)
    elif first_image_size is not None:
        width, height = size_for_input(*first_image_size)
    elif task == "variation":
        width, height = 1024, 1024
    else:
        width, height = 1024, 1024
    # 3. quality → steps and guidance (extensions override the preset)
    tier = resolve_quality(quality, requested_model)
    steps, guidance = model.preset(tier)
    if num_inference_steps is not None:
        steps = num_inference_steps
    if guidance_scale is not None:
        guidance = guidance_scale
    if style == "vivid":
        # DALL·E 3's "vivid" has no diffusion counterpart; emulated as stronger guidance.
        guidance += 1.5
        notes.append("style=vivid emulated as guidance_scale+1.5")
    # 4. output
    fmt = output_format or "png"
    bg_req = background or "auto"
    check_output(fmt, bg_req, output_compression)
    bg: Literal["transparent", "opaque"] = "transparent" if bg_req == "transparent" else "opaque"
    rf = response_format or ("url" if name.startswith("dall-e") else "b64_json")
    # 5. edits: how far from the input the model may go
    strength: float | None = None
    if task == "edit":
        strength = model.strength[input_fidelity or "low"]
    elif task == "variation":
        strength = model.variation_strength
    if strength is not None and strength > 0 and int(steps * strength) < 1:
        # Image-to-image runs int(steps * strength) denoising steps (diffusers' rule); zero
        # fails inside the pipeline, so run the fewest steps that give one.
        wanted = steps
        while int(steps * strength) < 1:
            steps += 1
        notes.append(f"num_inference_steps raised from {wanted} to {steps}: "
                     f"at strength {strength} fewer steps denoise nothing")
    if lora is not None and lora not in model.loras:
        known = ", ".join(sorted(model.loras)) or "none"
        raise InvalidRequest(f"Unknown lora '{lora}' for model '{model.name}' (declared: {known}).", param="lora")
    if lora_scale is not None and lora is None:
        raise InvalidRequest("lora_scale needs lora.", param="lora_scale")
    partial = partial_images or 0
    if partial and not stream:
        raise InvalidRequest("partial_images needs stream=true.", param="partial_images")
    return ImageSpec(
        task=task,
        model=model.name,
        prompt=prompt,
        negative_prompt=negative_prompt,
        n=n,
        width=width,
        height=height,
        gen_width=width,
        gen_height=height,
        quality=tier,
        steps=steps,
        guidance=guidance,
        strength=strength,
        seed=seed,
        output_format=fmt,
        compression=output_compression,
        background=bg,
        response_format=rf,  # type: ignore[arg-type]
        stream=bool(stream),
        partial_images=partial,
        requested=Requested(size=size_req, quality=quality or "auto", background=bg_req, output_format=fmt),
        user=user,
        notes=tuple(notes),
        lora=lora,
        lora_scale=1.0 if lora_scale is None else lora_scale,
    )


def check_limits(*, model: ModelConfig, images: list[str], negative_prompt: str | None, steps: int | None,
                 negative_prompt_ok: bool, max_inference_steps: int, max_input_images: int) -> None:
    """The request's rules that depend on this server's limits and what the model takes,
    checked before any input is decoded (`images`: the params the uploads came as)."""
    if steps is not None and steps > max_inference_steps:
        raise InvalidRequest(f"num_inference_steps is {steps}; this server allows at most {max_inference_steps}.",
                             param="num_inference_steps")
    if negative_prompt and not negative_prompt_ok:
        raise InvalidRequest(f"Model '{model.name}' does not take a negative_prompt.", param="negative_prompt")
    limit = min(max_input_images, model.max_input_images)
    if len(images) > limit:
        # Name the field the client sent: `images` in JSON bodies, `image` in multipart forms.
        param = "images" if images[0].startswith("images") else "image"
        raise InvalidRequest(f"{len(images)} images were sent; at most {limit} are accepted.", param=param,
                             code="too_many_images")


def check_request_pixels(total: int, limit: int, images: list[str]) -> None:
    """All of a request's inputs together, from their headers (before decoding)."""
    if total > limit:
        param = images[0].split("[")[0] if images else "image"
        raise InvalidRequest(f"The input images of this request have {total} pixels in all; the limit is {limit}. "
                             "Send fewer or smaller images.", param=param, code="image_too_large")
