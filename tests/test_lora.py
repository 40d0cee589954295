"""Per-request LoRA adapters declared in the models file: loaded once, selected by name,
never mixed within a batch, and the base model is untouched for requests without one."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app


def build_tiny_lora(pipe_path: Path, out: Path) -> Path:
    """A random (non-zero) LoRA for the tiny UNet's attention projections, saved in
    diffusers' LoRA format."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(pipe_path / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.mul_(8.0)  # a visible effect on a random tiny model
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def lora_path(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lora(tiny_sd_path, tmp_path_factory.mktemp("lora"))


def _pixels(r) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).convert("RGB"), dtype=np.float32)


async def test_lora_selected_per_request(tmp_path, tiny_sd_path, lora_path) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(tiny_config(tiny_sd_path), loras={"style": str(lora_path)})
    app = create_app(make_settings(tmp_path), [config])
    async with running(app):
        client = sdk_client(app)

        async def gen(**extra):  # type: ignore[no-untyped-def]
            return _pixels(await client.images.generate(model="tiny-sd", prompt="a cat", size="256x256",
                                                        extra_body={"seed": 3, **extra}))

        base = await gen()
        styled = await gen(lora="style")
        half = await gen(lora="style", lora_scale=0.5)
        again = await gen()
        assert np.abs(base - styled).mean() > 1.0  # the adapter changes the image
        assert np.abs(styled - half).mean() > 0.1  # and its weight matters
        assert np.array_equal(base, again)  # a request without it gets the base model back
        with pytest.raises(openai.BadRequestError) as e:
            await client.images.generate(model="tiny-sd", prompt="x", extra_body={"lora": "nope"})
        assert e.value.param == "lora"
        with pytest.raises(openai.BadRequestError) as e:
            await client.images.generate(model="tiny-sd", prompt="x", extra_body={"lora_scale": 0.5})
        assert e.value.param == "lora_scale"
        await client.close()


def test_adapters_are_part_of_the_batching_key(tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    from imagegate.backends.diffusers import DiffusersBackend
    from imagegate.engine.base import Job
    from imagegate.normalize import build_spec

    config = dataclasses.replace(tiny_config(tiny_sd_path).resolved("sd", 64, 16, {}), loras={"a": "x", "b": "y"})
    common = dict(task="generate", model=config, requested_model=None, prompt="p", n=1, size="256x256", quality=None,
                  background=None, output_format="png", output_compression=None, response_format="b64_json",
                  stream=False, partial_images=None)
    keys = {DiffusersBackend.batch_key(Job(spec=build_spec(**common, lora=lo))) for lo in (None, "a", "b")}  # type: ignore[arg-type]
    assert len(keys) == 3
