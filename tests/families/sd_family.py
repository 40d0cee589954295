"""Tiny Stable Diffusion family pipelines (SD inpainting, SDXL, SD 3) built from configs, and a converter
from tiny diffusers SD / SDXL folders to the original single-file (LDM / CompVis) layout.

Every class is the real diffusers / transformers one; only the sizes are tiny (the
`get_dummy_components` pattern of diffusers' own tests). Tokenizers are built locally:
nothing is downloaded.

The converter is the inverse of diffusers' `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint`
(diffusers/loaders/single_file_utils.py): loading its output with `from_single_file` must
give back the very same weights, which the tests check tensor by tensor and through
generated images."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tiny import write_char_clip_tokenizer

CLIP_MAX_LENGTH = 32  # write_char_clip_tokenizer's model_max_length


def _clip_config(vocab_size: int, hidden: int, layers: int, heads: int, projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=2 * hidden,
        num_attention_heads=heads, num_hidden_layers=layers, vocab_size=vocab_size,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=projection_dim or hidden, hidden_act="gelu",
    )


def _tiny_vae(latent_channels: int = 4, **kw: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=latent_channels, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), **kw,
    )


# -- SD 1.x inpainting checkpoint --------------------------------------------------------
def build_tiny_sd_inpaint(folder: Path, seed: int = 1) -> Path:
    """A tiny dedicated inpainting checkpoint (StableDiffusionInpaintPipeline with the
    9-channel UNet: latents + mask + masked-image latents), shaped like tests/tiny.py's SD."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tok_dir = folder / "_tok_sd_inpaint"
    vocab_size = write_char_clip_tokenizer(tok_dir)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=_tiny_vae(), text_encoder=CLIPTextModel(_clip_config(vocab_size, 16, layers=2, heads=2)),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out = folder / "tiny-sd-inpaint"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -- SDXL -------------------------------------------------------------------------------
def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionXLPipeline: UNet with the `text_time` added conditioning, a
    CLIP-L-like `CLIPTextModel` and an OpenCLIP-bigG-like `CLIPTextModelWithProjection`.

    The second encoder has 10 layers and a different width from the first because
    diffusers' single-file loader tells SDXL apart by
    `conditioner.embedders.1.model.transformer.resblocks.9...` and tells the two encoders
    apart by their position-embedding width (768 vs 1280 in the real model)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tok_dir = folder / "_tok_sdxl"
    vocab_size = write_char_clip_tokenizer(tok_dir)
    hidden_1, hidden_2, proj_2, time_dim = 16, 32, 32, 8
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 1),
        # pooled text embedding of encoder 2 + six micro-conditioning numbers
        projection_class_embeddings_input_dim=proj_2 + 6 * time_dim,
        cross_attention_dim=hidden_1 + hidden_2, norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_clip_config(vocab_size, hidden_1, layers=2, heads=2))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(vocab_size, hidden_2, layers=10, heads=4,
                                                              projection_dim=proj_2))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), tokenizer_2=CLIPTokenizer.from_pretrained(tok_dir),
        unet=unet, scheduler=scheduler,
    )
    out = folder / "tiny-sdxl"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -- SD 3 -------------------------------------------------------------------------------
