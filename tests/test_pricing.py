"""Price tables (pricing.py) and the models file's `pricing`, and the rate limiter on a
storage other than the database (limits' in-memory storage stands in for Redis: the same
interface)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from limits.storage import storage_from_string

from imagegate.accounts import Principal
from imagegate.accounts.ratelimit import RateLimits
from imagegate.errors import RateLimited
from imagegate.pricing import GPT_IMAGE_1, Pricing, Tokens, parse
from imagegate.registry import ModelConfig, Registry, load_models_file

NONE = Tokens()


def test_openai_table_by_quality_and_size() -> None:
    p = GPT_IMAGE_1
    for quality, square, wide in (("low", 0.011, 0.016), ("medium", 0.042, 0.063), ("high", 0.167, 0.25)):
        assert p.cost(quality=quality, width=1024, height=1024, images=1, tokens=NONE) == square
        assert p.cost(quality=quality, width=1536, height=1024, images=3, tokens=NONE) == pytest.approx(3 * wide)
        assert p.cost(quality=quality, width=1024, height=1536, images=1, tokens=NONE) == wide


def test_edits_add_input_image_tokens_and_failures_are_free() -> None:
    p = GPT_IMAGE_1
    edit = p.cost(quality="low", width=1024, height=1024, images=1, tokens=Tokens(text_in=100, image_in=323))
    assert edit == pytest.approx(0.011 + 323 * 10 / 1e6)  # text tokens are in the per-image price
    assert p.cost(quality="high", width=1024, height=1024, images=0, tokens=Tokens(image_in=999)) == 0


def test_other_sizes_by_area_and_per_token_and_device_time() -> None:
    p = GPT_IMAGE_1
    assert p.cost(quality="low", width=512, height=512, images=1, tokens=NONE) == pytest.approx(0.011 / 4)
    tok = Pricing(per_token={"text_in": 5, "image_in": 10, "image_out": 40})
    assert tok.cost(quality="low", width=1, height=1, images=1, tokens=Tokens(1000, 2000, 3000)) == pytest.approx(
        (5000 + 20000 + 120000) / 1e6)
    gpu = Pricing(gpu_hour_usd=3.6)
    assert gpu.cost(quality="low", width=1, height=1, images=2, tokens=NONE, device_seconds=10) == pytest.approx(0.01)
    assert gpu.estimate(quality="low", width=1, height=1, images=2, tokens=NONE) == pytest.approx(
        2 * 20 * 3.6 / 3600)  # the configured guess before any run
    assert gpu.estimate(quality="low", width=1, height=1, images=2, tokens=NONE, seconds_per_image=1) == (
        pytest.approx(0.002))


@pytest.mark.parametrize(("table", "message"), [
    ({"per_image": {"low": {"1024x1024": 1}}}, "exactly low, medium and high"),
    ({"per_image": {q: {"big": 1} for q in ("low", "medium", "high")}}, "is not WxH"),
    ({"per_image": {q: {"1x1": -1} for q in ("low", "medium", "high")}}, "non-negative"),
    ({"per_token": {"text_out": 1}}, "text_in, image_in and image_out"),
    ({"gpu_hour_usd": 2, "per_token": {"text_in": 1}}, "cannot be combined"),
    ({"per_image": {q: {"1x1": True} for q in ("low", "medium", "high")}}, "non-negative"),
    ({}, "needs per_image"),
    ({"flat": 1}, "unknown keys"),
])
def test_bad_tables_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(table, "m")


def test_models_file_pricing_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "models.toml"
    f.write_text('''
[[models]]
name = "local"
source = "x"
pricing = { gpu_hour_usd = 2.5 }

[[models]]
name = "flat"
source = "y"
aliases = ["dall-e-3"]
[models.pricing.per_image]
low = { "1024x1024" = 0.01 }
medium = { "1024x1024" = 0.02 }
high = { "1024x1024" = 0.04 }
''')
    configs = load_models_file(f)
    reg = Registry([*configs, ModelConfig(name="free", source="z")], default="free")
    assert reg.pricing(reg.resolve("local")).gpu_hour_usd == 2.5
    assert reg.pricing(reg.resolve("dall-e-3"), "dall-e-3").per_image["high"]["1024x1024"] == 0.04  # its own wins
    assert reg.pricing(reg.resolve("free")).free
    assert reg.pricing(reg.resolve("gpt-image-1"), "gpt-image-1") is GPT_IMAGE_1  # OpenAI's name: OpenAI's prices
    assert Registry(configs).pricing(reg.resolve("local"), "gpt-image-1").gpu_hour_usd == 2.5  # a table wins


async def test_rate_limits_on_another_storage_are_exact() -> None:
    limits = RateLimits(storage_from_string("async+memory://"))  # type: ignore[arg-type]
    who = Principal(key_id="k", name="k", project="p", rpm=5, ipm=12)

    async def one() -> bool:
        try:
            await limits.take(who, 2)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(results) == 5  # 5 requests (10 images of 12)
    with pytest.raises(RateLimited) as e:
        await limits.take(Principal(key_id="j", name="j", project="p", ipm=12), 2 * 6 + 1)
    assert e.value.headers["x-ratelimit-limit-images"] == "12"
