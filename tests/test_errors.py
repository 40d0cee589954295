"""Every bad input gets the SDK exception class a client of OpenAI would get, with the
parameter named, in OpenAI's {"error": {message, type, param, code}} envelope."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from PIL import Image

from conftest import make_settings, running, tiny_config
from imagegate.app import create_app

AUTH = {"authorization": "Bearer test-key"}


# -- helpers ---------------------------------------------------------------------------
def envelope(exc: openai.APIStatusError) -> dict[str, Any]:
    """The raw body must be exactly OpenAI's envelope."""
    body = exc.response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    assert exc.body == err  # what the SDK exposes is the inner object
    return err


def check(exc: openai.APIStatusError, status: int, param: str | None, code: str | None = None,
          type_: str = "invalid_request_error") -> dict[str, Any]:
    assert exc.status_code == status, (exc.status_code, exc.body)
    err = envelope(exc)
    assert exc.param == err["param"] == param, err
    assert exc.type == err["type"] == type_, err
    if code is not None:
        assert exc.code == err["code"] == code, err
    assert exc.response.headers.get("x-request-id")
    return err


def check_raw(resp: httpx2.Response, status: int, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err) and err["message"], err
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8), mode)


def png_file(img: Image.Image, name: str = "image.png") -> tuple[str, bytes, str]:
    return (name, png_bytes(img), "image/png")


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def rgba_mask(width: int, height: int) -> Image.Image:
    m = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, width // 2, height // 2))
    return m


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def solid_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of one colour. 8000x8000 is 64M pixels (over the default
    40M guard) in about 8 KB: the size is declared in the header, the pixels compress away."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    raw = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@asynccontextmanager
async def app_with(tmp_path: Path, tiny_sd_path: Path, **settings: Any) -> AsyncIterator[Any]:
    app = create_app(make_settings(tmp_path, **settings), [tiny_config(tiny_sd_path)])
    async with running(app):
        yield app


@asynccontextmanager
async def clients(app: Any, api_key: str = "test-key") -> AsyncIterator[tuple[AsyncOpenAI, httpx2.AsyncClient]]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as http:
        yield AsyncOpenAI(api_key=api_key, base_url="http://testserver/v1", http_client=http, max_retries=0), http


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


# -- generations: parameters -----------------------------------------------------------
@pytest.mark.parametrize("n", [0, 11, -1])
async def test_n_out_of_range(sdk: AsyncOpenAI, n: int) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", n=n, size="256x256")
    check(ei.value, 400, "n")


@pytest.mark.parametrize("size", ["1000x1000", "17x17", "4000x4000", "100x1000", "1024", "big", "0x0",
                                  "1024x1024x3", "3840x3840"])
async def test_unknown_size(sdk: AsyncOpenAI, size: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size=size)
    check(ei.value, 400, "size", "invalid_size")
    assert size in ei.value.message


async def test_unknown_size_on_edits_and_variations(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), prompt="x", size="1000x1000")
    check(ei.value, 400, "size", "invalid_size")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.create_variation(image=png_file(noise(64, 64)), size="17x17")  # type: ignore[arg-type]
    check(ei.value, 400, "size", "invalid_size")


@pytest.mark.parametrize("fmt", ["bmp", "tiff", "PNG", "svg"])
async def test_unknown_output_format(sdk: AsyncOpenAI, fmt: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="256x256", output_format=fmt)  # type: ignore[arg-type]
    check(ei.value, 400, "output_format")


async def test_prompt_over_32000_characters(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(model="gpt-image-1", prompt="a" * 32001, size="256x256")
    check(ei.value, 400, "prompt", "string_above_max_length")
    # The limit itself is accepted.
    r = await sdk.images.generate(model="gpt-image-1", prompt="a" * 32000, size="256x256", quality="low")
    assert r.data[0].b64_json


async def test_prompt_over_1000_characters_for_dall_e_2(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(model="dall-e-2", prompt="a" * 1001, size="256x256")
    check(ei.value, 400, "prompt", "string_above_max_length")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(model="dall-e-2", image=png_file(noise(64, 64)), prompt="a" * 1001, size="256x256")
    check(ei.value, 400, "prompt", "string_above_max_length")
    r = await sdk.images.generate(model="dall-e-2", prompt="a" * 1000, size="256x256", response_format="b64_json")
    assert r.data[0].b64_json


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
async def test_empty_prompt(sdk: AsyncOpenAI, prompt: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt=prompt, size="256x256")
    check(ei.value, 400, "prompt")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), prompt=prompt, size="256x256")
    check(ei.value, 400, "prompt")


