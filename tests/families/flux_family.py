"""Tiny, randomly initialised FLUX pipelines built from configs — FLUX.1 (dev/schnell),
FLUX.1 Fill, FLUX.1 Kontext and FLUX.2 — the `get_dummy_components` pattern of diffusers'
own FLUX tests, with every tokenizer built locally instead of downloaded.

Every class is the real one: `FluxTransformer2DModel` / `Flux2Transformer2DModel`,
`AutoencoderKL` (16 latent channels, FLUX's scaling and shift factors) /
`AutoencoderKLFlux2` (with its latent batch-norm), `CLIPTextModel` + `T5EncoderModel`
for FLUX.1, `Mistral3ForConditionalGeneration` for FLUX.2, `FlowMatchEulerDiscreteScheduler`.

Sizes are chosen for speed on 2 CPU cores while keeping the real layouts:
- the VAEs have four levels, so `vae_scale_factor` is 8 as in the released checkpoints and
  FLUX.1 Fill's transformer takes the real 384 input channels (64 packed latent + 64 packed
  masked-image latent + 256 packed 8x8 mask);
- FLUX.2's pipeline reads hidden states 10, 20 and 30 of its text encoder
  (`text_encoder_out_layers` default), so the tiny Mistral has 30 layers of width 16;
- both text encoders see 512 padded tokens (the pipelines' `max_sequence_length`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny import byte_level_tokenizer, write_char_clip_tokenizer

CLIP_DIM = 16
T5_DIM = 16
LATENT_CHANNELS = 16  # FLUX.1's VAE; the transformer sees 2x2 patches: 64 channels
VAE_SCALE = 8  # 2 ** (levels - 1)
SIZE_MULTIPLE = VAE_SCALE * 2  # latents are packed in 2x2 patches
# FLUX.1 Fill: packed latents (16*4) + packed masked-image latents (16*4) + the mask folded
# into VAE_SCALE**2 channels and packed (64*4), as FluxFillPipeline.prepare_mask_latents builds it.
FILL_IN_CHANNELS = LATENT_CHANNELS * 4 * 2 + VAE_SCALE * VAE_SCALE * 4
FLUX2_LATENT_CHANNELS = 8  # 32 in the release; the transformer sees 2x2 patches
FLUX2_TEXT_DIM = 16
FLUX2_TEXT_LAYERS = 30  # Flux2Pipeline stacks hidden_states[10], [20], [30]
FLUX2_STACKED = 3


def build_t5_tokenizer() -> Any:
    """T5's layout — a SentencePiece-style Unigram with <pad>=0, </s>=1, <unk>=2, Metaspace
    pre-tokenisation and an appended </s> — over single printable-ASCII pieces (what
    `T5Tokenizer` rebuilds from a saved tokenizer.json, so it loads back identically)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(chr(c), -3.0) for c in range(33, 127)]
    tok = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


# Mistral's chat format, reduced to what Flux2Pipeline.format_input sends: a system and a
# user message whose content is a list of {"type": "text"} parts.
FLUX2_CHAT_TEMPLATE = (
    "<s>{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% else %}[INST]{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'system' %}[/SYSTEM_PROMPT]{% else %}[/INST]{% endif %}"
    "{% endfor %}"
)


def build_flux2_tokenizer() -> Any:
    """A byte-level tokenizer with Mistral's chat tokens and a chat template. It truncates
    on the left: the pipeline pads/truncates the whole chat (system message first) to 512
    tokens, and a one-byte-per-token vocabulary would otherwise cut the user's prompt off."""
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]"]
    return PreTrainedTokenizerFast(tokenizer_object=byte_level_tokenizer(specials, use_regex=False), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", pad_token="<pad>", model_max_length=512,
                                   truncation_side="left", chat_template=FLUX2_CHAT_TEMPLATE)


