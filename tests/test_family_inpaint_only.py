"""A dedicated inpainting checkpoint (9-channel UNet) served alone: detected as
inpaint-only, masks work, everything else is a 400 naming the parameter."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client
from families.sd_family import build_tiny_sd_inpaint
from imagegate.app import create_app
from imagegate.backends.diffusers import detect_family
from imagegate.registry import ModelConfig


@pytest.fixture(scope="module")
def inpaint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd_inpaint(tmp_path_factory.mktemp("inpaint"))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def test_inpaint_only_checkpoint(tmp_path, inpaint_path) -> None:  # type: ignore[no-untyped-def]
    assert detect_family(str(inpaint_path)) == "sd-inpaint"
    config = ModelConfig(name="inp", source=str(inpaint_path), native_size=64, size_multiple=16,
                         options={"dtype": "float32"},
                         quality={"low": (2, 5.0), "medium": (2, 5.0), "high": (2, 5.0)})
    app = create_app(make_settings(tmp_path), [config])
    async with running(app):
        client = sdk_client(app)
        src = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
        mask = Image.new("RGBA", src.size, (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (16, 16, 48, 48))
        r = await client.images.edit(model="inp", image=("a.png", _png(src), "image/png"),
                                     mask=("m.png", _png(mask), "image/png"), prompt="a star")
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).convert("RGB"))
        keep = np.ones(out.shape[:2], bool)
        keep[16:48, 16:48] = False
        assert (out[keep] == np.asarray(src)[keep]).all()
        with pytest.raises(openai.BadRequestError) as e:
            await client.images.generate(model="inp", prompt="x")
        assert e.value.param == "model"
        with pytest.raises(openai.BadRequestError) as e:
            await client.images.edit(model="inp", image=("a.png", _png(src), "image/png"), prompt="x")
        assert e.value.param == "image"
        await client.close()
