"""PixArt-Σ and Sana through the public surface: text to image only (an input image or a
mask is a 400 naming the parameter), previews while streaming, cancellation between steps,
negative prompts and seeds.

Tiny random pipelines of the real diffusers/transformers classes are saved to folders once
per session, served from one models file (family detection from model_index.json), and
driven with the official openai SDK against a real uvicorn (in-process transports buffer
streams). PixArt-Σ still uses the legacy `callback`/`callback_steps` API, Sana
`callback_on_step_end`: both must give previews and stop on cancellation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import openai
import pytest
import torch
from PIL import Image

from families.dit_family import build_pixart_sigma, build_sana
from families.harness import Live, bucket, decode, gen, noise, png, serve
from imagegate.backends.diffusers import detect_family
from imagegate.backends.diffusers.families import FAMILIES
from imagegate.engine.base import JobRuntime, RunCancelled
from imagegate.normalize import build_spec

QUALITY = "{low = [2, 5.0], medium = [2, 5.0], high = [2, 5.0]}"
FOLDERS = {"pixart-sigma": "tiny-pixart-sigma", "sana": "tiny-sana"}  # served under the family's name
NATIVE = {"pixart-sigma": 64, "sana": 128}  # Sana's buckets are multiples of 32 (its DC-AE's 32x)
PIPELINES = {"pixart-sigma": "PixArtSigmaPipeline", "sana": "SanaPipeline"}
MODELS = sorted(FOLDERS)


# -- models: built once per session, served from one models file -------------------------
@pytest.fixture(scope="session")
def dit_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dit-family")
    build_pixart_sigma(root, FOLDERS["pixart-sigma"])
    build_sana(root, FOLDERS["sana"])
    # fp32: "auto" may pick bf16 on CPUs with native bf16, and these tests compare bytes.
    tables = [f'[[models]]\nname = "{fam}"\nsource = "{folder}"\nnative_size = {NATIVE[fam]}\n'
              f'dtype = "float32"\nquality = {QUALITY}\n' for fam, folder in FOLDERS.items()]
    (root / "models.toml").write_text("\n".join(tables))
    return root


@pytest.fixture(scope="module")
def live(dit_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serve(dit_models / "models.toml", tmp_path_factory.mktemp("dit-family-app")) as live:
        yield live


# -- detection ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", MODELS)
def test_family_is_detected_from_model_index(live: Live, dit_models: Path, family: str) -> None:
    assert detect_family(str(dit_models / FOLDERS[family])) == family
    backend = live.backend(family)
    assert backend.family.name == family  # the models file names no family: detected
    assert set(backend.modes) == {"txt2img"} == set(FAMILIES[family].modes)
    assert backend.config.size_multiple == FAMILIES[family].size_multiple


# -- text to image ------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_text_to_image_has_the_exact_non_square_size(live: Live, model: str) -> None:
    """use_resolution_binning=False keeps our bucket: with binning the pipelines would snap
    to their own aspect-ratio table (and the tiny transformers' sample size has none)."""
    calls = live.observe(model)
    raw, r = gen(live, model, size="1536x1024")
    assert decode(r.data[0].b64_json).size == (1536, 1024)
    assert r.size == "1536x1024"
    want = bucket(live, model, 1536, 1024)
    assert want[0] > want[1]
    assert calls[-1].mode == "txt2img" and calls[-1].pipeline == PIPELINES[model]
    assert calls[-1].sizes == [want]
    row = live.row(raw)
    assert (row["params"]["gen_width"], row["params"]["gen_height"]) == want
    assert row["params"]["steps"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_seed_reproduces_bytes_and_negative_prompt_is_taken(live: Live, model: str) -> None:
    a = gen(live, model, size="1024x1024")[1].data[0].b64_json
    b = gen(live, model, size="1024x1024")[1].data[0].b64_json
    other = gen(live, model, size="1024x1024", extra_body={"seed": 8})[1].data[0].b64_json
    assert a == b
    assert other != a
    neg = gen(live, model, size="1024x1024", extra_body={"negative_prompt": "blurry"})[1].data[0].b64_json
    assert neg != a  # reached the pipeline (classifier-free guidance's unconditional branch)


@pytest.mark.parametrize("model", MODELS)
def test_images_and_masks_are_refused_naming_the_parameter(live: Live, model: str) -> None:
    src = noise(64, 64)
    with pytest.raises(openai.BadRequestError) as e:
        live.sdk.images.edit(model=model, image=png(src), prompt="make it blue")
    assert e.value.param == "image"
    mask = Image.new("RGBA", src.size, (0, 0, 0, 0))
    with pytest.raises(openai.BadRequestError) as e:
        live.sdk.images.edit(model=model, image=png(src), mask=png(mask, "mask.png"), prompt="make it blue")
    assert e.value.param == "mask"


# -- streaming previews and cancellation --------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_stream_sends_two_partial_images_at_the_requested_size(live: Live, model: str) -> None:
    events = list(live.sdk.images.generate(model=model, prompt="a red circle", size="1536x1024", stream=True,
                                           partial_images=2, extra_body={"num_inference_steps": 4, "seed": 1}))
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    done = [e for e in events if e.type == "image_generation.completed"]
    assert [e.partial_image_index for e in partial] == [0, 1]
    assert len(done) == 1
    for e in partial + done:
        assert decode(e.b64_json).size == (1536, 1024)
    assert decode(partial[0].b64_json).tobytes() != decode(done[0].b64_json).tobytes()


@pytest.mark.parametrize("model", MODELS)
def test_cancellation_stops_between_steps(live: Live, model: str) -> None:
    """A job cancelled after its second step never runs a third: for PixArt-Σ through the
    legacy callback, for Sana through callback_on_step_end."""
    backend = live.backend(model)
    spec = build_spec(task="generate", model=backend.config, requested_model=model, prompt="a red circle", n=1,
                      size="1024x1024", quality="low", background=None, output_format="png",
                      output_compression=None, response_format="b64_json", stream=False, partial_images=None,
                      seed=0, num_inference_steps=6)
    runtime = JobRuntime()
    steps: list[int] = []

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        assert total == 6
        if step == 2:
            runtime.cancel.set()

    runtime.on_step = on_step
    with pytest.raises(RunCancelled):
        backend.run(backend.plan(spec), runtime)
    assert steps == [1, 2]


@pytest.mark.parametrize("model", MODELS)
def test_preview_of_the_last_latents_is_the_final_image(live: Live, model: str) -> None:
    """The preview decoder applied to the last step's latents gives the pipeline's own
    output: spatial latents, the VAE's scaling_factor undone (AutoencoderKL for PixArt-Σ,
    AutoencoderDC for Sana)."""
    backend = live.backend(model)
    pipe = backend.pipes["txt2img"]
    w, h = bucket(live, model, 1536, 1024)
    last: dict[str, torch.Tensor] = {}
    kw: dict[str, Any] = dict(prompt="a red circle", height=h, width=w, num_inference_steps=2,
                              generator=torch.Generator().manual_seed(0), output_type="np",
                              use_resolution_binning=False)
    if model == "pixart-sigma":
        kw.update(callback=lambda step, t, latents: last.update(latents=latents.clone()), callback_steps=1)
    else:
        def grab(p: Any, step: int, t: Any, k: dict[str, Any]) -> dict[str, Any]:
            last["latents"] = k["latents"].clone()
            return k

        kw["callback_on_step_end"] = grab
    with torch.inference_mode():
        final = pipe(**kw).images[0]
        job = SimpleNamespace(spec=SimpleNamespace(gen_width=w, gen_height=h), mode="txt2img")  # all preview reads
        preview = backend.preview(pipe, last["latents"], job)[0]
    assert last["latents"].ndim == 4  # spatial: (batch, channels, h, w)
    assert preview.size == (w, h)
    want = (final * 255).round().astype(np.int16)
    got = np.asarray(preview).astype(np.int16)
    assert np.abs(want - got).max() <= 1
