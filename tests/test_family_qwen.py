"""The Qwen-Image families through the public surface: Qwen-Image (text to image, and
image to image and inpainting through diffusers' QwenImageImg2Img/Inpaint pipelines),
Qwen-Image-Edit (native editing of one reference) and Qwen-Image-Edit-Plus (several
references natively).

Tiny random pipelines of the real diffusers/transformers classes are saved to folders once
per session, served from one models file (so the models-file path and family detection
from model_index.json are exercised), and driven with the official openai SDK against a
real uvicorn (in-process transports buffer streams). Which pipeline ran, on which
references and at which size is read by an observer around the backend's batch call (the
real call runs); the ledger is read straight from SQLite.

The edit checkpoints carry a `Qwen2VLProcessor` as a real one does; there is no
torchvision here, so the server loads it without its video part (see
`_image_only_processors`) — that path is what these tests exercise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import openai
import pytest
import torch

from families.harness import Live, bucket, decode, edit, gen, noise, png, rect_mask, serve
from families.qwen_family import SIZE_MULTIPLE, VISION_MAX_PIXELS, build_qwen_image, build_qwen_image_edit
from imagegate.backends.diffusers import detect_family
from imagegate.backends.diffusers.families import FAMILIES

QUALITY = "{low = [2, 5.0], medium = [2, 5.0], high = [2, 5.0]}"
FOLDERS = {"qwen-image": "tiny-qwen-image", "qwen-image-edit": "tiny-qwen-image-edit",
           "qwen-image-edit-plus": "tiny-qwen-image-edit-plus"}  # served under the family's name
EDITORS = ["qwen-image-edit", "qwen-image-edit-plus"]


# -- models: built once per session, served from one models file -------------------------
@pytest.fixture(scope="session")
def qwen_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen-family")
    build_qwen_image(root, FOLDERS["qwen-image"])
    build_qwen_image_edit(root, FOLDERS["qwen-image-edit"])
    build_qwen_image_edit(root, FOLDERS["qwen-image-edit-plus"], plus=True)
    # fp32: "auto" may pick bf16 on CPUs with native bf16, and these tests compare bytes.
    tables = [f'[[models]]\nname = "{fam}"\nsource = "{folder}"\nnative_size = 128\n'
              f'size_multiple = {SIZE_MULTIPLE}\ndtype = "float32"\nquality = {QUALITY}\n'
              for fam, folder in FOLDERS.items()]
    (root / "models.toml").write_text("\n".join(tables))
    return root


@pytest.fixture(scope="module")
def live(qwen_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serve(qwen_models / "models.toml", tmp_path_factory.mktemp("qwen-family-app")) as live:
        yield live


# -- detection and the family rows -------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_family_is_detected_from_model_index(live: Live, qwen_models: Path, family: str) -> None:
    folder = qwen_models / FOLDERS[family]
    assert detect_family(str(folder)) == family
    backend = live.backend(family)
    assert backend.family.name == family  # the models file names no family: detected
    assert set(backend.modes) == set(FAMILIES[family].modes)
    assert backend.config.quality == dict.fromkeys(("low", "medium", "high"), (2, 5.0))
    assert FAMILIES[family].cfg_param == "true_cfg_scale" and FAMILIES[family].latents == "packed"


def test_edit_checkpoints_load_their_vision_language_processor(live: Live) -> None:
    from transformers import Qwen2VLProcessor

    for family in EDITORS:
        index = json.loads((Path(live.backend(family).config.source) / "model_index.json").read_text())
        assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
        processor = live.backend(family).pipes["edit"].processor
        assert isinstance(processor, Qwen2VLProcessor)
        assert processor.image_processor.size["longest_edge"] == VISION_MAX_PIXELS  # ours, from the folder


# -- Qwen-Image: text to image ------------------------------------------------------------
def test_text_to_image_has_the_exact_non_square_size(live: Live) -> None:
    calls = live.observe("qwen-image")
    raw, r = gen(live, "qwen-image", size="1536x1024")
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert r.size == "1536x1024"
    want = bucket(live, "qwen-image", 1536, 1024)
    assert want == (160, 96)
    assert calls[-1].mode == "txt2img" and calls[-1].pipeline == "QwenImagePipeline"
    assert calls[-1].sizes == [want]
    row = live.row(raw)
    assert (row["params"]["gen_width"], row["params"]["gen_height"]) == want
    assert row["params"]["steps"] == 2


def test_seed_reproduces_bytes(live: Live) -> None:
    a = gen(live, "qwen-image", size="1024x1024")[1].data[0].b64_json
    b = gen(live, "qwen-image", size="1024x1024")[1].data[0].b64_json
    other = gen(live, "qwen-image", size="1024x1024", extra_body={"seed": 8})[1].data[0].b64_json
    assert a == b
    assert other != a


def test_true_cfg_runs_with_and_without_a_negative_prompt(live: Live) -> None:
    """Qwen-Image applies CFG (true_cfg_scale) only when given a negative prompt: without
    one the backend sends " ", so an explicit " " gives the same bytes, and a real
    negative prompt changes the image."""
    none = gen(live, "qwen-image", size="1024x1024")[1].data[0].b64_json
    space = gen(live, "qwen-image", size="1024x1024", extra_body={"negative_prompt": " "})[1].data[0].b64_json
    blurry = gen(live, "qwen-image", size="1024x1024", extra_body={"negative_prompt": "blurry"})[1].data[0].b64_json
    assert none == space
    assert blurry != none
    off = gen(live, "qwen-image", size="1024x1024", extra_body={"guidance_scale": 1.0})[1].data[0].b64_json
    assert off != none  # true_cfg_scale is what the preset's guidance drives


# -- Qwen-Image: image to image and inpainting (QwenImageImg2Img / Inpaint pipelines) -----
def test_image_to_image_keeps_the_bucket_and_follows_input_fidelity(live: Live) -> None:
    calls = live.observe("qwen-image")
    src = noise(96, 64)
    steps = {"num_inference_steps": 4}  # strength 0.75 runs the last 3 steps, 0.5 the last 2
    raw, low = edit(live, "qwen-image", image=png(src), size="auto", input_fidelity="low", extra_body=steps)
    assert calls[-1].mode == "img2img" and calls[-1].pipeline == "QwenImageImg2ImgPipeline"
    # without height/width the pipeline would work at its default_sample_size square
    assert calls[-1].sizes == [bucket(live, "qwen-image", 96, 64)]
    raw_high, high = edit(live, "qwen-image", image=png(src), size="auto", input_fidelity="high", extra_body=steps)
    assert decode(low.data[0].b64_json).size == (96, 64)  # size=auto: the input's size
    assert "x-imagegate-composited" not in raw.headers
    assert live.row(raw)["params"]["strength"] == 0.75
    assert live.row(raw_high)["params"]["strength"] == 0.5
    assert low.data[0].b64_json != high.data[0].b64_json
    assert "input_fidelity" not in raw.headers.get("x-imagegate-notes", "")  # it did something


def test_several_images_are_composited_for_image_to_image(live: Live) -> None:
    calls = live.observe("qwen-image")
    files = [png(noise(64, 64, seed=s), f"ref{s}.png") for s in range(3)]
    raw, r = edit(live, "qwen-image", image=files, size="1536x1024")
    assert raw.headers["x-imagegate-composited"] == "3"
    assert calls[-1].mode == "img2img"
    assert decode(r.data[0].b64_json).size == (1536, 1024)


def test_inpaint_keeps_every_pixel_outside_the_mask(live: Live) -> None:
    calls = live.observe("qwen-image")
    src = noise(96, 64, seed=3)
    box = (24, 16, 72, 48)
    _raw, r = edit(live, "qwen-image", image=png(src), mask=png(rect_mask(src.size, box), "mask.png"), size="auto")
    assert calls[-1].mode == "inpaint" and calls[-1].pipeline == "QwenImageInpaintPipeline"
    assert calls[-1].sizes == [bucket(live, "qwen-image", 96, 64)]
    out = np.asarray(decode(r.data[0].b64_json).convert("RGB"))
    assert out.shape == (64, 96, 3)  # size=auto: the input's size
    keep = np.ones(out.shape[:2], dtype=bool)
    keep[box[1]:box[3], box[0]:box[2]] = False
    np.testing.assert_array_equal(out[keep], np.asarray(src)[keep])
    assert not np.array_equal(out[~keep], np.asarray(src)[~keep])  # and the region was repainted


# -- Qwen-Image-Edit: one reference natively, several composited --------------------------
def test_edit_takes_one_reference_natively(live: Live) -> None:
    calls = live.observe("qwen-image-edit")
    src = noise(96, 64, seed=5)
    raw, r = edit(live, "qwen-image-edit", image=png(src), size="auto", input_fidelity="high")
    assert calls[-1].mode == "edit" and calls[-1].pipeline == "QwenImageEditPipeline"
    assert calls[-1].sizes == [bucket(live, "qwen-image-edit", 96, 64)]
    assert len(calls[-1].references) == 1
    assert decode(r.data[0].b64_json).size == (96, 64)
    assert "x-imagegate-composited" not in raw.headers
    # native editing has no strength: the knob is reported, not silently dropped
    assert "input_fidelity=high has no effect" in raw.headers["x-imagegate-notes"]
    again = edit(live, "qwen-image-edit", image=png(src), size="auto")[1].data[0].b64_json
    assert again == r.data[0].b64_json  # same seed, same reference: same bytes


def test_edit_composites_several_images_into_one_reference(live: Live) -> None:
    calls = live.observe("qwen-image-edit")
    files = [png(noise(64, 64, seed=s), f"ref{s}.png") for s in range(2)]
    raw, r = edit(live, "qwen-image-edit", image=files, size="1536x1024",
                  extra_body={"negative_prompt": "blurry"})  # taken, as true CFG's negative
    assert raw.headers["x-imagegate-composited"] == "2"
    assert "composited" in raw.headers["x-imagegate-notes"]
    assert calls[-1].mode == "edit" and len(calls[-1].references) == 1
    assert calls[-1].sizes == [bucket(live, "qwen-image-edit", 1536, 1024)]
    assert decode(r.data[0].b64_json).size == (1536, 1024)


def test_edit_plus_takes_several_references_natively(live: Live) -> None:
    calls = live.observe("qwen-image-edit-plus")
    files = [png(noise(96, 64, seed=1), "a.png"), png(noise(64, 96, seed=2), "b.png")]
    raw, r = edit(live, "qwen-image-edit-plus", image=files, size="1536x1024", input_fidelity="low")
    assert "x-imagegate-composited" not in raw.headers  # multi-reference: nothing composited
    assert calls[-1].mode == "edit" and calls[-1].pipeline == "QwenImageEditPlusPipeline"
    assert len(calls[-1].references) == 2
    assert calls[-1].references[0][0] > calls[-1].references[0][1]  # each keeps its own aspect
    assert calls[-1].references[1][0] < calls[-1].references[1][1]
    assert calls[-1].sizes == [bucket(live, "qwen-image-edit-plus", 1536, 1024)]
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert "input_fidelity=low has no effect" in raw.headers["x-imagegate-notes"]
    one = edit(live, "qwen-image-edit-plus", image=files[:1], size="1536x1024")[1].data[0].b64_json
    assert one != r.data[0].b64_json  # the second reference reached the model
    again = edit(live, "qwen-image-edit-plus", image=files[:1], size="1536x1024")[1].data[0].b64_json
    assert again == one  # same seed, same references: same bytes


@pytest.mark.parametrize("model", EDITORS)
def test_edit_models_refuse_what_they_cannot_do(live: Live, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gen(live, model, size="1024x1024")
    assert e.value.param == "model"
    src = noise(64, 64)
    with pytest.raises(openai.BadRequestError) as e:
        edit(live, model, image=png(src), mask=png(rect_mask(src.size, (0, 0, 32, 32)), "mask.png"))
    assert e.value.param == "mask"


# -- streaming previews ----------------------------------------------------------------------
@pytest.mark.parametrize(("model", "task"), [("qwen-image", "generate"), ("qwen-image", "inpaint"),
                                        ("qwen-image-edit", "edit"), ("qwen-image-edit-plus", "edit")])
def test_stream_sends_two_partial_images_at_the_requested_size(live: Live, model: str, task: str) -> None:
    common: dict[str, Any] = dict(model=model, prompt="a red circle", stream=True, partial_images=2,
                                  extra_body={"num_inference_steps": 4, "seed": 1})
    if task == "generate":
        events = list(live.sdk.images.generate(size="1536x1024", **common))
        size = (1536, 1024)
    else:
        src = noise(96, 64, seed=6)
        mask = png(rect_mask(src.size, (24, 16, 72, 48)), "mask.png") if task == "inpaint" else openai.omit
        events = list(live.sdk.images.edit(image=png(src), mask=mask, size="auto", **common))
        size = (96, 64)
    prefix = "image_generation" if task == "generate" else "image_edit"
    partial = [e for e in events if e.type == f"{prefix}.partial_image"]
    done = [e for e in events if e.type == f"{prefix}.completed"]
    assert [e.partial_image_index for e in partial] == [0, 1]
    assert len(done) == 1
    for e in partial + done:
        assert decode(e.b64_json).size == size


@pytest.mark.parametrize(("model", "mode"), [("qwen-image", "txt2img"), ("qwen-image-edit", "edit")])
def test_preview_of_the_last_latents_is_the_final_image(live: Live, model: str, mode: str) -> None:
    """The preview decoder applied to the last step's latents gives the pipeline's own
    output: Qwen's 2x2-packed latents are unpacked to the video VAE's 5-D layout, its
    per-channel latents_mean/latents_std undone, and the single frame taken."""
    backend = live.backend(model)
    pipe = backend.pipes[mode]
    w, h = bucket(live, model, 1536, 1024)
    last: dict[str, torch.Tensor] = {}

    def grab(p: Any, step: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        last["latents"] = kw["latents"].clone()
        return kw

    kw: dict[str, Any] = dict(prompt="a red circle", negative_prompt=" ", true_cfg_scale=4.0, height=h, width=w,
                              num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                              callback_on_step_end=grab, output_type="np")
    if mode == "edit":
        kw["image"] = noise(w, h)
    with torch.inference_mode():
        final = pipe(**kw).images[0]
        job = SimpleNamespace(spec=SimpleNamespace(gen_width=w, gen_height=h), mode="txt2img")  # all preview reads
        preview = backend.preview(pipe, last["latents"], job)[0]
    assert last["latents"].ndim == 3  # packed: (batch, tokens, channels x 4)
    assert preview.size == (w, h)
    want = (final * 255).round().astype(np.int16)
    got = np.asarray(preview).astype(np.int16)
    assert np.abs(want - got).max() <= 1
