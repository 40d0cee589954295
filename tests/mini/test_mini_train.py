"""The training script end to end at toy scale: every stage runs, the result is a diffusers
folder the stock pipelines load, and two runs from the same seed write the same weights."""

import json

import pytest

torch = pytest.importorskip("torch")

TINY = ["--seed", "3", "--threads", "1", "--device", "cpu", "--no-sheets",
        "--vae-steps", "3", "--vae-batch", "2", "--n-scenes", "16",
        "--text-steps", "2", "--text-batch", "8", "--steps", "3", "--batch", "4", "--warmup", "2"]


def _train(out, work):
    from training.mini.train import main

    main(["--out", str(out), "--work", str(work), *TINY])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _train(root / "a", root / "wa")
    return root


def test_train_writes_a_stock_diffusers_folder(trained):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    out = trained / "a"
    idx = json.loads((out / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionPipeline"
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["rescale_betas_zero_snr"] is True
    assert list(out.rglob("*.safetensors")) and not list(out.rglob("*.bin"))
    meta = json.loads((trained / "wa" / "train_meta_a.json").read_text())
    assert meta["steps"] == 3 and meta["batch"] == 4

    pipe = StableDiffusionPipeline.from_pretrained(str(out), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle on a blue background", num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (128, 128)
    StableDiffusionInpaintPipeline.from_pretrained(str(out), dtype=torch.float32)


def test_same_seed_same_weights(trained):
    from safetensors.torch import load_file

    _train(trained / "b", trained / "wb")
    for part in ("unet", "text_encoder", "vae"):
        fa = sorted((trained / "a" / part).glob("*.safetensors"))
        fb = sorted((trained / "b" / part).glob("*.safetensors"))
        assert [f.name for f in fa] == [f.name for f in fb]
        for x, y in zip(fa, fb, strict=True):
            a, b = load_file(x), load_file(y)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), part


def test_edge_band_marks_the_outline_only():
    import torch.nn.functional as F

    from training.mini.stage2 import edge_band

    img = torch.ones(1, 1, 64, 64)  # image-pixel weights: 1 background, 5 object
    img[..., 18:38, 22:41] = 5.0  # a box whose sides fall inside latent pixels
    pw = F.avg_pool2d(img, 4)  # per latent pixel, as the latent cache stores it
    band = edge_band(pw)
    assert set(band.unique().tolist()) == {0.0, 1.0}
    outline = (pw > 1.01) & (pw < 4.99)
    assert band[outline].eq(1).all()  # every mixed latent pixel is in the band ...
    assert band[..., 0, :].eq(0).all() and band[..., 15, :].eq(0).all()  # ... far background is not
    inner = (pw == 5.0)
    inner_core = inner & (F.max_pool2d(outline.float(), 3, 1, 1) == 0)
    assert inner_core.any() and band[inner_core].eq(0).all()  # nor is the object's core


def test_cool_down_finishes_when_the_time_cap_comes_first():
    from types import SimpleNamespace

    from training.mini.stage2 import unet_lr

    args = SimpleNamespace(lr=1.0, warmup=10, steps=1000, minutes=10.0)
    assert unet_lr(args, 0, 0.0) == pytest.approx(0.1)  # warm-up
    # a fast machine: the steps set the pace, full rate for the first half, then down to 0.1x
    assert unet_lr(args, 400, 0.0) == 1.0
    assert unet_lr(args, 750, 0.0) == pytest.approx(0.5)
    assert unet_lr(args, 999, 0.0) == pytest.approx(0.1)
    # a machine at 1.2 s/step makes only 500 steps in the 600 s cap: the clock sets the pace
    assert unet_lr(args, 250, 300.0) == 1.0
    assert unet_lr(args, 375, 450.0) == pytest.approx(0.5)
    assert unet_lr(args, 499, 598.8) == pytest.approx(0.1)
