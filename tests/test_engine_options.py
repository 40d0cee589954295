"""The speed settings run their real code paths at toy size on CPU, so they cannot rot
where no GPU is at hand; their speed is measured by bench/bench_engine.py, not here."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config, with_options
from imagegate.app import create_app
from imagegate.backends.diffusers import DiffusersBackend, cpu_has_native_bf16, pick_dtype
from imagegate.registry import _config_from_table


def test_cpu_dtype_follows_native_bf16() -> None:
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert pick_dtype("auto", "cpu") == expected
    assert pick_dtype("float32", "cpu") == torch.float32


@pytest.mark.parametrize("options", [
    {"channels_last": True, "vae_tiling": True, "vae_slicing": True},
    {"warmup_sizes": ("1024x1024", "1536x1024")},
])
async def test_options_apply_and_serve(tmp_path, tiny_sd_path, options) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tmp_path), [with_options(tiny_config(tiny_sd_path), **options)])
    async with running(app):
        backend = app.state.scheduler.worker("tiny-sd").backend
        if options.get("channels_last"):
            w = next(p for p in backend.main.unet.parameters() if p.ndim == 4)
            assert w.is_contiguous(memory_format=torch.channels_last)
        if options.get("warmup_sizes"):
            assert app.state.scheduler.worker("tiny-sd").backend.main is not None
        client = sdk_client(app)
        r = await client.images.generate(model="tiny-sd", prompt="x", size="512x512")
        assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (512, 512)
        await client.close()


def test_unknown_option_values_fail_at_start_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The registry passes a backend kind's keys through; the backend checks them when built
    # (at start-up, and by `imagegate serve` before it binds).
    with pytest.raises(ValueError, match="compile"):
        DiffusersBackend(_config_from_table({"name": "m", "source": "x", "compile": "max"}, tmp_path))
    with pytest.raises(ValueError, match="cache"):
        DiffusersBackend(_config_from_table({"name": "m", "source": "x", "cache": "lots"}, tmp_path))
    with pytest.raises(ValueError, match="unknown keys"):
        DiffusersBackend(_config_from_table({"name": "m", "source": "x", "compiel": "full"}, tmp_path))


def test_fp8_refuses_cpu_with_a_clear_error(tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    backend = DiffusersBackend(with_options(tiny_config(tiny_sd_path), fp8=True))
    with pytest.raises(ValueError, match="fp8 needs a CUDA GPU"):
        backend.load()


def test_step_cache_needs_a_supporting_denoiser(tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    backend = DiffusersBackend(with_options(tiny_config(tiny_sd_path), cache="first-block"))
    with pytest.raises(ValueError, match="step caching is not available"):
        backend.load()


async def test_regional_compile_with_warm_up(tmp_path, tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    """torch.compile of the UNet's repeated transformer blocks, warmed up before /health is
    ready (the slowest test here: inductor compiles C++ on CPU, ~30-70 s on 2 cores)."""
    config = with_options(tiny_config(tiny_sd_path), compile="regional", warmup_sizes=("1024x1024",))
    app = create_app(make_settings(tmp_path), [config])
    async with running(app):
        unet = app.state.scheduler.worker("tiny-sd").backend.main.unet
        compiled = [m for m in unet.modules()
                    if type(m).__name__ == "BasicTransformerBlock" and hasattr(m, "_compiled_call_impl")]
        assert compiled and all(m._compiled_call_impl is not None for m in compiled)
        client = sdk_client(app)
        r = await client.images.generate(model="tiny-sd", prompt="x", size="1024x1024", quality="low")
        assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (1024, 1024)
        await client.close()


def test_every_mode_keeps_the_configured_dtype(tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    """diffusers' from_pipe casts shared components to float32 unless given the dtype."""
    backend = DiffusersBackend(with_options(tiny_config(tiny_sd_path), dtype="bfloat16"))
    backend.load()
    for mode, pipe in backend.pipes.items():
        for name, comp in pipe.components.items():
            if isinstance(comp, torch.nn.Module):
                assert next(comp.parameters()).dtype == torch.bfloat16, (mode, name)


def test_preview_vae_decodes_previews(tiny_sd_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A tiny autoencoder (TAESD-style), when configured, decodes the streaming previews."""
    from diffusers import AutoencoderTiny

    from imagegate.engine.base import JobRuntime
    from imagegate.normalize import build_spec

    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=4).save_pretrained(tmp_path / "taesd")
    backend = DiffusersBackend(with_options(tiny_config(tiny_sd_path), preview_vae=str(tmp_path / "taesd")))
    backend.load()
    calls = []
    real = backend.preview_vae.decode
    backend.preview_vae.decode = lambda *a, **k: calls.append(1) or real(*a, **k)  # spy
    previews: list[Image.Image] = []
    spec = build_spec(task="generate", model=backend.config, requested_model=None, prompt="x", n=1, size="256x256",
                      quality="high", background=None, output_format="png", output_compression=None,
                      response_format="b64_json", stream=True, partial_images=2, seed=1)
    job = backend.plan(spec)
    backend.run(job, JobRuntime(on_preview=lambda i, k, im: previews.append(im)))
    assert len(previews) == 2 and len(calls) == 2
    assert previews[0].size == (job.spec.gen_width, job.spec.gen_height) == (64, 64)
