"""What every stage of ``train.py`` builds on: the networks (VAE, UNet, text encoder) and schedulers,
the renderer's pictures and loss weights as tensors, the saved diffusers folder, and the World table (what
model 1 and model 2 are trained on)."""

from __future__ import annotations

import copy
import functools
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagegate.mini import NATIVE_SIZE

from .parse import AUX_GROUPS, text_targets
from .prompts import corpus, train_example
from .scenes import COLOURS, render, sample_scene, sample_training_scene
from .tokenizer import MAX_LENGTH

VAE_FACTOR = 4  # factor 8 lost the shape of small objects (VAE round trip: 80% of objects right)
LATENT = NATIVE_SIZE // VAE_FACTOR


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
        norm_num_groups=1, sample_size=NATIVE_SIZE,  # 1 group: keeps absolute colour of flat regions
        mid_block_add_attention=False,  # 1024-token attention at 32x32 costs time and buys nothing for flat shapes
    )


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        # 32x32 latents: plain convs at 32x32, cross-attention at 16x16 and 8x8 and in the 4x4 mid block
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128, attention_head_dim=4, norm_num_groups=8,
    )


def make_text_encoder(tok, max_length: int = MAX_LENGTH):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=max_length, hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(cfg)


# The SD noise schedule leaves signal at t=999 (sqrt(alpha_bar) = 0.068): on flat scenes the
# noise mean then gives away the background colour, and the model learns to read it from
# the noise instead of the prompt. Zero terminal SNR (Lin et al. 2023) removes that leak.
def make_scheduler_train():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="v_prediction", clip_sample=False,
                         rescale_betas_zero_snr=True)


def make_scheduler_infer():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", algorithm_type="dpmsolver++", solver_order=2,
        timestep_spacing="trailing", final_sigmas_type="zero", lower_order_final=True, steps_offset=1,
        rescale_betas_zero_snr=True,
    )


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------- data
def render_batch(scenes, world=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] (B,3,H,W) and a per-pixel weight (B,1,H,W): 5 on objects, 1 on background
    (model 2: on the background and on a band of ground or sea)."""
    return image_tensors(*render_arrays(scenes, world or get_world(1)))


def image_tensors(imgs: np.ndarray, ws: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ws)[:, None]


def render_arrays(scenes, world) -> tuple[np.ndarray, np.ndarray]:
    """render_batch's pictures (B,H,W,3) and weights (B,H,W) as numpy arrays (what the render pool sends)."""
    imgs, ws = [], []
    for s in scenes:
        a = np.asarray(world.render(s), dtype=np.float32)
        thing = np.ones(a.shape[:2], bool)
        for c in world.backdrop(s):
            thing &= np.abs(a - np.array(COLOURS[c], np.float32)).sum(-1) > 6
        ws.append(1.0 + 4.0 * thing)
        imgs.append(a / 127.5 - 1.0)
    return np.stack(imgs), np.stack(ws).astype(np.float32)


def save_pipeline(out: Path, vae, unet, text_encoder, tokenizer_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).cpu().half(), unet=copy.deepcopy(unet).cpu().half(),
        # fp32 text encoder: transformers keeps the on-disk dtype
        text_encoder=copy.deepcopy(text_encoder).cpu().float(), tokenizer=tok,
        scheduler=make_scheduler_infer(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out.parent / (out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    copy_tokenizer_files(tokenizer_dir, tmp / "tokenizer")
    old = out.parent / (out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def copy_tokenizer_files(tokenizer_dir: Path, dest: Path) -> None:
    """transformers 5 saves only tokenizer.json; also ship CLIP's classic files."""
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copy(Path(tokenizer_dir) / name, Path(dest) / name)


@dataclass(frozen=True)
class World:
    """What a model is trained on: its scenes, renderer, prompts, parse targets, UNet, prompt length."""

    sample_scene: Callable[[random.Random], Any]
    sample_training_scene: Callable[[random.Random], Any]
    render: Callable[[Any], Any]
    backdrop: Callable[[Any], list[str]]
    train_example: Callable[[Any, random.Random], tuple[str, Any]]
    text_targets: Callable[[Any, Any], list[int]]
    aux_groups: tuple[tuple[str, int], ...]
    corpus: Callable[[int], list[str]]
    make_unet: Callable[[], Any]
    max_length: int
    one_share: float = 0.0  # share of training scenes that are one thing alone (model 2, --one-share)
    hard: tuple[str, ...] = ()  # kinds drawn hard_weight times as often as that one thing (--hard-kinds)
    hard_weight: float = 1.0


def get_world(n: int, one_share: float = 0.0, hard: tuple[str, ...] = (), hard_weight: float = 1.0) -> World:
    """1: model 1 (shapes, prompts.py), unchanged; 2: model 2 (world2, language.py, recipe2.py), with
    ``one_share`` of its training scenes one thing alone, of the ``hard`` kinds ``hard_weight`` times as
    often as of others (``world2.sample_training_scene2``)."""
    if n == 1:
        return World(sample_scene, sample_training_scene, render, lambda s: [s.background], train_example,
                     text_targets, AUX_GROUPS, corpus, make_unet, MAX_LENGTH)
    from . import recipe2 as r

    training_scene = functools.partial(r.sample_training_scene2, one_share=one_share, hard=hard,
                                       hard_weight=hard_weight) if one_share else r.sample_training_scene2
    return World(r.sample_scene2, training_scene, r.render2, r.backdrop, r.train_example2,
                 r.text_targets, r.AUX_GROUPS, r.corpus2, r.make_unet, r.MAX_LENGTH, one_share, hard, hard_weight)
