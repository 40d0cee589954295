"""normalize.py and metering.py as pure functions: sizes, aspect/resolution,
quality tiers, output-token table and the input-image token rule."""

from __future__ import annotations

import math
from typing import Any

import pytest

from imagegate import metering
from imagegate.errors import InvalidRequest
from imagegate.normalize import (
    ASPECT_RATIOS,
    MAX_EDGE,
    MAX_PIXELS,
    RESOLUTION_PIXELS,
    STANDARD_SIZES,
    build_spec,
    output_tokens,
    parse_aspect_ratio,
    parse_size,
    resolve_quality,
    size_from_extensions,
)
from imagegate.registry import ModelConfig

PRESETS = {"low": (2, 5.0), "medium": (3, 6.0), "high": (4, 7.0)}


def model(**kw: Any) -> ModelConfig:
    kw.setdefault("native_size", 64)
    kw.setdefault("size_multiple", 16)
    return ModelConfig(name="m", source="unused", quality=dict(PRESETS), **kw)


def spec(**kw: Any) -> Any:
    args: dict[str, Any] = dict(task="generate", model=model(), requested_model="gpt-image-1", prompt="a cat", n=1,
                                size="256x256", quality=None, background=None, output_format=None,
                                output_compression=None, response_format=None, stream=False, partial_images=None)
    args.update(kw)
    return build_spec(**args)


# -- parse_size ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", sorted(STANDARD_SIZES))
def test_every_standard_size_is_accepted(size: str) -> None:
    w, h = size.split("x")
    assert parse_size(size) == (int(w), int(h))


def test_all_openai_standard_sizes_are_listed() -> None:
    # gpt-image-*, dall-e-2 and dall-e-3 sizes from the official spec.
    assert {"1024x1024", "1536x1024", "1024x1536", "256x256", "512x512", "1792x1024", "1024x1792"} <= STANDARD_SIZES


@pytest.mark.parametrize("size", [
    "3840x2160", "2160x3840",  # the pixel budget exactly, landscape and portrait
    "2880x2880",               # 3840x2160's worth as a square
    "3840x1280", "1280x3840",  # 3:1 and 1:3 at the longest edge
    "768x256", "256x768",      # 3:1 / 1:3 small
    "2048x2048", "1920x1088", "1008x1008", "272x272", "256x256",
])
def test_free_form_sizes_within_the_gpt_image_2_rule_are_accepted(size: str) -> None:
    w, h = (int(x) for x in size.split("x"))
    assert parse_size(size) == (w, h)


