"""The Images API through the official openai SDK: generations, edits, variations, signed
URLs, resolved fields, usage, headers, model aliases and the request ledger.

Outputs are small (256x256 or so) wherever the size is not the point: the tiny model
runs at 64px and the cost is in resizing and encoding."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import numpy as np
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from PIL import Image

from conftest import make_settings, running, tiny_config
from imagegate.app import create_app

OPENAI_MODEL_NAMES = ["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "chatgpt-image-latest",
                      "dall-e-2", "dall-e-3"]
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF"}


# -- helpers ---------------------------------------------------------------------------
def decode(b64: str | None) -> Image.Image:
    assert b64, "expected b64_json in the response"
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8), mode)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_file(img: Image.Image, name: str = "image.png") -> tuple[str, bytes, str]:
    return (name, png_bytes(img), "image/png")


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def rect_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """RGBA mask: opaque everywhere (keep), alpha 0 inside `box` (edit)."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def outside(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    keep = np.ones(arr.shape[:2], dtype=bool)
    left, top, right, bottom = box
    keep[top:bottom, left:right] = False
    return arr[keep]


# -- fixtures: one app per module (starting one per test costs more than the tests), the
# SDK and a plain httpx2 client over one in-process transport; tests that need other
# settings build their own app.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> AsyncIterator[Any]:
    application = create_app(make_settings(tmp_path_factory.mktemp("app")), [tiny_config(tiny_sd_path)])
    async with running(application):
        yield application


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(app: Any) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sdk(http: httpx2.AsyncClient) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="test-key", base_url="http://testserver/v1", http_client=http, max_retries=0)


async def ledger_row(app: Any, raw: Any) -> Any:
    rid = raw.headers["x-request-id"]
    row = await app.state.ledger.get(rid)
    assert row is not None, f"no ledger row for {rid}"
    return row