async def test_missing_prompt(http: httpx2.AsyncClient) -> None:
    resp = await http.post("/v1/images/generations", json={"size": "256x256"}, headers=AUTH)
    check_raw(resp, 400, "prompt", "missing_required_parameter")


@pytest.mark.parametrize("fmt", ["jpeg", "gif"])
async def test_transparent_background_needs_an_alpha_format(sdk: AsyncOpenAI, fmt: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="256x256", background="transparent",
                                  output_format=fmt)  # type: ignore[arg-type]
    check(ei.value, 400, "background")


@pytest.mark.parametrize("quality", ["hd", "standard"])
async def test_dall_e_quality_names_with_gpt_image_1(sdk: AsyncOpenAI, quality: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(model="gpt-image-1", prompt="x", size="256x256",
                                  quality=quality)  # type: ignore[arg-type]
    check(ei.value, 400, "quality")


async def test_unknown_quality(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="256x256", quality="ultra")  # type: ignore[arg-type]
    check(ei.value, 400, "quality")


async def test_dall_e_3_takes_one_image(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(model="dall-e-3", prompt="x", n=2, size="256x256")
    check(ei.value, 400, "n")


@pytest.mark.parametrize(("extra", "param"), [
    ({"output_compression": 101}, "output_compression"),
    ({"partial_images": 2}, "partial_images"),  # needs stream=true
    ({"response_format": "jpeg"}, "response_format"),
    ({"seed": -1}, "seed"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"guidance_scale": 100}, "guidance_scale"),
    ({"aspect_ratio": "wide"}, "aspect_ratio"),
    ({"resolution": "8K"}, "resolution"),
])
async def test_bad_values_name_their_parameter(sdk: AsyncOpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", extra_body=extra)
    check(ei.value, 400, param)


# -- unknown model, unknown parameters ---------------------------------------------------
async def test_unknown_model(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        await sdk.images.generate(model="dall-e-4", prompt="x", size="256x256")
    check(ei.value, 404, "model", "model_not_found")
    with pytest.raises(openai.NotFoundError) as ei:
        await sdk.images.edit(model="dall-e-4", image=png_file(noise(64, 64)), prompt="x", size="256x256")
    check(ei.value, 404, "model", "model_not_found")
    with pytest.raises(openai.NotFoundError) as ei:
        await sdk.models.retrieve("dall-e-4")
    check(ei.value, 404, "model", "model_not_found")


async def test_unknown_parameter_in_json(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="256x256", extra_body={"foo": 1})
    check(ei.value, 400, "foo", "unknown_parameter")


async def test_unknown_parameter_in_multipart(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), prompt="x", size="256x256", extra_body={"foo": "1"})
    check(ei.value, 400, "foo", "unknown_parameter")


async def test_unsupported_openai_parameter(sdk: AsyncOpenAI) -> None:
    """Parameters of newer OpenAI models that the SDK knows but we do not implement."""
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="256x256", frame_count=4)
    check(ei.value, 400, "frame_count")


async def test_malformed_json(http: httpx2.AsyncClient) -> None:
    for path in ("/v1/images/generations", "/v1/images/edits"):
        resp = await http.post(path, content=b'{"prompt": "x", "size": ', headers={**AUTH, "content-type":
                                                                                  "application/json"})
        check_raw(resp, 400, None, "invalid_json")


async def test_json_body_that_is_not_an_object(http: httpx2.AsyncClient) -> None:
    for path in ("/v1/images/generations", "/v1/images/edits"):
        resp = await http.post(path, content=b'["x"]', headers={**AUTH, "content-type": "application/json"})
        err = check_raw(resp, 400, None)
        assert err["type"] == "invalid_request_error"


async def test_unknown_path_and_wrong_method(http: httpx2.AsyncClient) -> None:
    resp = await http.post("/v1/images/generate", json={"prompt": "x"}, headers=AUTH)
    err = check_raw(resp, 404, None, "not_found")
    assert err["type"] == "invalid_request_error"
    resp = await http.get("/v1/images/generations", headers=AUTH)
    err = check_raw(resp, 405, None, "method_not_allowed")
    assert err["type"] == "invalid_request_error"


async def test_unknown_path_through_the_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        await sdk.post("/images/nope", body={"prompt": "x"}, cast_to=openai.types.ImagesResponse)
    check(ei.value, 404, None, "not_found")


# -- edits: images and masks ---------------------------------------------------------------
async def test_mask_of_the_wrong_size(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), mask=png_file(rgba_mask(64, 48), "mask.png"),
                              prompt="x", size="256x256")
    check(ei.value, 400, "mask", "invalid_mask")


