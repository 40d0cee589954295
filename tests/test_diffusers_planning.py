"""backends/diffusers/planning.py as pure functions (no weights): the generation bucket a
family's model runs at, and each mode's inputs laid out at it; through the backend's
plan() too, which is what the service reaches over the engine seam."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import tiny_config
from imagegate.backends.diffusers import DiffusersBackend
from imagegate.backends.diffusers.planning import MAX_REFERENCE_ASPECT, generation_bucket, plan
from imagegate.errors import InvalidRequest
from imagegate.normalize import ImageSpec, build_spec
from imagegate.registry import ModelConfig

PRESETS = {"low": (2, 5.0), "medium": (3, 6.0), "high": (4, 7.0)}


def model(**kw: Any) -> ModelConfig:
    kw.setdefault("native_size", 64)
    kw.setdefault("size_multiple", 16)
    return ModelConfig(name="m", source="unused", quality=dict(PRESETS), **kw)


def spec(size: str = "256x256", task: str = "generate") -> ImageSpec:
    return build_spec(task=task, model=model(), requested_model=None, prompt="a cat", n=1, size=size,  # type: ignore[arg-type]
                      quality=None, background=None, output_format=None, output_compression=None,
                      response_format=None, stream=False, partial_images=None)


def solid(w: int, h: int, colour: tuple[int, int, int] = (200, 10, 10), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (w, h), colour if mode == "RGB" else (*colour, 255))


# -- generation_bucket --------------------------------------------------------------------
def test_square_requests_use_the_native_square() -> None:
    assert generation_bucket(model(), 1024, 1024) == (64, 64)
    assert generation_bucket(model(), 256, 256) == (64, 64)
    assert generation_bucket(model(native_size=512, size_multiple=64), 3840, 3840) == (512, 512)


@pytest.mark.parametrize(("w", "h"), [(1536, 1024), (1024, 1536), (1792, 1024), (3840, 2160), (3840, 1280), (256, 768)])
def test_bucket_keeps_aspect_area_and_multiple(w: int, h: int) -> None:
    for m in (model(), model(native_size=512, size_multiple=64), model(native_size=1024, size_multiple=64)):
        bw, bh = generation_bucket(m, w, h)
        native = m.native_size or 512
        assert m.size_multiple is not None
        assert bw % m.size_multiple == 0 and bh % m.size_multiple == 0
        # about native² pixels (rounding to the multiple moves it by at most one step per side)
        assert (native - m.size_multiple) ** 2 <= bw * bh <= (native + m.size_multiple) ** 2 * 1.1
        # landscape stays landscape, portrait stays portrait
        assert (bw > bh) == (w > h) and (bw < bh) == (w < h)
        if m.native_size and m.native_size >= 512:
            assert abs(math.log((bw / bh) / (w / h))) < 0.15


def test_bucket_exact_values() -> None:
    assert generation_bucket(model(native_size=512, size_multiple=64), 1536, 1024) == (640, 448)
    assert generation_bucket(model(native_size=1024, size_multiple=64), 1024, 1536) == (832, 1280)


def test_bucket_clamps_aspect_to_3_to_1() -> None:
    m = model(native_size=512, size_multiple=16)
    assert generation_bucket(m, 10_000, 100) == generation_bucket(m, 3 * 512, 512)
    assert generation_bucket(m, 100, 10_000) == generation_bucket(m, 512, 3 * 512)


# -- plan: each mode's job -----------------------------------------------------------------
def test_the_job_carries_the_bucket_and_the_requested_size() -> None:
    job = plan(model(), False, spec("1536x1024"), "txt2img", [], None)
    assert job.mode == "txt2img" and (job.spec.width, job.spec.height) == (1536, 1024)
    assert (job.spec.gen_width, job.spec.gen_height) == generation_bucket(model(), 1536, 1024)
    assert job.init_image is None and job.references == ()


def test_inpaint_resizes_the_first_image_and_the_mask_to_the_bucket() -> None:
    mask = Image.new("L", (300, 200), 255)
    job = plan(model(), False, spec("1536x1024", "edit"), "inpaint", [solid(300, 200, mode="RGBA")], mask)
    size = (job.spec.gen_width, job.spec.gen_height)
    assert job.init_image is not None and job.edit_mask is not None
    assert job.init_image.size == size and job.init_image.mode == "RGB"
    assert job.edit_mask.size == size and job.edit_mask.mode == "L"


def test_native_edit_keeps_each_reference_when_the_family_takes_several() -> None:
    images = [solid(100, 50), solid(40, 80)]
    job = plan(model(), True, spec(task="edit"), "edit", images, None)
    assert len(job.references) == 2
    for ref, im in zip(job.references, images, strict=True):
        assert ref.width % 16 == 0 and ref.height % 16 == 0
        assert (ref.width > ref.height) == (im.width > im.height)  # aspect kept, not squashed to the bucket


def test_native_edit_composites_when_the_family_takes_one() -> None:
    job = plan(model(), False, spec(task="edit"), "edit", [solid(100, 50), solid(40, 80)], None)
    assert [r.size for r in job.references] == [(job.spec.gen_width, job.spec.gen_height)]


def test_native_edit_refuses_a_reference_over_the_aspect_limit() -> None:
    wide = solid(int(64 * (MAX_REFERENCE_ASPECT + 1)), 64)
    with pytest.raises(InvalidRequest) as e:
        plan(model(), True, spec(task="edit"), "edit", [solid(64, 64), wide], None)
    assert (e.value.param, e.value.code) == ("image", "invalid_image")
    assert e.value.message == f"image[1] is {wide.width}x64; native editing takes references up to 8:1."


def test_img2img_lays_several_images_out_on_one_canvas() -> None:
    job = plan(model(), False, spec(task="edit"), "img2img", [solid(64, 64), solid(64, 64, (10, 10, 200))], None)
    assert job.init_image is not None and job.init_image.size == (job.spec.gen_width, job.spec.gen_height)
    colours = {c for _, c in job.init_image.getcolors(1 << 16) or []}
    assert {(200, 10, 10), (10, 10, 200), (127, 127, 127)} <= colours  # both tiles, on grey


def test_the_backend_plans_with_its_family_before_any_weights(tiny_sd_path: Path) -> None:
    """plan() needs only prepare(): the bucket comes from the family's native size."""
    backend = DiffusersBackend(tiny_config(tiny_sd_path))
    backend.prepare()
    assert not backend.loaded
    job = backend.plan(build_spec(task="generate", model=backend.config, requested_model=None, prompt="x", n=1,
                                  size="1024x1536", quality=None, background=None, output_format=None,
                                  output_compression=None, response_format=None, stream=False, partial_images=None))
    assert (job.spec.gen_width, job.spec.gen_height) == generation_bucket(backend.config, 1024, 1536) == (48, 80)
