"""Mask-less edits on a family without native editing, with a text-prompted segmenter
(a tiny random CLIPSeg built from its config): the region is inferred and inpainted;
when nothing is found, image-to-image (both reported in x-imagegate-notes)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config, with_options
from imagegate.app import create_app
from tiny import write_char_clip_tokenizer


@pytest.fixture(scope="module")
def clipseg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("clipseg")
    n = write_char_clip_tokenizer(d / "tok")
    tok = CLIPTokenizer.from_pretrained(d / "tok")
    cfg = CLIPSegConfig(
        text_config=dict(vocab_size=n, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                         max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=3,
                           image_size=64, patch_size=16),
        projection_dim=16, extract_layers=[0, 1], reduce_dim=8, decoder_num_attention_heads=2,
        decoder_intermediate_size=16)
    CLIPSegForImageSegmentation(cfg).save_pretrained(d / "seg")
    CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3,
                                                       image_std=[0.5] * 3), tokenizer=tok).save_pretrained(d / "seg")
    return d / "seg"


def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("threshold", "note"), [(0.0, "inferred from the prompt"), (1.01, "image-to-image instead")])
async def test_maskless_edit_uses_segmenter(tmp_path, tiny_sd_path, clipseg_path, threshold, note) -> None:  # type: ignore[no-untyped-def]
    config = with_options(tiny_config(tiny_sd_path), segmenter=str(clipseg_path), segment_threshold=threshold)
    app = create_app(make_settings(tmp_path), [config])
    async with running(app):
        client = sdk_client(app)
        raw = await client.images.with_raw_response.edit(model="tiny-sd", image=("a.png", _png(), "image/png"),
                                                         prompt="a blue star")
        assert note in raw.headers["x-imagegate-notes"]
        out = raw.parse()
        img = Image.open(io.BytesIO(__import__("base64").b64decode(out.data[0].b64_json)))
        assert img.size == (96, 64)
        row = await app.state.ledger.get(raw.headers["x-request-id"])
        assert any(note in n for n in row.notes)
        await client.close()


def test_segment_returns_region_at_image_size(tiny_sd_path, clipseg_path) -> None:  # type: ignore[no-untyped-def]
    from imagegate.backends.diffusers import DiffusersBackend

    backend = DiffusersBackend(with_options(tiny_config(tiny_sd_path), segmenter=str(clipseg_path),
                                                   segment_threshold=0.0))
    backend.prepare()
    mask = backend.segment(Image.new("RGB", (120, 80)), "a circle")
    assert mask is not None and mask.size == (120, 80) and mask.mode == "L"
    assert np.asarray(mask).max() == 255