async def test_mask_without_alpha(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), mask=png_file(Image.new("RGB", (64, 64)), "mask.png"),
                              prompt="x", size="256x256")
    check(ei.value, 400, "mask", "invalid_mask")


async def test_mask_that_is_not_a_png(sdk: AsyncOpenAI) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(64, 64)), mask=("mask.jpg", buf.getvalue(), "image/jpeg"),
                              prompt="x", size="256x256")
    check(ei.value, 400, "mask")


async def test_mask_in_a_json_body_of_the_wrong_size(sdk: AsyncOpenAI) -> None:
    body = {"images": [{"image_url": data_url(noise(64, 64))}], "mask": {"image_url": data_url(rgba_mask(32, 32))},
            "prompt": "x", "size": "256x256"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "mask", "invalid_mask")


async def test_animated_gif_input(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("anim.gif", animated_gif(), "image/gif"), prompt="x", size="256x256")
    check(ei.value, 400, "image", "invalid_image")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.create_variation(image=("anim.gif", animated_gif(), "image/gif"), size="256x256")
    check(ei.value, 400, "image", "invalid_image")


async def test_still_gif_input_is_accepted(sdk: AsyncOpenAI) -> None:
    buf = io.BytesIO()
    noise(64, 64).convert("P").save(buf, "GIF")
    r = await sdk.images.edit(image=("still.gif", buf.getvalue(), "image/gif"), prompt="x", size="256x256",
                              quality="low")
    assert r.data[0].b64_json


@pytest.mark.parametrize("payload", [b"this is not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b""])
async def test_file_that_is_not_an_image(sdk: AsyncOpenAI, payload: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("image.png", payload, "image/png"), prompt="x", size="256x256")
    check(ei.value, 400, "image", "invalid_image")


async def test_not_an_image_among_several_names_which_one(sdk: AsyncOpenAI) -> None:
    files = [png_file(noise(32, 32)), ("b.png", b"garbage", "image/png")]
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=files, prompt="x", size="256x256")
    check(ei.value, 400, "image[1]", "invalid_image")


async def test_unsupported_image_format(sdk: AsyncOpenAI) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "BMP")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("image.bmp", buf.getvalue(), "image/bmp"), prompt="x", size="256x256")
    check(ei.value, 400, "image", "invalid_image_format")


async def test_seventeen_images(sdk: AsyncOpenAI) -> None:
    files = [png_file(noise(16, 16, seed=i), f"{i}.png") for i in range(17)]
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=files, prompt="x", size="256x256")
    check(ei.value, 400, "image", "too_many_images")
    body = {"images": [{"image_url": data_url(noise(16, 16, seed=i))} for i in range(17)], "prompt": "x"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "images", "too_many_images")  # the JSON body's field is `images`


async def test_sixteen_images_are_accepted(sdk: AsyncOpenAI) -> None:
    files = [png_file(noise(16, 16, seed=i), f"{i}.png") for i in range(16)]
    raw = await sdk.images.with_raw_response.edit(image=files, prompt="x", size="256x256", quality="low")
    assert raw.headers["x-imagegate-composited"] == "16"


async def test_edit_without_an_image(http: httpx2.AsyncClient) -> None:
    resp = await http.post("/v1/images/edits", data={"prompt": "x"}, files={"other": ("a.txt", b"x")}, headers=AUTH)
    check_raw(resp, 400, "other")
    resp = await http.post("/v1/images/edits", files={"prompt": (None, "x")}, headers=AUTH)
    check_raw(resp, 400, "image", "missing_required_parameter")