@pytest.mark.parametrize("size", [
    "1000x1000",        # not multiples of 16
    "1024x1000",        # height not a multiple of 16
    "1040x336",         # 3.1:1, beyond 3:1
    "336x1040",         # beyond 1:3
    "3856x2160",        # over 3840 on an edge (and over the budget)
    "3840x2176",        # over 3840x2160 pixels' worth
    "2896x2896",        # a square over the budget
    "4096x1376",        # edge over 3840 though under 3:1
    "0x0", "0x1024", "1024x0",
    "16x16",            # below the minimum area
    "auto", "1024", "1024x", "x1024", "1024*1024", "1024X1024", " 1024x1024", "1024x1024 ", "-16x16",
    "large", "",
])
def test_other_sizes_are_rejected_naming_size(size: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_size(size)
    assert e.value.param == "size"
    assert e.value.status == 400


def test_build_spec_rejects_a_bad_size_with_param_size() -> None:
    with pytest.raises(InvalidRequest) as e:
        spec(size="1000x1000")
    assert e.value.param == "size"


def test_spec_leaves_the_generation_size_to_the_backend() -> None:
    """The bucket is the serving backend's choice (its plan()); until then the spec
    generates at the size asked for (tests/test_diffusers_planning.py has the buckets)."""
    s = spec(size="1536x1024")
    assert (s.width, s.height) == (1536, 1024)
    assert (s.gen_width, s.gen_height) == (1536, 1024)


# -- aspect_ratio / resolution ------------------------------------------------------------
@pytest.mark.parametrize(("text", "nearest"), [
    ("16:9", "16:9"), ("16.5:9", "16:9"), ("17:9", "2:1"), ("1.9:1", "2:1"), ("3:1", "21:9"), ("1:3", "9:21"),
    ("1:1", "1:1"), ("100:99", "1:1"), ("4:3", "4:3"), ("1.5:1", "3:2"), ("9:16", "9:16"), (" 2 : 3 ", "2:3"),
])
def test_aspect_ratio_snaps_to_the_nearest_supported(text: str, nearest: str) -> None:
    a, b = nearest.split(":")
    assert parse_aspect_ratio(text) == pytest.approx(int(a) / int(b))


@pytest.mark.parametrize("text", ["", "16/9", "0:1", "1:0", "a:b", "16:9:1", "-1:2", "wide"])
def test_bad_aspect_ratio_names_aspect_ratio(text: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_aspect_ratio(text)
    assert e.value.param == "aspect_ratio"


def test_resolution_defaults_and_exact_sizes() -> None:
    m = model()
    assert size_from_extensions(None, None, m) == (1024, 1024)
    assert size_from_extensions("1:1", "1K", m) == (1024, 1024)
    assert size_from_extensions("1:1", "0.5K", m) == (512, 512)
    assert size_from_extensions("1:1", "2K", m) == (2048, 2048)
    assert size_from_extensions("16:9", "4K", m) == (3840, 2160)
    assert size_from_extensions("9:16", "4K", m) == (2160, 3840)
    assert size_from_extensions("16:9", "1K", m) == (1360, 768)


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
@pytest.mark.parametrize("resolution", list(RESOLUTION_PIXELS))
def test_extensions_always_give_a_valid_size_keeping_the_ratio(ratio: str, resolution: str) -> None:
    """Every aspect_ratio x resolution lands inside the limits (clamped, not rounded over them)
    and keeps its ratio: the result must itself be a size parse_size accepts."""
    w, h = size_from_extensions(ratio, resolution, model())
    assert parse_size(f"{w}x{h}") == (w, h)
    assert w * h <= MAX_PIXELS and max(w, h) <= MAX_EDGE
    a, b = (int(x) for x in ratio.split(":"))
    assert abs(math.log((w / h) / (a / b))) < 0.03
    if resolution != "4K":
        # under the limits: about the resolution's pixel count
        assert w * h == pytest.approx(RESOLUTION_PIXELS[resolution], rel=0.05)


def test_extensions_clamp_to_the_models_max_side_keeping_ratio() -> None:
    w, h = size_from_extensions("16:9", "2K", model(max_side=1024))
    assert max(w, h) <= 1024
    assert w / h == pytest.approx(16 / 9, rel=0.03)


def test_size_wins_over_aspect_ratio_and_resolution() -> None:
    s = spec(size="1024x1536", aspect_ratio="16:9", resolution="2K")
    assert (s.width, s.height) == (1024, 1536)
    assert any("size overrides" in n for n in s.notes)
    s = spec(size=None, aspect_ratio="16:9", resolution="1K")
    assert (s.width, s.height) == (1360, 768)
    assert s.requested.size == "auto"


def test_auto_size_is_square_and_edits_take_the_inputs_size() -> None:
    assert spec(size="auto").size == "1024x1024"
    assert spec(size=None).size == "1024x1024"
    e = spec(task="edit", size="auto", first_image_size=(640, 480))
    assert e.size == "640x480"
    big = spec(task="edit", size="auto", first_image_size=(8000, 6000))
    assert big.width * big.height <= MAX_PIXELS and max(big.width, big.height) <= MAX_EDGE
    assert big.width / big.height == pytest.approx(4 / 3, rel=0.01)


# -- quality ------------------------------------------------------------------------------
@pytest.mark.parametrize(("quality", "expected"), [(None, "medium"), ("auto", "medium"), ("low", "low"),
                                              ("medium", "medium"), ("high", "high")])
def test_gpt_image_quality_tiers(quality: str | None, expected: str) -> None:
    for name in ("gpt-image-1", "gpt-image-2", None, "tiny-sd", "dall-e-3"):
        assert resolve_quality(quality, name) == expected


def test_dalle_tiers_only_for_dalle_names() -> None:
    assert resolve_quality("standard", "dall-e-3") == "medium"
    assert resolve_quality("hd", "dall-e-3") == "high"
    assert resolve_quality("standard", "dall-e-2") == "medium"
    for q, name in [("hd", "dall-e-2"), ("standard", "gpt-image-1"), ("hd", "gpt-image-1"), ("hd", None),
                    ("standard", "tiny-sd")]:
        with pytest.raises(InvalidRequest) as e:
            resolve_quality(q, name)
        assert e.value.param == "quality"


def test_quality_picks_the_models_preset_and_extensions_override() -> None:
    s = spec(quality="low")
    assert (s.quality, s.steps, s.guidance) == ("low", 2, 5.0)
    s = spec(quality="auto")
    assert (s.quality, s.steps, s.guidance) == ("medium", 3, 6.0)
    assert s.requested.quality == "auto"  # stream events echo the request
    s = spec(quality="high", num_inference_steps=9, guidance_scale=1.5)
    assert (s.quality, s.steps, s.guidance) == ("high", 9, 1.5)


def test_other_request_rules_name_their_parameter() -> None:
    cases = [
        (dict(requested_model="dall-e-3", n=2), "n"),
        (dict(background="transparent", output_format="jpeg"), "background"),
        (dict(partial_images=2, stream=False), "partial_images"),
        (dict(prompt="   "), "prompt"),
        (dict(requested_model="dall-e-2", prompt="x" * 1001), "prompt"),
    ]
    for kw, param in cases:
        with pytest.raises(InvalidRequest) as e:
            spec(**kw)
        assert e.value.param == param, kw
    assert spec(task="variation", prompt="").prompt == ""
    assert spec(requested_model="dall-e-3").response_format == "url"
    assert spec(requested_model="gpt-image-1").response_format == "b64_json"


# -- output tokens ------------------------------------------------------------------------
@pytest.mark.parametrize(("quality", "w", "h", "tokens"), [
    ("low", 1024, 1024, 272), ("low", 1024, 1536, 408), ("low", 1536, 1024, 400),
    ("medium", 1024, 1024, 1056), ("medium", 1024, 1536, 1584), ("medium", 1536, 1024, 1568),
    ("high", 1024, 1024, 4160), ("high", 1024, 1536, 6240), ("high", 1536, 1024, 6208),
])
def test_output_tokens_table(quality: str, w: int, h: int, tokens: int) -> None:
    assert output_tokens(quality, w, h) == tokens


def test_output_tokens_scale_by_area_for_other_sizes() -> None:
    assert output_tokens("medium", 512, 512) == 264
    assert output_tokens("low", 256, 256) == 17
    assert output_tokens("high", 2048, 2048) == 4 * 4160
    assert output_tokens("high", 1792, 1024) == round(4160 * 1792 / 1024)
    assert output_tokens("low", 16, 16) == 1  # never zero


def test_usage_multiplies_by_n_and_counts_prompt_and_input_images() -> None:
    s = spec(size="1024x1024", quality="low", n=3, prompt="abcdefgh")
    u = metering.usage(s, [])
    assert u.output_tokens == 3 * 272
    assert u.input_tokens == 2 and u.input_tokens_details.text_tokens == 2
    assert u.total_tokens == u.input_tokens + u.output_tokens
    u = metering.usage(s, [(1024, 1024)], images=1)
    assert u.output_tokens == 272
    assert u.input_tokens_details.image_tokens == metering.image_tokens(1024, 1024)


# -- input image tokens -------------------------------------------------------------------
def test_text_tokens_are_four_bytes_each() -> None:
    assert metering.text_tokens("") == 0
    assert metering.text_tokens("abcd") == 1
    assert metering.text_tokens("abcde") == 2
    assert metering.text_tokens("é" * 4) == 2  # utf-8 bytes, not characters


@pytest.mark.parametrize(("w", "h", "fidelity", "tokens"), [
    (1024, 1024, "low", 65 + 129 * 1),    # → 512x512: one tile
    (1024, 1024, "high", 65 + 129 * 4),   # → 768x768: 2x2 tiles
    (2048, 4096, "high", 65 + 129 * 6),   # fit 2048 → 1024x2048, short 768 → 768x1536: 2x3
    (2048, 4096, "low", 65 + 129 * 2),    # → 512x1024: 1x2
    (256, 256, "low", 65 + 129 * 1),      # small images scale up to the short side
    (4000, 1000, "low", 65 + 129 * 4),    # → 2048x512: 4x1
])
def test_image_tokens_follow_the_vision_tiling_rule(w: int, h: int, fidelity: str, tokens: int) -> None:
    assert metering.image_tokens(w, h, fidelity) == tokens
    assert metering.image_tokens(h, w, fidelity) == tokens  # orientation does not matter


@pytest.mark.parametrize("task", ["edit", "variation"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_image_to_image_always_runs_at_least_one_denoising_step(task: str, steps: int) -> None:
    """diffusers runs int(steps * strength) steps for image-to-image: 1 step at strength
    0.6 would be zero steps (a crash inside the pipeline), so steps are raised, with a note."""
    for strength in (0.05, 0.3, 1 / 3, 0.5, 0.6, 0.75, 0.99, 1.0):
        m = model(strength={"low": strength, "high": strength}, variation_strength=strength)
        s = spec(task=task, model=m, num_inference_steps=steps, prompt="x",
                 first_image_size=(64, 64) if task == "edit" else None)
        assert s.strength == strength
        assert int(s.steps * strength) >= 1
        if int(steps * strength) >= 1:
            assert s.steps == steps and not any("raised" in n for n in s.notes)
        else:
            assert int((s.steps - 1) * strength) < 1  # the fewest steps that work
            assert any("num_inference_steps raised" in n for n in s.notes)


def test_text_to_image_steps_are_never_raised() -> None:
    s = spec(num_inference_steps=1)
    assert s.steps == 1 and s.strength is None
