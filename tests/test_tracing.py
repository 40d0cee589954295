"""compile = "trace" (backends/diffusers/tracing.py): traced UNet steps give the same pixels as
eager ones, one graph serves every batch size of a shape, and anything the graph was not traced
for runs eagerly. The built-in model is the subject: it is the model that ships with "trace" on."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import tiny_config, with_options
from imagegate.backends.diffusers.backend import DiffusersBackend
from imagegate.backends.diffusers.options import DiffusersOptions
from imagegate.backends.diffusers.planning import plan
from imagegate.backends.diffusers.tracing import HOT_AFTER, TracedUNet
from imagegate.normalize import build_spec
from imagegate.registry import builtin_mini_config


@pytest.fixture(scope="module")
def backends() -> tuple[DiffusersBackend, DiffusersBackend]:
    eager = DiffusersBackend(with_options(builtin_mini_config(), compile="off"))
    traced = DiffusersBackend(builtin_mini_config())
    for backend in (eager, traced):
        backend.load()
    return eager, traced


def tracer(backend: DiffusersBackend) -> TracedUNet:
    forward = backend.main.unet.forward
    assert isinstance(forward, TracedUNet)
    return forward


def run(backend: DiffusersBackend, task: str = "generate", n: int = 1, size: str = "1024x1024",
        **kw: Any) -> list[np.ndarray]:
    config = backend.config
    spec = build_spec(task=task, model=config, requested_model=None, prompt=kw.pop("prompt", "a red star on a blue "
                      "background"), n=n, size=size, quality="low", background=None, output_format=None,
                      output_compression=None, response_format=None, stream=False, partial_images=None, seed=5)
    mode = "txt2img" if task == "generate" else kw.pop("mode")
    return [np.asarray(im) for im in backend.run(plan(config, False, spec, mode, kw.pop("images", []),
                                                      kw.pop("mask", None)))]


def test_the_builtin_model_ships_traced_and_the_eager_one_is_untouched(backends):
    eager, traced = backends
    assert traced.options.compile == "trace" and isinstance(traced.main.unet.forward, TracedUNet)
    assert not isinstance(eager.main.unet.forward, TracedUNet)
    assert DiffusersOptions.parse("m", {"compile": "trace"}).compile == "trace"
    with pytest.raises(ValueError, match="off, regional, full, graphs or trace"):
        DiffusersOptions.parse("m", {"compile": "jit"})


def test_a_signature_is_traced_only_once_hot(backends):
    _, traced = backends
    t = tracer(traced)
    t.hot_after = HOT_AFTER
    t.graphs.clear()
    t.seen.clear()
    run(traced)  # low quality: 4 steps, far below HOT_AFTER
    assert not t.graphs and sum(t.seen.values()) == 4 < HOT_AFTER


def test_traced_images_are_the_eager_images(backends):
    """Text to image at n=2 and n=1 (one graph for both batch sizes), an inpainting edit and an
    image-to-image edit: the same pixels as the eager backend's."""
    eager, traced = backends
    t = tracer(traced)
    t.hot_after = 0
    t.graphs.clear()
    a, b = run(eager, n=2), run(traced, n=2)
    assert len(a) == len(b) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    a, b = run(eager, n=1, prompt="a blue ring"), run(traced, n=1, prompt="a blue ring")  # batch 2, not 4
    assert np.array_equal(a[0], b[0]) and len(t.graphs) == 1
    picture = Image.new("RGB", (1024, 1024), (0, 160, 0))
    ImageDraw.Draw(picture).ellipse([600, 600, 800, 800], fill=(220, 0, 0))
    mask = Image.new("L", (1024, 1024), 0)
    ImageDraw.Draw(mask).rectangle([150, 150, 450, 450], fill=255)
    for mode, m in (("inpaint", mask), ("img2img", None)):
        a = run(eager, task="edit", mode=mode, images=[picture], mask=m, prompt="add a yellow star")
        b = run(traced, task="edit", mode=mode, images=[picture], mask=m, prompt="add a yellow star")
        assert np.array_equal(a[0], b[0]), mode


def test_each_shape_has_its_graph_and_odd_latents_stay_exact(backends):
    """A 36x36 latent is not a multiple of the UNet's down-sampling factor: diffusers then passes
    explicit upsample sizes, a Python branch the signature keys on (32x32 is the images' test)."""
    latent = 36
    eager, traced = backends
    t = tracer(traced)
    t.hot_after = 0
    unet = traced.main.unet
    x = torch.randn(3, 4, latent, latent, generator=torch.Generator().manual_seed(0))
    ehs = torch.randn(3, 48, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = eager.main.unet(x, torch.tensor(400), encoder_hidden_states=ehs).sample
        got = unet(x, torch.tensor(400), encoder_hidden_states=ehs).sample
        want_one = eager.main.unet(x[:1], 400, encoder_hidden_states=ehs[:1], return_dict=False)[0]
        got_one = unet(x[:1], 400, encoder_hidden_states=ehs[:1], return_dict=False)[0]  # a Python int timestep
    assert torch.equal(want, got) and torch.equal(want_one, got_one)
    assert any(key[0] == (4, latent, latent) for key in t.graphs)


def test_calls_the_graph_was_not_traced_for_run_eagerly(backends):
    _, traced = backends
    t = tracer(traced)
    t.hot_after = 0
    t.graphs.clear()
    unet = traced.main.unet
    x, ehs = torch.randn(2, 4, 32, 32), torch.randn(2, 48, unet.config.cross_attention_dim)
    with torch.inference_mode():
        unet(x, 10, encoder_hidden_states=ehs, cross_attention_kwargs={"scale": 0.5})
        unet(x, 10, encoder_hidden_states=ehs, mid_block_additional_residual=torch.zeros(2, 128, 4, 4))
    out = unet(x, 10, encoder_hidden_states=ehs).sample  # gradients on: training, not serving
    assert out.requires_grad and not t.graphs
    with torch.inference_mode():
        unet(x, 10, encoder_hidden_states=ehs, cross_attention_kwargs=None, added_cond_kwargs={})
    assert len(t.graphs) == 1


def test_a_failed_trace_is_logged_once_and_runs_eagerly(backends, monkeypatch, caplog):
    eager, traced = backends
    t = tracer(traced)
    t.hot_after = 0
    t.graphs.clear()
    t.failed.clear()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    with caplog.at_level(logging.WARNING, logger="imagegate.diffusers"):
        a, b = run(eager), run(traced)
    assert np.array_equal(a[0], b[0]) and not t.graphs and len(t.failed) == 1
    assert sum("tracing failed" in r.getMessage() for r in caplog.records) == 1


def test_trace_is_refused_beside_settings_a_graph_would_freeze(tiny_sd_path):
    """Step caching keeps per-step state in hooks; LoRA switching and fp8 likewise change what a
    traced graph would have fixed: a start-up error names the clash."""
    backend = DiffusersBackend(tiny_config(tiny_sd_path, compile="trace", cache="first-block"))
    with pytest.raises(ValueError, match='compile = "trace" cannot be combined with cache'):
        backend.load()
