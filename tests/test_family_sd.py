"""The Stable Diffusion families through the public surface: SD 1.x/2.x (and its SD-Turbo
presets), SDXL (and SDXL-Turbo / Lightning presets), SD 3 / 3.5, and original-layout
single files of SD 1.x and SDXL.

Tiny random pipelines of the real diffusers classes are saved to folders once per
session, served from one models file (so the models-file path, relative sources and
family detection are exercised), and driven with the official openai SDK against a real
uvicorn (streams are buffered by in-process transports). The ledger is read straight from
SQLite: the server's engine lives on its own event loop."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from PIL import Image

from families.harness import Live, decode, edit, gen, noise, png, rect_mask, serve
from families.sd_family import (
    build_tiny_sd3,
    build_tiny_sd_inpaint,
    build_tiny_sdxl,
    config_only_copy,
    write_single_file,
)
from imagegate.backends.diffusers import DiffusersBackend, detect_family
from imagegate.backends.diffusers.families import FAMILIES
from imagegate.registry import load_models_file

# Tiny models: 2 steps at every tier unless a test asks for more.
QUALITY = "{low = [2, 5.0], medium = [2, 5.0], high = [2, 5.0]}"
FOLDER_MODELS = {"sd": "tiny-sd", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3"}  # served name = family
ROW_MODES = {"txt2img", "img2img", "inpaint"}


# -- models: built once per session, served from one models file -------------------------
@pytest.fixture(scope="session")
def sd_models(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> Path:
    """A folder holding every tiny checkpoint (and the single files) beside models.toml."""
    root = tmp_path_factory.mktemp("sd-family")
    shutil.copytree(tiny_sd_path, root / "tiny-sd")
    build_tiny_sdxl(root)
    build_tiny_sd3(root)
    build_tiny_sd_inpaint(root)
    for name in ("tiny-sd", "tiny-sdxl"):
        write_single_file(root / name, root / f"{name}.safetensors")
        config_only_copy(root / name, root / f"{name}-config")
    small = "native_size = 64\nsize_multiple = 16\n"
    tables = [f'[[models]]\nname = "{fam}"\nsource = "{folder}"\n{small}quality = {QUALITY}\n'
              for fam, folder in FOLDER_MODELS.items()]
    # Turbo presets: the family named in the file, the presets left to the family row.
    tables += [f'[[models]]\nname = "{fam}"\nsource = "{folder}"\nfamily = "{fam}"\n{small}'
               for fam, folder in (("sd-turbo", "tiny-sd"), ("sdxl-turbo", "tiny-sdxl"))]
    tables += [f'[[models]]\nname = "{name}-single"\nsource = "{name}.safetensors"\n'
               f'single_file_config = "{name}-config"\n{small}quality = {QUALITY}\n'
               for name in ("tiny-sd", "tiny-sdxl")]
    # A dedicated inpainting checkpoint (9-channel UNet) serving the masks of the base model.
    tables.append(f'[[models]]\nname = "sd-with-inpaint"\nsource = "tiny-sd"\ninpaint_source = "tiny-sd-inpaint"\n'
                  f'{small}quality = {QUALITY}\n')
    (root / "models.toml").write_text("\n".join(tables))
    return root


@pytest.fixture(scope="module")
def live(sd_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serve(sd_models / "models.toml", tmp_path_factory.mktemp("sd-family-app")) as live:
        yield live


# -- detection and the family rows -------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_family_is_detected_from_model_index(live: Live, sd_models: Path, family: str) -> None:
    assert detect_family(str(sd_models / FOLDER_MODELS[family])) == family
    gen(live, family, size="256x256", quality="low")  # loaded (models may load on first use)
    backend = live.backend(family)
    assert backend.family.name == family  # the models file names no family: detected
    assert set(FAMILIES[family].modes) == ROW_MODES == set(backend.modes)
    assert not FAMILIES[family].multi_image and FAMILIES[family].negative_prompt


# -- every mode of the row, per family -----------------------------------------------------
@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_text_to_image_has_the_exact_non_square_size(live: Live, family: str) -> None:
    raw, r = gen(live, family, size="1536x1024", quality="low")
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert r.size == "1536x1024"
    row = live.row(raw)
    # generated at the model's own bucket (native_size 64, multiple 16), resized after
    assert (row["params"]["gen_width"], row["params"]["gen_height"]) == (80, 48)
    assert row["params"]["steps"] == 2


@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_seed_reproduces_bytes_and_negative_prompt_is_taken(live: Live, family: str) -> None:
    a = gen(live, family, size="256x256")[1].data[0].b64_json
    b = gen(live, family, size="256x256")[1].data[0].b64_json
    other_seed = gen(live, family, size="256x256", extra_body={"seed": 8})[1].data[0].b64_json
    raw, neg = gen(live, family, size="256x256", extra_body={"negative_prompt": "blurry, green"})
    assert a == b
    assert other_seed != a
    # guidance 5: the negative prompt is the unconditional half of CFG, so it moves the pixels
    assert neg.data[0].b64_json != a
    assert "negative_prompt" not in raw.headers.get("x-imagegate-notes", "")


@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_image_to_image_strength_follows_input_fidelity(live: Live, family: str) -> None:
    src = noise(160, 112)
    # 4 steps: strength 0.75 runs the last 3, 0.5 the last 2 (at 2 steps both round to 1)
    steps = {"num_inference_steps": 4}
    raw, low = edit(live, family, image=png(src), size="auto", input_fidelity="low", extra_body=steps)
    raw_high, high = edit(live, family, image=png(src), size="auto", input_fidelity="high", extra_body=steps)
    assert decode(low.data[0].b64_json).size == (160, 112)  # size=auto: the input's size
    assert "x-imagegate-composited" not in raw.headers  # one image: no native edit, plain img2img
    assert live.row(raw)["params"]["strength"] == 0.75
    assert live.row(raw_high)["params"]["strength"] == 0.5
    assert low.data[0].b64_json != high.data[0].b64_json


@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_inpaint_keeps_every_pixel_outside_the_mask(live: Live, family: str) -> None:
    src = noise(160, 112, seed=3)
    box = (40, 24, 120, 88)
    raw, r = edit(live, family, image=png(src), mask=png(rect_mask(src.size, box), "mask.png"), size="auto",
                  input_fidelity="high")
    # inpainting runs at strength 1: input_fidelity has nothing to set, and the reply says so
    assert "input_fidelity=high has no effect in inpaint mode" in raw.headers["x-imagegate-notes"]
    out = np.asarray(decode(r.data[0].b64_json).convert("RGB"))
    assert out.shape == (112, 160, 3)
    keep = np.ones(out.shape[:2], dtype=bool)
    keep[box[1]:box[3], box[0]:box[2]] = False
    np.testing.assert_array_equal(out[keep], np.asarray(src)[keep])
    assert not np.array_equal(out[~keep], np.asarray(src)[~keep])  # and the region was repainted


def test_a_dedicated_inpainting_checkpoint_serves_the_masks(live: Live) -> None:
    src = noise(160, 112, seed=4)
    box = (0, 0, 80, 112)
    _raw, r = edit(live, "sd-with-inpaint", image=png(src), mask=png(rect_mask(src.size, box), "mask.png"), size="auto")
    out = np.asarray(decode(r.data[0].b64_json).convert("RGB"))
    np.testing.assert_array_equal(out[:, 80:], np.asarray(src)[:, 80:])
    backend = live.backend("sd-with-inpaint")
    inpaint = backend.pipes["inpaint"]
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline" and inpaint.unet.config.in_channels == 9
    assert backend.pipes["txt2img"].unet.config.in_channels == 4  # the rest stays on the base model
    assert decode(gen(live, "sd-with-inpaint", size="256x256")[1].data[0].b64_json).size == (256, 256)


@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_several_images_are_composited_into_one_reference(live: Live, family: str) -> None:
    files = [png(noise(128, 128, seed=s), f"ref{s}.png") for s in range(3)]
    raw, r = edit(live, family, image=files, size="256x256")
    assert raw.headers["x-imagegate-composited"] == "3"  # no multi-reference pipeline in these rows
    assert "composited" in raw.headers["x-imagegate-notes"]
    assert decode(r.data[0].b64_json).size == (256, 256)


@pytest.mark.parametrize("family", sorted(FOLDER_MODELS))
def test_stream_sends_two_partial_images_at_the_requested_size(live: Live, family: str) -> None:
    stream = live.sdk.images.generate(model=family, prompt="a red circle", size="256x384", stream=True,
                                      partial_images=2, extra_body={"num_inference_steps": 6, "seed": 1})
    events = list(stream)
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    done = [e for e in events if e.type == "image_generation.completed"]
    assert [e.partial_image_index for e in partial] == [0, 1]
    assert len(done) == 1
    for e in partial + done:
        assert decode(e.b64_json).size == (256, 384)


# -- turbo presets ------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd-turbo", "sdxl-turbo"])
def test_turbo_presets_from_the_family_named_in_the_models_file(live: Live, family: str) -> None:
    steps = {}
    for tier in ("low", "medium", "high"):
        raw, r = gen(live, family, size="256x256", quality=tier)
        row = live.row(raw)
        steps[tier] = (row["params"]["steps"], row["params"]["guidance"])
        assert decode(r.data[0].b64_json).size == (256, 256)
    assert steps == {"low": (1, 0.0), "medium": (2, 0.0), "high": (4, 0.0)}
    backend = live.backend(family)
    assert backend.family.name == family
    assert backend.config.quality == dict(FAMILIES[family].quality)
    # No classifier-free guidance at 0: a negative prompt is accepted but said to be unused.
    raw, _ = gen(live, family, size="256x256", quality="low", extra_body={"negative_prompt": "blurry"})
    assert "negative_prompt has no effect" in raw.headers["x-imagegate-notes"]


# -- single files ----------------------------------------------------------------------------
# Single-file and folder loads hold bit-identical weights, but the single file's tensors sit
# wherever the file put them (4-byte aligned here) and CPU kernels take other paths on
# unaligned memory: the latents differ by ~1e-6 (measured: 8e-7 in the SDXL UNet output,
# 0 once the weights are copied to aligned memory), which can flip a rounding in the output.
SINGLE_FILE_TOLERANCE = 1  # max |difference| per 8-bit channel


def pixels(b64: str | None) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("name", "family"), [("tiny-sd", "sd"), ("tiny-sdxl", "sdxl")])
def test_single_file_is_detected_and_matches_the_folder(live: Live, sd_models: Path, name: str,
                                                        family: str) -> None:
    assert detect_family(str(sd_models / f"{name}.safetensors")) == family
    assert not list((sd_models / f"{name}-config").rglob("*.safetensors"))  # weights come from the file
    single, folder = f"{name}-single", family
    src, mask = noise(160, 112, seed=5), Image.new("RGBA", (160, 112), (0, 0, 0, 0))
    pairs = []
    for kw in ({"size": "384x256"}, {"size": "256x256", "extra_body": {"negative_prompt": "green"}}):
        pairs.append([gen(live, model, **kw)[1].data[0].b64_json for model in (single, folder)])
    pairs.append([edit(live, model, image=png(src), mask=png(mask, "mask.png"), size="auto")[1].data[0].b64_json
                  for model in (single, folder)])
    for a, b in pairs:
        assert np.abs(pixels(a) - pixels(b)).max() <= SINGLE_FILE_TOLERANCE
    # the same weights, bit for bit, in every component the file carries
    one, other = live.backend(single), live.backend(folder)
    assert one.family.name == family
    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for comp in components:
        mine, theirs = (getattr(b.pipes["txt2img"], comp).state_dict() for b in (one, other))
        assert mine.keys() == theirs.keys(), comp
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), comp


def test_a_safetensors_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path, sd_models: Path) -> None:
    # A bare denoiser in diffusers layout has none of the original checkpoint's keys;
    # infer_diffusers_model_type would call it "v1".
    bare = sd_models / "tiny-sd3" / "transformer" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError, match="not a recognised single-file checkpoint"):
        detect_family(str(bare))


def test_the_lazy_shape_view_reads_tensors_by_index_and_by_get(sd_models: Path) -> None:
    from safetensors import safe_open

    from imagegate.backends.diffusers.loading import _shape_view

    path = sd_models / "tiny-sd.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = dict.fromkeys(f.keys())
    view = _shape_view(path, keys)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert view[key].shape == view.get(key).shape == (16, 4, 3, 3)  # dict.get used to answer None
    assert view.get("missing") is None and "missing" not in view


# -- what these rows refuse -------------------------------------------------------------------
def test_errors_name_the_parameter(live: Live, sd_models: Path, tmp_path: Path) -> None:
    """Every SD-family row serves all three modes, so no mode is refused for them; what is
    refused names its parameter: a mask that does not match the image, an unknown model,
    and (at start-up) a family that does not exist."""
    src = noise(160, 112)
    with pytest.raises(openai.BadRequestError) as e:
        live.sdk.images.edit(model="sdxl", image=png(src), mask=png(Image.new("RGBA", (64, 64)), "mask.png"),
                             prompt="x")
    assert e.value.param == "mask"
    with pytest.raises(openai.NotFoundError) as nf:
        live.sdk.images.generate(model="sd4", prompt="x")
    assert nf.value.param == "model"
    bad = tmp_path / "models.toml"
    bad.write_text(f'[[models]]\nname = "x"\nsource = "{sd_models / "tiny-sd"}"\nfamily = "sd4"\n')
    with pytest.raises(ValueError, match="unknown family 'sd4'"):  # the backend knows its families
        DiffusersBackend(load_models_file(bad)[0]).validate()
