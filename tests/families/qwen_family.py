"""Tiny, randomly initialised Qwen-Image pipelines (txt2img, edit, edit-plus) built from
configs, the `get_dummy_components` pattern of diffusers' own Qwen-Image tests — with the
tokenizer and the Qwen2.5-VL processor built locally instead of downloaded.

Every class is the real one: `QwenImageTransformer2DModel`, `AutoencoderKLQwenImage`
(a video VAE: 5-D latents, `latents_mean`/`latents_std`), `Qwen2_5_VLForConditionalGeneration`,
a byte-level BPE `Qwen2TokenizerFast` carrying the chat-template special tokens the
pipelines' prompt templates use, and `Qwen2VLProcessor` (PIL image processor: there is no
torchvision here).

Sizes are chosen for speed on 2 CPU cores: the edit pipelines always resize the
reference image to about 1024x1024 for the VAE (`calculate_dimensions(1024 * 1024, ...)`,
not configurable), so the VAE downsamples 16x (four levels) and the reference becomes
32x32 packed tokens rather than the 128x128 of diffusers' 4x test VAE. Generation sizes
are therefore multiples of 32 (`size_multiple = 32` in the tests' models file; the real
VAE downsamples 8x, hence the family's 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiny import byte_level_tokenizer

# The chat-template tokens Qwen-Image's prompt templates use (pipeline_qwenimage*.py).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
# One reference image is at most 2x2 merged vision tokens: 56x56 pixels (patch 14, merge 2).
VISION_MIN_PIXELS = 28 * 28
VISION_MAX_PIXELS = 56 * 56
VAE_SCALE = 16  # 2 ** len(temperal_downsample) below
SIZE_MULTIPLE = VAE_SCALE * 2  # the pipelines pack 2x2 latent patches


def build_qwen_tokenizer() -> Any:
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(
        tokenizer_object=byte_level_tokenizer(QWEN_SPECIAL_TOKENS, use_regex=True),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, model_max_length=2048,
    )


def build_qwen_image_processor() -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=VISION_MIN_PIXELS, max_pixels=VISION_MAX_PIXELS)


def save_qwen_processor(folder: Path, tokenizer: Any) -> None:
    """The `processor` component of a Qwen-Image-Edit checkpoint: a `Qwen2VLProcessor`.

    transformers cannot build a `Qwen2VLProcessor` without torchvision (its required video
    processor imports it), and there is no CPU torchvision here. Where it is installed, the
    real processor is built and saved; else the folder a real checkpoint ships is written
    piece by piece (tokenizer + image processor config, `["transformers", "Qwen2VLProcessor"]`
    in model_index.json) and the server loads it without the video part (see
    `_image_only_processors` in backends/diffusers.py)."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():  # pragma: no cover - not on the build machines
        from transformers import Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        Qwen2VLProcessor(image_processor=build_qwen_image_processor(), tokenizer=tokenizer,
                         video_processor=Qwen2VLVideoProcessor()).save_pretrained(folder / "processor")
    else:
        tokenizer.save_pretrained(folder / "processor")
        build_qwen_image_processor().save_pretrained(folder / "processor")
    index = json.loads((folder / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def qwen_components(seed: int = 0) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(seed)
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        # No residual blocks in the encoder (the decoder still has one per level): its
        # full-resolution 3-D convolutions dominate an edit call on CPU (~0.7 s for the
        # 1024x1024 reference, measured here with conv_in alone).
        base_dim=4, z_dim=z_dim, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=0,
        temperal_downsample=[False, True, True, True],
        # not the identity, so that previews prove they undo the per-channel normalisation
        latents_mean=[0.1, -0.2, 0.3, -0.1], latents_std=[1.5, 0.8, 1.2, 0.9],
    )
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
            "bos_token_id": None, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=len(tokenizer),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    ))
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": text_encoder, "tokenizer": tokenizer}


def build_qwen_image(folder: Path, name: str = "tiny-qwen-image") -> Path:
    from diffusers import QwenImagePipeline

    out = folder / name
    QwenImagePipeline(**qwen_components()).save_pretrained(out, safe_serialization=True)
    return out


def build_qwen_image_edit(folder: Path, name: str = "tiny-qwen-image-edit", plus: bool = False) -> Path:
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    parts = qwen_components()
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    out = folder / name
    cls(processor=None, **parts).save_pretrained(out, safe_serialization=True)
    save_qwen_processor(out, parts["tokenizer"])
    return out