# -- generations -----------------------------------------------------------------------
async def test_generate_n2_b64_resolved_fields_and_usage(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(model="gpt-image-1", prompt="a red circle", n=2, size="1024x1024", quality="low")
    assert len(r.data) == 2
    for d in r.data:
        img = decode(d.b64_json)
        assert img.format == "PNG" and img.size == (1024, 1024)
        assert d.url is None
    assert (r.size, r.quality, r.background, r.output_format) == ("1024x1024", "low", "opaque", "png")
    assert r.usage is not None
    # gpt-image-1's table: low 1024x1024 = 272 output tokens per image.
    assert r.usage.output_tokens == 2 * 272
    # Input text tokens are estimated at 4 UTF-8 bytes per token: ceil(12 / 4) = 3.
    assert r.usage.input_tokens == 3
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.image_tokens == 0


@pytest.mark.parametrize(("quality", "size", "tokens"), [
    ("low", "1024x1536", 408), ("medium", "1536x1024", 1568), ("high", "1024x1024", 4160),
    # Other sizes scale by area: 272 * (512*512)/(1024*1024) = 68; 4160 / 16 = 260.
    ("low", "512x512", 68), ("high", "256x256", 260),
])
async def test_usage_output_tokens_follow_the_gpt_image_1_table(sdk: AsyncOpenAI, quality: str, size: str,
                                                                tokens: int) -> None:
    r = await sdk.images.generate(prompt="tokens", size=size, quality=quality)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.output_tokens == tokens
    assert r.size == size and r.quality == quality
    assert decode(r.data[0].b64_json).size == tuple(int(x) for x in size.split("x"))


async def test_dall_e_3_quality_names(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(model="dall-e-3", prompt="x", size="256x256", quality="hd",
                                  response_format="b64_json")
    assert r.quality == "high" and r.usage is not None and r.usage.output_tokens == 4160 // 16
    r = await sdk.images.generate(model="dall-e-3", prompt="x", size="256x256", quality="standard",
                                  response_format="b64_json")
    assert r.quality == "medium" and r.usage is not None and r.usage.output_tokens == 1056 // 16


async def test_quality_auto_resolves_to_a_tier(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(prompt="auto quality", size="256x256", quality="auto", background="auto")
    assert r.quality in ("low", "medium", "high")
    assert r.background == "opaque"
    r2 = await sdk.images.generate(prompt="default quality", size="256x256")
    assert r2.quality in ("low", "medium", "high")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "avif", "gif"])
async def test_every_output_format_decodes_at_the_exact_size(sdk: AsyncOpenAI, fmt: str) -> None:
    # 384x224 is a free-form size (multiples of 16), not a bucket the model renders natively.
    r = await sdk.images.generate(prompt="a lighthouse", size="384x224", quality="low", n=2,
                                  output_format=fmt)  # type: ignore[arg-type]
    assert r.output_format == fmt
    assert len(r.data) == 2
    for d in r.data:
        img = decode(d.b64_json)
        assert img.format == PIL_FORMAT[fmt]
        assert img.size == (384, 224)


async def test_response_format_url_is_signed_and_served(sdk: AsyncOpenAI, http: httpx2.AsyncClient) -> None:
    r = await sdk.images.generate(prompt="a blue square", size="256x256", quality="low", n=2,
                                  response_format="url", output_format="webp")
    assert len(r.data) == 2
    for d in r.data:
        assert d.url and d.b64_json is None
        got = await http.get(d.url)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/webp"
        img = Image.open(io.BytesIO(got.content))
        assert img.format == "WEBP" and img.size == (256, 256)
    # A tampered signature is refused.
    parts = urlsplit(r.data[0].url or "")
    sig = parse_qs(parts.query)["sig"][0]
    bad_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    tampered = urlunsplit(parts._replace(query=urlencode({"sig": bad_sig})))
    got = await http.get(tampered)
    assert got.status_code == 403
    assert got.json()["error"]["type"] == "invalid_request_error"
    # ...and so is a missing one, or a signature moved to another file.
    assert (await http.get(urlunsplit(parts._replace(query="")))).status_code == 403
    other = urlsplit(r.data[1].url or "")
    swapped = urlunsplit(other._replace(query=parts.query))
    assert (await http.get(swapped)).status_code == 403


async def test_response_format_b64_json_is_explicit(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(model="dall-e-2", prompt="x", size="256x256", response_format="b64_json")
    assert r.data[0].b64_json and r.data[0].url is None
    assert decode(r.data[0].b64_json).size == (256, 256)


async def test_transparent_background_png_has_alpha(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(prompt="a cat sticker", size="256x256", quality="low", background="transparent",
                                  output_format="png", extra_body={"seed": 3})
    assert r.background == "transparent" and r.output_format == "png"
    img = decode(r.data[0].b64_json)
    assert img.mode == "RGBA"
    alpha = np.asarray(img.getchannel("A"))
    assert alpha.min() < 255


async def test_transparent_background_webp_has_alpha(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(prompt="a cat sticker", size="256x256", quality="low", background="transparent",
                                  output_format="webp")
    img = decode(r.data[0].b64_json)
    assert img.mode == "RGBA"
    assert np.asarray(img.getchannel("A")).min() < 255


async def test_seed_reproduces_bytes(sdk: AsyncOpenAI) -> None:
    # The pixels' bytes: each file's C2PA manifest is unique (its id and signing time).
    async def gen(seed: int) -> list[bytes]:
        r = await sdk.images.generate(prompt="a tree", size="256x256", quality="low", n=2,
                                      extra_body={"seed": seed})
        return [decode(d.b64_json).tobytes() for d in r.data]

    a, b, c = await gen(1234), await gen(1234), await gen(4321)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]
    assert a[0] != a[1]  # the n images of one request differ from each other


async def test_extensions_reach_the_model(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(
        prompt="a castle", size="256x256", quality="low",
        extra_body={"seed": 7, "negative_prompt": "blurry", "num_inference_steps": 3, "guidance_scale": 2.5})
    r = raw.parse()
    assert decode(r.data[0].b64_json).size == (256, 256)
    row = await ledger_row(app, raw)
    assert row.seed == 7
    assert row.params["steps"] == 3
    assert row.params["guidance"] == 2.5
    assert row.params["negative_prompt"] == "blurry"
    # Without the extensions the quality preset decides (the tiny model's low = 2 steps, 5.0).
    raw2 = await sdk.images.with_raw_response.generate(prompt="a castle", size="256x256", quality="low")
    row2 = await ledger_row(app, raw2)
    assert (row2.params["steps"], row2.params["guidance"]) == (2, 5.0)


async def test_seed_and_steps_change_the_pixels(sdk: AsyncOpenAI) -> None:
    base = {"seed": 11, "num_inference_steps": 2, "guidance_scale": 5.0}

    async def gen(**extra: Any) -> bytes:
        r = await sdk.images.generate(prompt="a boat", size="256x256", output_format="png",
                                      extra_body={**base, **extra})
        return decode(r.data[0].b64_json).tobytes()  # pixels: each file's C2PA manifest is unique

    ref = await gen()
    assert await gen() == ref
    assert await gen(num_inference_steps=3) != ref
    assert await gen(guidance_scale=1.0) != ref
    assert await gen(negative_prompt="fog") != ref


async def test_aspect_ratio_and_resolution(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.generate(prompt="a beach", quality="low",
                                  extra_body={"aspect_ratio": "16:9", "resolution": "0.5K"})
    w, h = decode(r.data[0].b64_json).size
    assert r.size == f"{w}x{h}"
    assert w % 16 == 0 and h % 16 == 0
    assert abs(w / h - 16 / 9) < 0.05
    assert abs(w * h - 512 * 512) / (512 * 512) < 0.1
    # Portrait ratio alone: about 1K pixels.
    r = await sdk.images.generate(prompt="a tower", quality="low", extra_body={"aspect_ratio": "9:16"})
    w, h = decode(r.data[0].b64_json).size
    assert h > w and abs(h / w - 16 / 9) < 0.05


async def test_size_wins_over_aspect_ratio_and_resolution(sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(
        prompt="a beach", size="256x256", quality="low", extra_body={"aspect_ratio": "16:9", "resolution": "2K"})
    r = raw.parse()
    assert r.size == "256x256"
    assert decode(r.data[0].b64_json).size == (256, 256)
    assert "size overrides" in raw.headers.get("x-imagegate-notes", "")


async def test_request_id_and_server_timing_headers(sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(prompt="headers", size="256x256", quality="low")
    assert raw.status_code == 200
    rid = raw.headers["x-request-id"]
    assert rid.startswith("req_") and len(rid) > 8
    timing = raw.headers["server-timing"]
    metrics = {part.split(";")[0].strip() for part in timing.split(",")}
    assert {"queue", "inference", "encode", "total"} <= metrics
    assert raw.parse().data[0].b64_json
    # Every request gets its own id.
    raw2 = await sdk.images.with_raw_response.generate(prompt="headers", size="256x256", quality="low")
    assert raw2.headers["x-request-id"] != rid


@pytest.mark.parametrize("name", [*OPENAI_MODEL_NAMES, None])
async def test_openai_model_names_resolve_to_the_configured_model(app: Any, sdk: AsyncOpenAI,
                                                                  name: str | None) -> None:
    kw: dict[str, Any] = {} if name is None else {"model": name}
    raw = await sdk.images.with_raw_response.generate(prompt="alias", size="256x256", **kw)
    r = raw.parse()
    if name is not None and name.startswith("dall-e"):
        assert r.data[0].url  # DALL·E names default to URLs, as OpenAI's did
    else:
        assert decode(r.data[0].b64_json).size == (256, 256)
    row = await ledger_row(app, raw)
    assert row.status == "ok"
    assert row.model == "tiny-sd"
    assert row.model_requested == name


async def test_models_list_has_the_model_and_aliases(sdk: AsyncOpenAI) -> None:
    page = await sdk.models.list()
    ids = {m.id for m in page.data}
    assert "tiny-sd" in ids
    assert set(OPENAI_MODEL_NAMES) <= ids
    aliases = {m.id: getattr(m, "alias_of", None) for m in page.data}
    assert all(aliases[n] == "tiny-sd" for n in OPENAI_MODEL_NAMES)
    assert aliases["tiny-sd"] is None
    one = await sdk.models.retrieve("gpt-image-1")
    assert one.id == "gpt-image-1"


# -- edits -----------------------------------------------------------------------------
async def test_edit_one_image_auto_size_is_the_input_size(sdk: AsyncOpenAI) -> None:
    src = noise_image(200, 120, seed=1)
    r = await sdk.images.edit(image=png_file(src), prompt="make it blue", size="auto", quality="low")
    img = decode(r.data[0].b64_json)
    assert img.size == (200, 120)
    assert r.size == "200x120"
    assert r.usage is not None and r.usage.input_tokens_details.image_tokens > 0


async def test_edit_auto_size_follows_exif_orientation(sdk: AsyncOpenAI) -> None:
    """A camera JPEG stored 200x120 with 'rotate 90' in its EXIF is a 120x200 picture."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    buf = io.BytesIO()
    noise_image(200, 120).save(buf, "JPEG", exif=exif.tobytes())
    r = await sdk.images.edit(image=("photo.jpg", buf.getvalue(), "image/jpeg"), prompt="x", size="auto",
                              quality="low")
    assert decode(r.data[0].b64_json).size == (120, 200)
    assert r.size == "120x200"


async def test_edit_explicit_size(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.edit(image=png_file(noise_image(200, 120)), prompt="x", size="256x256", n=2, quality="low")
    assert len(r.data) == 2
    assert all(decode(d.b64_json).size == (256, 256) for d in r.data)


async def test_edit_several_images_are_composited(sdk: AsyncOpenAI) -> None:
    files = [png_file(noise_image(96, 64, seed=i), f"ref{i}.png") for i in range(3)]
    raw = await sdk.images.with_raw_response.edit(image=files, prompt="combine them", size="256x256", quality="low")
    assert raw.headers["x-imagegate-composited"] == "3"
    r = raw.parse()
    assert decode(r.data[0].b64_json).size == (256, 256)
    # Input image tokens are counted for each of the three images.
    single = await sdk.images.edit(image=files[0], prompt="combine them", size="256x256", quality="low")
    assert r.usage is not None and single.usage is not None
    assert r.usage.input_tokens_details.image_tokens == 3 * single.usage.input_tokens_details.image_tokens


async def test_edit_one_image_is_not_composited(sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.edit(image=png_file(noise_image(64, 64)), prompt="x", size="256x256")
    assert "x-imagegate-composited" not in raw.headers


async def test_edit_with_mask_keeps_pixels_outside_the_region(sdk: AsyncOpenAI) -> None:
    src = noise_image(160, 112, seed=5)
    box = (40, 30, 110, 80)
    r = await sdk.images.edit(image=png_file(src), mask=png_file(rect_mask(160, 112, box), "mask.png"),
                              prompt="a red ball", size="auto", quality="low", output_format="png")
    out = decode(r.data[0].b64_json)
    assert out.size == (160, 112)
    a, b = np.asarray(src.convert("RGB")), np.asarray(out.convert("RGB"))
    assert np.array_equal(outside(a, box), outside(b, box))
    # ...and the region itself was repainted.
    left, top, right, bottom = box
    assert not np.array_equal(a[top:bottom, left:right], b[top:bottom, left:right])


async def test_edit_with_mask_on_an_rgba_input(sdk: AsyncOpenAI) -> None:
    src = noise_image(128, 96, seed=6, mode="RGBA")
    box = (0, 0, 64, 48)
    r = await sdk.images.edit(image=png_file(src), mask=png_file(rect_mask(128, 96, box), "mask.png"),
                              prompt="paint", size="auto", quality="low")
    out = decode(r.data[0].b64_json)
    assert out.size == (128, 96)
    a, b = np.asarray(src), np.asarray(out.convert("RGBA"))
    assert np.array_equal(outside(a, box), outside(b, box))


async def test_edit_json_body_with_data_urls_and_mask(sdk: AsyncOpenAI) -> None:
    src = noise_image(144, 96, seed=8)
    box = (16, 16, 80, 64)
    body = {"images": [{"image_url": data_url(src)}], "mask": {"image_url": data_url(rect_mask(144, 96, box))},
            "prompt": "a window", "size": "auto", "quality": "low", "n": 2}
    r = await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    assert len(r.data) == 2
    for d in r.data:
        out = decode(d.b64_json)
        assert out.size == (144, 96)
        assert np.array_equal(outside(np.asarray(src), box), outside(np.asarray(out.convert("RGB")), box))


async def test_edit_json_body_several_images(sdk: AsyncOpenAI, http: httpx2.AsyncClient) -> None:
    body = {"model": "gpt-image-1", "images": [{"image_url": data_url(noise_image(64, 64, seed=i))} for i in range(2)],
            "prompt": "merge", "size": "256x256", "quality": "low", "response_format": "url"}
    got = await http.post("/v1/images/edits", json=body, headers={"authorization": "Bearer test-key"})
    assert got.status_code == 200, got.text
    assert got.headers["x-imagegate-composited"] == "2"
    url = got.json()["data"][0]["url"]
    img = await http.get(url)
    assert Image.open(io.BytesIO(img.content)).size == (256, 256)


@pytest.mark.parametrize("fidelity", ["high", "low"])
async def test_edit_input_fidelity(sdk: AsyncOpenAI, fidelity: str) -> None:
    r = await sdk.images.edit(image=png_file(noise_image(256, 256)), prompt="sharpen", size="256x256",
                              quality="low", input_fidelity=fidelity)  # type: ignore[arg-type]
    assert decode(r.data[0].b64_json).size == (256, 256)
    # OpenAI's vision rule: shortest side to 512 (low: 1 tile) or 768 (high: 4 tiles); 65 + 129 per tile.
    assert r.usage is not None
    assert r.usage.input_tokens_details.image_tokens == {"low": 65 + 129, "high": 65 + 4 * 129}[fidelity]


async def test_edit_accepts_images_field_name(http: httpx2.AsyncClient) -> None:
    """Clients other than the Python SDK send `images`; one image is `image`."""
    files = [("images", ("a.png", png_bytes(noise_image(64, 64, 1)), "image/png")),
             ("images", ("b.png", png_bytes(noise_image(64, 64, 2)), "image/png"))]
    got = await http.post("/v1/images/edits", files=files, data={"prompt": "x", "size": "256x256"})
    assert got.status_code == 200, got.text
    assert got.headers["x-imagegate-composited"] == "2"


# -- variations ------------------------------------------------------------------------
async def test_variation_b64(sdk: AsyncOpenAI) -> None:
    r = await sdk.images.create_variation(image=png_file(noise_image(128, 128)), n=2, size="256x256",
                                          response_format="b64_json")
    assert len(r.data) == 2
    for d in r.data:
        img = decode(d.b64_json)
        assert img.format == "PNG" and img.size == (256, 256)


async def test_variation_url(sdk: AsyncOpenAI, http: httpx2.AsyncClient) -> None:
    r = await sdk.images.create_variation(image=png_file(noise_image(128, 128)), n=2, size="256x256",
                                          response_format="url", model="dall-e-2")
    assert len(r.data) == 2
    for d in r.data:
        assert d.url
        got = await http.get(d.url)
        assert got.status_code == 200
        assert Image.open(io.BytesIO(got.content)).size == (256, 256)


# -- the request ledger ----------------------------------------------------------------
async def test_ledger_records_a_success_with_usage(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(model="gpt-image-1", prompt="ledger", n=2, size="256x256",
                                                      quality="low", user="alice")
    r = raw.parse()
    row = await ledger_row(app, raw)
    assert row.status == "ok" and row.http_status == 200
    assert row.endpoint == "images.generations"
    assert row.model == "tiny-sd" and row.model_requested == "gpt-image-1"
    assert row.n == 2
    assert r.usage is not None
    assert row.output_tokens == r.usage.output_tokens == 2 * 17  # 272 * (256*256)/(1024*1024) = 17
    assert row.input_tokens == r.usage.input_tokens
    assert row.user == "alice"
    assert row.error_code is None
    assert row.api_key and "test-key" not in row.api_key  # hashed, never stored as given


async def test_ledger_records_edits_and_variations(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.edit(image=png_file(noise_image(64, 64)), prompt="x", size="256x256")
    row = await ledger_row(app, raw)
    assert (row.status, row.endpoint, row.n) == ("ok", "images.edits", 1)
    assert row.input_tokens and row.output_tokens
    raw = await sdk.images.with_raw_response.create_variation(image=png_file(noise_image(64, 64)), size="256x256")
    row = await ledger_row(app, raw)
    assert (row.status, row.endpoint, row.n) == ("ok", "images.variations", 1)


async def test_ledger_records_a_failure_without_usage(app: Any, sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(model="gpt-image-1", prompt="fail", size="256x256", background="transparent",
                                  output_format="jpeg")
    row = await app.state.ledger.get(ei.value.response.headers["x-request-id"])
    assert row is not None
    assert row.status == "error" and row.http_status == 400
    assert row.model_requested == "gpt-image-1"
    assert row.error_message and "background" in row.error_message
    assert row.input_tokens is None and row.output_tokens is None


async def test_ledger_records_an_unknown_model(app: Any, sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        await sdk.images.generate(model="no-such-model", prompt="fail", size="256x256")
    row = await app.state.ledger.get(ei.value.response.headers["x-request-id"])
    assert row is not None
    assert (row.status, row.http_status, row.error_code) == ("error", 404, "model_not_found")
    assert row.model_requested == "no-such-model" and row.model is None
    assert row.output_tokens is None


async def test_ledger_records_a_model_failure_as_500_without_usage(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        backend = app.state.scheduler.worker("tiny-sd").backend

        def broken_gpu(*args: Any) -> Any:  # a fake at the GPU edge: the device fails mid-run
            raise RuntimeError("CUDA error: device-side assert triggered")

        # Whichever entry point the scheduler calls (one job, or a micro-batch of jobs).
        for name in ("run", "run_batch"):
            if hasattr(backend, name):
                setattr(backend, name, broken_gpu)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as http:
            sdk = AsyncOpenAI(api_key="k", base_url="http://testserver/v1", http_client=http, max_retries=0)
            with pytest.raises(openai.InternalServerError) as ei:
                await sdk.images.generate(prompt="x", size="256x256")
        assert ei.value.status_code == 500
        assert ei.value.code == "generation_failed"
        row = await app.state.ledger.get(ei.value.response.headers["x-request-id"])
        assert row is not None and row.status == "error" and row.http_status == 500
        assert row.output_tokens is None and row.input_tokens is None