async def test_decompression_bomb(sdk: AsyncOpenAI) -> None:
    bomb = solid_png(8000, 8000)
    assert len(bomb) < 64 * 1024
    assert Image.open(io.BytesIO(bomb)).size == (8000, 8000)  # header only: nothing decoded
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("bomb.png", bomb, "image/png"), prompt="x", size="256x256")
    check(ei.value, 400, "image", "image_too_large")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.create_variation(image=("bomb.png", bomb, "image/png"), size="256x256")
    check(ei.value, 400, "image", "image_too_large")
    # As a mask, too (the image itself is fine).
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=png_file(noise(32, 32)), mask=("bomb.png", bomb, "image/png"), prompt="x",
                              size="256x256")
    check(ei.value, 400, "mask", "image_too_large")


async def test_max_input_pixels_setting(tmp_path: Path, tiny_sd_path: Path) -> None:
    async with app_with(tmp_path, tiny_sd_path, max_input_pixels=100 * 100) as app, clients(app) as (sdk, _):
        with pytest.raises(openai.BadRequestError) as ei:
            await sdk.images.edit(image=png_file(noise(101, 100)), prompt="x", size="256x256")
        check(ei.value, 400, "image", "image_too_large")
        r = await sdk.images.edit(image=png_file(noise(100, 100)), prompt="x", size="256x256", quality="low")
        assert r.data[0].b64_json


async def test_max_image_bytes_setting(tmp_path: Path, tiny_sd_path: Path) -> None:
    async with app_with(tmp_path, tiny_sd_path, max_image_bytes=8 * 1024) as app, clients(app) as (sdk, _):
        big = png_bytes(noise(96, 96))  # ~27 KB of incompressible pixels
        with pytest.raises(openai.BadRequestError) as ei:
            await sdk.images.edit(image=("big.png", big, "image/png"), prompt="x", size="256x256")
        check(ei.value, 400, "image", "image_too_large")
        with pytest.raises(openai.BadRequestError) as ei:
            await sdk.images.edit(image=png_file(noise(16, 16)), mask=("m.png", big, "image/png"), prompt="x",
                                  size="256x256")
        check(ei.value, 400, "mask", "image_too_large")


async def test_json_edit_with_file_id(sdk: AsyncOpenAI) -> None:
    body = {"images": [{"file_id": "file-abc123"}], "prompt": "x"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "images[0].file_id", "file_not_found")  # no such file (the Files API: test_jobs.py)
    body = {"images": [{"image_url": data_url(noise(32, 32))}], "mask": {"file_id": "file-abc"}, "prompt": "x"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "mask.file_id", "file_not_found")


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://169.254.169.254/latest/meta-data"])
async def test_json_edit_with_a_remote_url(sdk: AsyncOpenAI, url: str) -> None:
    body = {"images": [{"image_url": url}], "prompt": "x"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "images[0].image_url", "unsupported_image_url")


@pytest.mark.parametrize(("ref", "param"), [
    ({"image_url": "data:image/png;base64,!!!notbase64"}, "images[0].image_url"),
    ({"image_url": "file:///etc/passwd"}, "images[0].image_url"),
    ({}, "images[0]"),
    ({"image_url": data_url(noise(8, 8)), "file_id": "file-1"}, "images[0]"),
])
async def test_json_edit_with_bad_references(sdk: AsyncOpenAI, ref: dict[str, Any], param: str) -> None:
    body = {"images": [ref], "prompt": "x"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body=body, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, param)