def flux_vae(latent_channels: int = LATENT_CHANNELS) -> Any:
    from diffusers import AutoencoderKL

    levels = 4
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8,) * levels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, norm_num_groups=4, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        # FLUX.1's released VAE factors, so previews must apply them to decode right.
        scaling_factor=0.3611, shift_factor=0.1159,
    )


def flux_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.1-dev's scheduler config (resolution-dependent shift).
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)


def flux_transformer(in_channels: int = LATENT_CHANNELS * 4, out_channels: int | None = None,
                     guidance_embeds: bool = True) -> Any:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, out_channels=out_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_DIM,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8),
    )


def flux_text_components(folder: Path) -> dict[str, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    tok_dir = folder / "_clip_tok"
    clip_vocab = write_char_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=CLIP_DIM, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=1, vocab_size=clip_vocab, max_position_embeddings=32,
        projection_dim=CLIP_DIM,
    ))
    tokenizer_2 = build_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=T5_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    return dict(text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                tokenizer_2=tokenizer_2)


def _save(pipe: Any, out: Path) -> Path:
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """FluxPipeline (FLUX.1 dev layout: guidance embedding)."""
    import torch
    from diffusers import FluxPipeline

    torch.manual_seed(seed)
    pipe = FluxPipeline(transformer=flux_transformer(), vae=flux_vae(), scheduler=flux_scheduler(),
                        **flux_text_components(folder / "_flux_text"))
    return _save(pipe, folder / "tiny-flux")


def build_tiny_flux_fill(folder: Path, seed: int = 1) -> Path:
    """FluxFillPipeline: the FLUX.1 components with Fill's 384-channel transformer."""
    import torch
    from diffusers import FluxFillPipeline

    torch.manual_seed(seed)
    pipe = FluxFillPipeline(transformer=flux_transformer(FILL_IN_CHANNELS, LATENT_CHANNELS * 4), vae=flux_vae(),
                            scheduler=flux_scheduler(), **flux_text_components(folder / "_fill_text"))
    return _save(pipe, folder / "tiny-flux-fill")


def build_tiny_flux_kontext(folder: Path, seed: int = 2) -> Path:
    """FluxKontextPipeline: FLUX.1's components; the reference image's latents are
    concatenated to the sequence, not to the channels."""
    import torch
    from diffusers import FluxKontextPipeline

    torch.manual_seed(seed)
    pipe = FluxKontextPipeline(transformer=flux_transformer(), vae=flux_vae(), scheduler=flux_scheduler(),
                               **flux_text_components(folder / "_kontext_text"))
    return _save(pipe, folder / "tiny-flux-kontext")


def build_tiny_flux2(folder: Path, seed: int = 3) -> Path:
    """Flux2Pipeline with a 30-layer, 16-wide Mistral3 text encoder (the pipeline reads
    hidden states 10/20/30) and a VAE whose latent batch-norm has non-trivial running
    statistics, so a preview that forgets to undo it decodes visibly wrong."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    torch.manual_seed(seed)
    tokenizer = build_flux2_tokenizer()
    text_config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=FLUX2_TEXT_DIM, intermediate_size=32,
        num_hidden_layers=FLUX2_TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        max_position_embeddings=1024, sliding_window=None, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, head_dim=8, patch_size=4, image_size=16)
    text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=text_config, vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2,
    ))
    levels = 4
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, latent_channels=FLUX2_LATENT_CHANNELS, block_out_channels=(8,) * levels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, norm_num_groups=4, sample_size=64,
    )
    with torch.no_grad():
        vae.bn.running_mean.uniform_(-0.5, 0.5)
        vae.bn.running_var.uniform_(0.25, 4.0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=FLUX2_LATENT_CHANNELS * 4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=FLUX2_STACKED * FLUX2_TEXT_DIM,
        timestep_guidance_channels=32, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4),
    )
    pipe = Flux2Pipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         transformer=transformer)
    return _save(pipe, folder / "tiny-flux2")


def model_class(folder: Path) -> str:
    return str(json.loads((folder / "model_index.json").read_text())["_class_name"])