def write_t5_tokenizer(folder: Path) -> int:
    """A T5 tokenizer built with the `tokenizers` library the way T5's is (Metaspace +
    Unigram), over single characters: every character is a piece, `</s>` ends a sequence.
    Saved with save_pretrained and checked to reload to the same ids. Returns its size."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "▁", *(string.ascii_letters + string.digits + string.punctuation)]
    vocab = [(p, 0.0 if i < 3 else -1.0) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    t5 = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                         model_max_length=256)
    folder.mkdir(parents=True, exist_ok=True)
    t5.save_pretrained(folder)
    again = T5TokenizerFast.from_pretrained(folder)
    probe = "a red Circle, 42!"
    assert again(probe).input_ids == t5(probe).input_ids, "the T5 tokenizer does not reload to the same ids"
    assert again(probe).input_ids[-1] == 1 and 2 not in again(probe).input_ids
    return len(pieces)


def build_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusion3Pipeline: SD3Transformer2DModel, two CLIP encoders with
    projection and a T5 encoder. The CLIP hidden states (16 + 16) are padded to T5's width
    (32 = joint_attention_dim) by the pipeline; the pooled projections (16 + 16) give
    pooled_projection_dim. Latents have SD 3's 16 channels: its inpainting pipeline
    accepts no other denoiser width (16, or 33 for a dedicated inpainting model)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(seed)
    clip_dir, t5_dir = folder / "_tok_sd3_clip", folder / "_tok_sd3_t5"
    clip_vocab = write_char_clip_tokenizer(clip_dir)
    t5_vocab = write_t5_tokenizer(t5_dir)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=32,
    )
    vae = _tiny_vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    text_encoder = CLIPTextModelWithProjection(_clip_config(clip_vocab, 16, layers=2, heads=2, projection_dim=16))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(clip_vocab, 16, layers=2, heads=2, projection_dim=16))
    text_encoder_3 = T5EncoderModel(T5Config(
        vocab_size=t5_vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(clip_dir),
        text_encoder_2=text_encoder_2, tokenizer_2=CLIPTokenizer.from_pretrained(clip_dir),
        text_encoder_3=text_encoder_3, tokenizer_3=T5TokenizerFast.from_pretrained(t5_dir),
    )
    out = folder / "tiny-sd3"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -- diffusers folder → original single file ---------------------------------------------
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_LAYERS = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET[head]}.{tail}"


def unet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel keys → `model.diffusion_model.*` (input_blocks /
    middle_block / output_blocks), the inverse of convert_ldm_unet_checkpoint."""
    per = int(config["layers_per_block"]) + 1  # resnets per up level (down levels add a downsampler slot)
    cross_up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out: dict[str, Any] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in _UNET_LAYERS:
            new = f"{_UNET_LAYERS[module]}.{param}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = 1 + b * per + i
            new = f"input_blocks.{slot}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{slot}.1.{rest}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = b * per + i
            new = f"output_blocks.{slot}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{slot}.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            new = f"output_blocks.{b * per + per - 1}.{2 if cross_up[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"no original-layout name for UNet key {key!r}")
        out["model.diffusion_model." + new] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL keys → `first_stage_model.*`, the inverse of
    convert_ldm_vae_checkpoint (attention projections back to 1x1 convolutions)."""
    levels = len(config["up_block_types"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        to_conv = False  # attention projection weights go back to 1x1 convolutions
        if m := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            level = int(m[3]) if m[2] == "down" else levels - 1 - int(m[3])
            new = f"{m[1]}.{m[2]}.{level}.block.{m[4]}.{m[5].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            to_conv = m[2] != "group_norm" and m[3] == "weight"
        elif not re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.\w+|(post_)?quant_conv\.\w+",
                              key):
            raise KeyError(f"no original-layout name for VAE key {key!r}")
        out["first_stage_model." + new] = value[:, :, None, None] if to_conv else value
    return out


def clip_to_ldm(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """transformers CLIPTextModel keys → `<prefix>text_model.*` (HF layout kept, as in the
    original checkpoints: `cond_stage_model.transformer.` for SD 1.x,
    `conditioner.embedders.0.transformer.` for SDXL's first encoder)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()
            if not k.startswith("text_projection")}


def open_clip_to_ldm(state: dict[str, Any], prefix: str = "conditioner.embedders.1.model.") -> dict[str, Any]:
    """transformers CLIPTextModelWithProjection keys → OpenCLIP's (`resblocks`, fused
    `in_proj_weight`, transposed `text_projection`), the inverse of convert_open_clip_checkpoint."""
    import torch

    out: dict[str, Any] = {}
    fixed = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    rename = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
              "self_attn.out_proj": "attn.out_proj"}
    fused: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            fused.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"{prefix}transformer.resblocks.{m[1]}.{rename[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for (layer, kind), qkv in fused.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def _load_state(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def _config(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "config.json").read_text()))


def write_single_file(pipeline_folder: Path, out: Path) -> Path:
    """A tiny SD 1.x or SDXL diffusers folder as one original-layout .safetensors file."""
    from safetensors.torch import save_file

    index = json.loads((pipeline_folder / "model_index.json").read_text())
    unet, vae = pipeline_folder / "unet", pipeline_folder / "vae"
    state = {**unet_to_ldm(_load_state(unet), _config(unet)), **vae_to_ldm(_load_state(vae), _config(vae))}
    if index["_class_name"] == "StableDiffusionXLPipeline":
        state.update(clip_to_ldm(_load_state(pipeline_folder / "text_encoder"), "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(_load_state(pipeline_folder / "text_encoder_2")))
    else:
        state.update(clip_to_ldm(_load_state(pipeline_folder / "text_encoder"), "cond_stage_model.transformer."))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out


def config_only_copy(pipeline_folder: Path, out: Path) -> Path:
    """The folder a single file needs beside it (`single_file_config`): model_index.json,
    every component's config and the tokenizers; no weights, so the weights provably come
    from the single file."""
    shutil.copytree(pipeline_folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return out
