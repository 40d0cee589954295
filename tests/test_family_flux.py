"""The FLUX families through the public surface: FLUX.1 dev (and its schnell presets),
FLUX.1 Fill (beside FLUX.1 as its `inpaint_source`, and served alone), FLUX.1 Kontext and
FLUX.2.

Tiny random pipelines of the real diffusers classes are saved to folders once per
session, served from one models file (so the models-file path, relative sources and
family detection are exercised), and driven with the official openai SDK against a real
uvicorn (streams are buffered by in-process transports). The ledger is read straight from
SQLite: the server's engine lives on its own event loop. Which pipeline ran, and at which
size, is read by an observer around the backend's batch call (the real call runs)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import openai
import pytest
import torch
from PIL import Image

from families.flux_family import (
    build_tiny_flux,
    build_tiny_flux2,
    build_tiny_flux_fill,
    build_tiny_flux_kontext,
    model_class,
)
from families.harness import Live, bucket, decode, edit, gen, noise, png, rect_mask, serve
from imagegate.backends.diffusers import detect_family
from imagegate.backends.diffusers.families import FAMILIES

# Tiny models: 2 steps at every tier unless a test asks for more.
QUALITY = "{low = [2, 5.0], medium = [2, 5.0], high = [2, 5.0]}"
FOLDERS = {"flux": "tiny-flux", "flux-fill": "tiny-flux-fill", "flux-kontext": "tiny-flux-kontext",
           "flux2": "tiny-flux2"}  # family → folder; each is also served under its family's name
# FLUX.2 checks every reference image is at least 64 px a side (Flux2ImageProcessor.check_image_input):
# at a 64 px bucket a 3:2 reference would be 80x48, so it gets a 128 px one.
NATIVE = {"flux": 64, "flux-fill": 64, "flux-kontext": 64, "flux2": 128}
GENERATORS = ["flux", "flux-kontext", "flux2"]  # the models that take text alone


# -- models: built once per session, served from one models file -------------------------
@pytest.fixture(scope="session")
def flux_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flux-family")
    for build in (build_tiny_flux, build_tiny_flux_fill, build_tiny_flux_kontext, build_tiny_flux2):
        build(root)
    tables = [f'[[models]]\nname = "{fam}"\nsource = "{folder}"\nnative_size = {NATIVE[fam]}\nquality = {QUALITY}\n'
              for fam, folder in FOLDERS.items()]
    # schnell: the family named in the file, the presets left to the family row
    tables.append('[[models]]\nname = "flux-schnell"\nsource = "tiny-flux"\nfamily = "flux-schnell"\n'
                  'native_size = 64\n')
    # FLUX.1 with FLUX.1 Fill for masks
    tables.append(f'[[models]]\nname = "flux-with-fill"\nsource = "tiny-flux"\ninpaint_source = "tiny-flux-fill"\n'
                  f'native_size = 64\nquality = {QUALITY}\n')
    (root / "models.toml").write_text("\n".join(tables))
    return root


@pytest.fixture(scope="module")
def live(flux_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serve(flux_models / "models.toml", tmp_path_factory.mktemp("flux-family-app")) as live:
        yield live


# -- detection and the family rows -------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_family_is_detected_from_model_index(live: Live, flux_models: Path, family: str) -> None:
    folder = flux_models / FOLDERS[family]
    assert detect_family(str(folder)) == family
    assert model_class(folder) in FAMILIES[family].modes.values()
    if "txt2img" in FAMILIES[family].modes:
        gen(live, family, size="1024x1024")  # loaded (models may load on first use)
    else:
        src = noise(64, 64)
        edit(live, family, image=png(src), mask=png(rect_mask(src.size, (0, 0, 32, 32)), "mask.png"))
    backend = live.backend(family)
    assert backend.family.name == family  # the models file names no family: detected
    assert set(backend.modes) == set(FAMILIES[family].modes)
    assert not FAMILIES[family].negative_prompt


# -- text to image -----------------------------------------------------------------------
@pytest.mark.parametrize("model", [*GENERATORS, "flux-with-fill"])
def test_text_to_image_has_the_exact_non_square_size(live: Live, model: str) -> None:
    calls = live.observe(model)
    raw, r = gen(live, model, size="1536x1024")
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert r.size == "1536x1024"
    # generated at the model's own bucket, resized after: Kontext (which rescales to
    # max_area and snaps to its preferred resolutions unless told not to) keeps it too
    want = bucket(live, model, 1536, 1024)
    assert calls[-1].sizes == [want]
    assert calls[-1].pipeline == FAMILIES[live.backend(model).family.name].modes["txt2img"]
    row = live.row(raw)
    assert (row["params"]["gen_width"], row["params"]["gen_height"]) == want
    assert row["params"]["steps"] == 2


@pytest.mark.parametrize("model", GENERATORS)
def test_seed_reproduces_bytes(live: Live, model: str) -> None:
    a = gen(live, model, size="1024x1024")[1].data[0].b64_json
    b = gen(live, model, size="1024x1024")[1].data[0].b64_json
    other = gen(live, model, size="1024x1024", extra_body={"seed": 8})[1].data[0].b64_json
    assert a == b
    assert other != a


@pytest.mark.parametrize("model", [*GENERATORS, "flux-fill", "flux-schnell"])
def test_negative_prompt_is_refused_naming_the_parameter(live: Live, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gen(live, model, size="1024x1024", extra_body={"negative_prompt": "blurry"})
    assert e.value.param == "negative_prompt"


def test_schnell_presets_come_from_the_family_named_in_the_models_file(live: Live) -> None:
    calls = live.observe("flux-schnell")
    seen = {}
    for tier in ("low", "medium"):
        raw, r = gen(live, "flux-schnell", size="1024x1024", quality=tier)
        row = live.row(raw)
        seen[tier] = (row["params"]["steps"], row["params"]["guidance"])
        assert decode(r.data[0].b64_json).size == (1024, 1024)
    assert seen == {"low": (1, 0.0), "medium": (4, 0.0)}
    assert calls[-1].guidance == 0.0
    backend = live.backend("flux-schnell")
    assert backend.family.name == "flux-schnell"
    assert backend.config.quality == dict(FAMILIES["flux-schnell"].quality)
    assert detect_family(backend.config.source) == "flux"  # same classes as dev: only the file tells


# -- image to image (FLUX.1: no native editing) --------------------------------------------
def test_flux_image_to_image_keeps_the_bucket_and_follows_input_fidelity(live: Live) -> None:
    calls = live.observe("flux")
    src = noise(96, 64)
    steps = {"num_inference_steps": 4}  # strength 0.75 runs the last 3 steps, 0.5 the last 2
    raw, low = edit(live, "flux", image=png(src), size="auto", input_fidelity="low", extra_body=steps)
    assert calls[-1].mode == "img2img" and calls[-1].pipeline == "FluxImg2ImgPipeline"
    # FluxImg2ImgPipeline would resize to its 1024x1024 default without height/width
    assert calls[-1].sizes == [bucket(live, "flux", 96, 64)]
    raw_high, high = edit(live, "flux", image=png(src), size="auto", input_fidelity="high", extra_body=steps)
    assert decode(low.data[0].b64_json).size == (96, 64)  # size=auto: the input's size
    assert "x-imagegate-composited" not in raw.headers
    assert live.row(raw)["params"]["strength"] == 0.75
    assert live.row(raw_high)["params"]["strength"] == 0.5
    assert low.data[0].b64_json != high.data[0].b64_json
    assert "input_fidelity" not in raw.headers.get("x-imagegate-notes", "")  # it did something


def test_flux_composites_several_images_for_image_to_image(live: Live) -> None:
    files = [png(noise(64, 64, seed=s), f"ref{s}.png") for s in range(3)]
    raw, r = edit(live, "flux", image=files, size="1024x1024")
    assert raw.headers["x-imagegate-composited"] == "3"
    assert decode(r.data[0].b64_json).size == (1024, 1024)


# -- inpainting ----------------------------------------------------------------------------
INPAINTERS = {"flux": "FluxInpaintPipeline", "flux-with-fill": "FluxFillPipeline", "flux-fill": "FluxFillPipeline",
              "flux-kontext": "FluxKontextInpaintPipeline"}


@pytest.mark.parametrize("model", sorted(INPAINTERS))
def test_inpaint_keeps_every_pixel_outside_the_mask(live: Live, model: str) -> None:
    calls = live.observe(model)
    src = noise(96, 64, seed=3)
    box = (24, 16, 72, 48)
    _raw, r = edit(live, model, image=png(src), mask=png(rect_mask(src.size, box), "mask.png"), size="auto")
    assert calls[-1].mode == "inpaint" and calls[-1].pipeline == INPAINTERS[model]
    assert calls[-1].sizes == [bucket(live, model, 96, 64)]
    out = np.asarray(decode(r.data[0].b64_json).convert("RGB"))
    assert out.shape == (64, 96, 3)  # size=auto: the input's size
    keep = np.ones(out.shape[:2], dtype=bool)
    keep[box[1]:box[3], box[0]:box[2]] = False
    np.testing.assert_array_equal(out[keep], np.asarray(src)[keep])
    assert not np.array_equal(out[~keep], np.asarray(src)[~keep])  # and the region was repainted


def test_fill_beside_flux_takes_masks_with_its_own_guidance(live: Live) -> None:
    calls = live.observe("flux-with-fill")
    backend = live.backend("flux-with-fill")
    src = noise(64, 64, seed=4)
    mask = png(rect_mask(src.size, (16, 16, 48, 48)), "mask.png")
    edit(live, "flux-with-fill", image=png(src), mask=mask, size="auto")
    assert type(backend.pipes["inpaint"]).__name__ == "FluxFillPipeline"
    assert type(backend.pipes["txt2img"]).__name__ == "FluxPipeline"
    # The preset's guidance (5 here) is FLUX.1's; Fill runs at its own family's (30) ...
    assert calls[-1].pipeline == "FluxFillPipeline" and calls[-1].guidance == FAMILIES["flux-fill"].quality["medium"][1]
    # ... unless the request sets one.
    edit(live, "flux-with-fill", image=png(src), mask=mask, size="auto", extra_body={"guidance_scale": 7.0})
    assert calls[-1].guidance == 7.0
    # Masks go to Fill; text and mask-less edits stay with FLUX.1.
    gen(live, "flux-with-fill", size="1024x1024")
    assert calls[-1].pipeline == "FluxPipeline" and calls[-1].guidance == 5.0
    edit(live, "flux-with-fill", image=png(src), size="auto")
    assert calls[-1].pipeline == "FluxImg2ImgPipeline"


def test_fill_alone_refuses_what_it_cannot_do(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gen(live, "flux-fill", size="1024x1024")
    assert e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        edit(live, "flux-fill", image=png(noise(64, 64)), size="auto")
    assert e.value.param == "image"


# -- native editing ------------------------------------------------------------------------
def test_kontext_edits_one_image_natively_at_our_bucket(live: Live) -> None:
    calls = live.observe("flux-kontext")
    src = noise(96, 64, seed=5)
    raw, r = edit(live, "flux-kontext", image=png(src), size="auto", input_fidelity="high")
    assert calls[-1].mode == "edit" and calls[-1].pipeline == "FluxKontextPipeline"
    assert calls[-1].sizes == [bucket(live, "flux-kontext", 96, 64)]  # _auto_resize=False, max_area = bucket
    assert len(calls[-1].references) == 1
    assert decode(r.data[0].b64_json).size == (96, 64)
    assert "x-imagegate-composited" not in raw.headers
    # native editing has no strength: the knob is reported, not silently dropped
    assert "input_fidelity=high has no effect" in raw.headers["x-imagegate-notes"]
    assert edit(live, "flux-kontext", image=png(src), size="auto")[1].data[0].b64_json == r.data[0].b64_json


def test_kontext_composites_several_images_into_one_reference(live: Live) -> None:
    calls = live.observe("flux-kontext")
    files = [png(noise(64, 64, seed=s), f"ref{s}.png") for s in range(2)]
    raw, r = edit(live, "flux-kontext", image=files, size="1536x1024")
    assert raw.headers["x-imagegate-composited"] == "2"
    assert "composited" in raw.headers["x-imagegate-notes"]
    assert calls[-1].mode == "edit" and len(calls[-1].references) == 1
    assert decode(r.data[0].b64_json).size == (1536, 1024)


def test_flux2_takes_several_references_natively(live: Live) -> None:
    calls = live.observe("flux2")
    files = [png(noise(96, 64, seed=1), "a.png"), png(noise(64, 96, seed=2), "b.png")]
    raw, r = edit(live, "flux2", image=files, size="1536x1024", input_fidelity="low")
    assert "x-imagegate-composited" not in raw.headers  # multi-reference: nothing composited
    assert calls[-1].mode == "edit" and calls[-1].pipeline == "Flux2Pipeline"
    assert len(calls[-1].references) == 2
    assert calls[-1].references[0][0] > calls[-1].references[0][1]  # each keeps its own aspect
    assert calls[-1].references[1][0] < calls[-1].references[1][1]
    assert calls[-1].sizes == [bucket(live, "flux2", 1536, 1024)]
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert "input_fidelity=low has no effect" in raw.headers["x-imagegate-notes"]
    again = edit(live, "flux2", image=files, size="1536x1024")[1].data[0].b64_json
    one = edit(live, "flux2", image=files[:1], size="1536x1024")[1].data[0].b64_json
    assert again == r.data[0].b64_json  # same seed, same references: same bytes
    assert one != again  # the second reference reached the model


def test_flux2_refuses_a_mask(live: Live) -> None:
    src = noise(128, 128)
    with pytest.raises(openai.BadRequestError) as e:
        edit(live, "flux2", image=png(src), mask=png(rect_mask(src.size, (0, 0, 64, 64)), "mask.png"))
    assert e.value.param == "mask"


# -- streaming previews ----------------------------------------------------------------------
@pytest.mark.parametrize(("model", "task"), [("flux", "generate"), ("flux-kontext", "edit"), ("flux2", "generate"),
                                        ("flux2", "edit"), ("flux-with-fill", "inpaint")])
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


@pytest.mark.parametrize(("model", "mode"), [("flux", "txt2img"), ("flux-kontext", "txt2img"), ("flux2", "txt2img"),
                                        ("flux-fill", "inpaint")])
def test_preview_of_the_last_latents_is_the_final_image(live: Live, model: str, mode: str) -> None:
    """The preview decoder (unpack, undo the latent normalisation, VAE) applied to the
    latents of the last step gives the pipeline's own output: the layouts are right —
    FLUX.1's packed 2x2 patches and scale/shift, FLUX.2's position-id scatter, latent
    batch-norm (non-trivial running stats in the tiny VAE) and patch unfolding."""
    if mode == "txt2img":
        gen(live, model, size="1024x1024")  # loaded
    backend = live.backend(model)
    pipe = backend.pipes[mode]
    w, h = bucket(live, model, 1536, 1024)
    last: dict[str, torch.Tensor] = {}

    def grab(p: Any, step: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        last["latents"] = kw["latents"].clone()
        return kw

    kw: dict[str, Any] = dict(prompt="a red circle", height=h, width=w, num_inference_steps=2,
                              generator=torch.Generator().manual_seed(0), callback_on_step_end=grab, output_type="np")
    if mode == "inpaint":
        kw.update(image=noise(w, h), mask_image=Image.new("L", (w, h), 255))
    if "max_area" in inspect.signature(pipe.__call__).parameters:
        kw.update(max_area=w * h, _auto_resize=False)  # Kontext: keep the bucket, as the backend does
    with torch.inference_mode():
        final = pipe(**kw).images[0]
        # preview only reads the bucket from the job
        job = SimpleNamespace(spec=SimpleNamespace(gen_width=w, gen_height=h), mode="txt2img")
        preview = backend.preview(pipe, last["latents"], job)[0]
    assert preview.size == (w, h)
    want = (final * 255).round().astype(np.int16)
    got = np.asarray(preview).astype(np.int16)
    assert np.abs(want - got).max() <= 1