async def test_json_edit_with_no_images(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.post("/images/edits", body={"images": [], "prompt": "x"}, cast_to=openai.types.ImagesResponse)
    check(ei.value, 400, "images")


async def test_variation_with_two_images_or_a_mask(http: httpx2.AsyncClient) -> None:
    img = ("a.png", png_bytes(noise(32, 32)), "image/png")
    resp = await http.post("/v1/images/variations", files=[("image", img), ("image", img)], headers=AUTH)
    check_raw(resp, 400, "image", "too_many_images")
    resp = await http.post("/v1/images/variations", files=[("image", img), ("mask", img)], headers=AUTH)
    check_raw(resp, 400, "mask")


# -- limits: body size, queue, authentication -----------------------------------------------
async def test_body_over_the_limit(tmp_path: Path, tiny_sd_path: Path) -> None:
    async with app_with(tmp_path, tiny_sd_path, max_body_bytes=64 * 1024) as app, clients(app) as (sdk, _http):
        big = png_bytes(noise(256, 256))  # ~200 KB of incompressible pixels
        assert len(big) > 64 * 1024
        with pytest.raises(openai.APIStatusError) as ei:
            await sdk.images.edit(image=("big.png", big, "image/png"), prompt="x", size="256x256")
        check(ei.value, 413, None, "request_too_large")
        with pytest.raises(openai.APIStatusError) as ei:
            await sdk.images.generate(prompt="x" * 70_000, size="256x256")
        check(ei.value, 413, None, "request_too_large")
        # Small requests still work.
        r = await sdk.images.generate(prompt="x", size="256x256", quality="low")
        assert r.data[0].b64_json


async def test_chunked_body_over_the_limit(tmp_path: Path, tiny_sd_path: Path) -> None:
    """No Content-Length: the limit is enforced while the body streams in, for every route."""
    async with app_with(tmp_path, tiny_sd_path, max_body_bytes=64 * 1024) as app, clients(app) as (_, http):
        async def chunks(data: bytes) -> AsyncIterator[bytes]:
            for i in range(0, len(data), 16 * 1024):
                yield data[i:i + 16 * 1024]

        payload = json.dumps({"prompt": "x" * 100_000, "size": "256x256"}).encode()
        for path in ("/v1/images/generations", "/v1/images/edits"):
            resp = await http.post(path, content=chunks(payload), headers={**AUTH, "content-type": "application/json"})
            assert "content-length" not in resp.request.headers
            check_raw(resp, 413, None, "request_too_large")
        boundary = "b0undary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + png_bytes(noise(256, 256)) \
            + f"\r\n--{boundary}--\r\n".encode()
        resp = await http.post("/v1/images/edits", content=chunks(form),
                               headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"})
        check_raw(resp, 413, None, "request_too_large")


@contextmanager
def blocked_gpu(backend: Any) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A fake at the GPU edge: the model call blocks until released, so a request stays in flight."""
    entered, release = threading.Event(), threading.Event()
    originals = {name: getattr(backend, name) for name in ("run", "run_batch") if hasattr(backend, name)}

    def wrap(fn: Any) -> Any:
        def blocked(*args: Any, **kw: Any) -> Any:
            entered.set()
            if not release.wait(30):
                raise RuntimeError("blocked_gpu was never released")
            return fn(*args, **kw)
        return blocked

    for name, fn in originals.items():
        setattr(backend, name, wrap(fn))
    try:
        yield entered, release
    finally:
        release.set()
        for name, fn in originals.items():
            setattr(backend, name, fn)


async def test_full_queue_is_503_with_retry_after(tmp_path: Path, tiny_sd_path: Path) -> None:
    async with app_with(tmp_path, tiny_sd_path, queue_size=1) as app, clients(app) as (sdk, _):
        backend = app.state.scheduler.worker("tiny-sd").backend
        with blocked_gpu(backend) as (entered, release):
            first = asyncio.create_task(sdk.images.generate(prompt="first", size="256x256", quality="low"))
            assert await asyncio.to_thread(entered.wait, 30)
            with pytest.raises(openai.APIStatusError) as ei:
                await sdk.images.generate(prompt="second", size="256x256", quality="low")
            assert isinstance(ei.value, openai.InternalServerError)
            check(ei.value, 503, None, "overloaded", type_="server_error")
            retry_after = ei.value.response.headers.get("retry-after")
            assert retry_after is not None and int(retry_after) >= 1
            # Edits share the queue.
            with pytest.raises(openai.APIStatusError) as ei:
                await sdk.images.edit(image=png_file(noise(32, 32)), prompt="third", size="256x256")
            check(ei.value, 503, None, "overloaded", type_="server_error")
            release.set()
            r = await first
        assert r.data[0].b64_json
        # Once the queue drains, requests are served again.
        r = await sdk.images.generate(prompt="after", size="256x256", quality="low")
        assert r.data[0].b64_json


@pytest.mark.parametrize("key", ["wrong", None])
async def test_api_keys(tmp_path: Path, tiny_sd_path: Path, key: str | None) -> None:
    async with (app_with(tmp_path, tiny_sd_path, api_keys=["k1"]) as app,
                clients(app, api_key=key or "x") as (sdk, http)):
        if key is None:
            for method, path in (("POST", "/v1/images/generations"), ("GET", "/v1/models")):
                resp = await http.request(method, path, json={"prompt": "x", "size": "256x256"})
                err = check_raw(resp, 401, None, "invalid_api_key")
                assert err["type"] == "invalid_request_error"
            resp = await http.post("/v1/images/generations", json={"prompt": "x"},
                                   headers={"authorization": "Basic k1"})
            check_raw(resp, 401, None, "invalid_api_key")
        else:
            with pytest.raises(openai.AuthenticationError) as ei:
                await sdk.images.generate(prompt="x", size="256x256")
            check(ei.value, 401, None, "invalid_api_key")
            with pytest.raises(openai.AuthenticationError) as ei:
                await sdk.images.edit(image=png_file(noise(32, 32)), prompt="x", size="256x256")
            check(ei.value, 401, None, "invalid_api_key")
            with pytest.raises(openai.AuthenticationError) as ei:
                await sdk.models.list()
            check(ei.value, 401, None, "invalid_api_key")
        # The right key works, and signed image links need no key (the signature is the credential).
        good = sdk.with_options(api_key="k1")
        r = await good.images.generate(prompt="x", size="256x256", quality="low", response_format="url")
        assert r.data[0].url
        got = await http.get(r.data[0].url)
        assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (256, 256)


# -- no spooled temporaries are left behind -------------------------------------------------
def open_files_under(folder: Path) -> list[str]:
    """Paths of this process's open file descriptors inside `folder` (unnamed O_TMPFILE
    temporaries show up as '<folder>/#1234 (deleted)')."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder) + os.sep):
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_failed_uploads_leave_no_temporary_files(sdk: AsyncOpenAI, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A private temp dir: other processes on this machine write to the shared one.
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    assert tempfile.gettempdir() == str(spool)
    # The detector sees a spooled temporary that is still open.
    with tempfile.SpooledTemporaryFile(max_size=10) as probe:
        probe.write(b"x" * 100)
        assert open_files_under(spool) or os.listdir(spool)
    assert not open_files_under(spool) and not os.listdir(spool)

    junk = os.urandom(2 * 1024 * 1024)  # over Starlette's 1 MB spool: goes to disk
    before = sorted(os.listdir(spool))
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("big.png", junk, "image/png"), prompt="x", size="256x256")
    check(ei.value, 400, "image", "invalid_image")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=[("a.png", junk, "image/png"), ("b.png", junk, "image/png")],
                              mask=("m.png", junk, "image/png"), prompt="x", size="256x256")
    check(ei.value, 400, "image[0]", "invalid_image")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.create_variation(image=("big.png", junk, "image/png"), size="256x256")
    check(ei.value, 400, "image", "invalid_image")
    # Rejected after the upload was read: an unknown parameter, a mask on a variation.
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.edit(image=("big.png", junk, "image/png"), prompt="x", extra_body={"foo": "1"})
    check(ei.value, 400, "foo")
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.create_variation(image=("big.png", junk, "image/png"), extra_body={"quality": "low"})
    check(ei.value, 400, "quality")
    assert sorted(os.listdir(spool)) == before
    assert open_files_under(spool) == []


async def test_steps_above_the_server_limit_are_refused(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as e:
        await client.images.generate(prompt="x", extra_body={"num_inference_steps": 101})
    assert e.value.param == "num_inference_steps"


async def test_model_failures_do_not_leak_internals(app, client) -> None:  # type: ignore[no-untyped-def]
    backend = app.state.scheduler.worker("tiny-sd").backend
    real = backend.run_batch

    def broken(jobs, runtimes):  # type: ignore[no-untyped-def]  # fake at the GPU edge
        raise RuntimeError("CUDA error at /secret/path/kernel.cu:42")

    backend.run_batch = broken
    try:
        with pytest.raises(openai.InternalServerError) as e:
            await client.images.generate(prompt="x", size="256x256")
    finally:
        backend.run_batch = real
    assert "secret" not in e.value.message and e.value.code == "generation_failed"
    row = await app.state.ledger.get(e.value.response.headers["x-request-id"])
    assert "secret/path" in row.error_message  # the detail is kept for the operator
