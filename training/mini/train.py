"""Train imagegate-mini from scratch on procedurally rendered scenes.

    python -m training.mini.train --out DIR [--seed 0] [--minutes N]

Stages, all deterministic given ``--seed`` and the step counts (the
``--minutes``/``--vae-minutes`` budgets only cap wall time: if one is hit,
that stage stops early and the last checkpoint is kept):

1. AutoencoderKL (factor 4, 4 latent channels) on freshly rendered scenes
   (object-weighted L1 + MSE, tiny KL).  ``scaling_factor`` = 1/std(latents).
2a. The tiny CLIPTextModel learns to parse prompts: linear heads on its
   pooled state predict the background and, per object colour, presence,
   shape, size, position and relation (``text_targets``).  No images.
2b. VAE frozen; ``--n-scenes`` scenes are rendered and encoded once; the
   UNet2DConditionModel and the text encoder are trained jointly with the
   v-prediction DDPM loss (object pixels weigh 5x, object outlines
   ``--edge-weight`` more), the parse loss kept on at
   ``--aux-weight``, a new random English prompt for every draw of a scene,
   10% empty prompts (for CFG), AdamW + warmup and an EMA of the weights,
   which is what gets saved.

``--device`` (default: CUDA when there is one) runs every stage there; the
random draws stay on the CPU. ``--workers N`` builds stage 2b's batches and
renders the latent cache in N spawned processes (the GPU run). ``--warm-from
DIR`` begins stage 2 from another world's trained pipeline (model 2 from model
1: ``warm.py``) instead of fresh weights and stage 2a.

The file is over 900 lines: the stages share the components and the World table.
What a saved state must match is in ``resume.py``; a split into components and
stages is due the next time the file grows.

Checkpoints are complete diffusers folders (fp16 safetensors) written to
``--out`` atomically every ``--ckpt-minutes``; unless ``--no-sheets``, a contact
sheet of samples is written to the work dir at each checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imagegate.mini import NATIVE_SIZE

from .prompts import REL_WORDS, Claims, corpus, train_example
from .resume import load_state, save_training_state
from .scenes import (
    COLOUR_NAMES,
    COLOURS,
    POSITION_NAMES,
    SHAPES,
    SIZE_NAMES,
    Scene,
    render,
    sample_scene,
    sample_training_scene,
)
from .tokenizer import MAX_LENGTH, build_tokenizer

VAE_FACTOR = 4  # factor 8 lost the shape of small objects (VAE round trip: 80% of objects right)
LATENT = NATIVE_SIZE // VAE_FACTOR
COOLDOWN = 0.5  # fraction of stage 2b at constant LR before the linear cool-down


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------- components
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
    return _tensors(*_render_arrays(scenes, world or get_world(1)))


def _tensors(imgs: np.ndarray, ws: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ws)[:, None]


def _render_arrays(scenes, world) -> tuple[np.ndarray, np.ndarray]:
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


def contact_sheet(model_dir: Path, path: Path, seed: int, n: int = 16) -> None:
    from PIL import Image

    from .evaluate import load_pipeline
    from .prompts import heldout_examples

    pipe = load_pipeline(model_dir)
    ex = heldout_examples(seed + 1000, n, mix=(0.5, 0.4, 0.1))
    sheet = Image.new("RGB", (4 * 256, (n + 3) // 4 * 128), "white")
    for k, (scene, prompt, _) in enumerate(ex):
        g = torch.Generator().manual_seed(k)
        img = pipe(prompt, num_inference_steps=8, guidance_scale=4.0, generator=g).images[0]
        x, y = (k % 4) * 256, (k // 4) * 128
        sheet.paste(render(scene), (x, y))
        sheet.paste(img, (x + 128, y))
    sheet.save(path)
    with open(path.with_suffix(".txt"), "w") as f:
        for k, (_, p, _) in enumerate(ex):
            f.write(f"{k}: {p}\n")


# ----------------------------------------------------------------- stage 1
def _eye(conv, n=None, scale=1.0):
    w = conv.weight
    w.zero_()
    k = w.shape[-1] // 2
    for i in range(n if n is not None else min(w.shape[0], w.shape[1])):
        w[i, i, k, k] = scale
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def identity_init(vae) -> None:
    """Start the auto-encoder close to "8x8 box-average down, nearest up" of the colours.

    Every residual branch ends at zero (ReZero style), attention outputs are zero,
    shortcuts/up-samplers carry the first channels through, down-samplers are 2x2
    box filters.  Channels 0-2 of the encoder carry RGB and channel 3 a constant,
    so the group norms cannot erase the absolute colour of flat regions.  Training
    then only has to learn the edges; without this the colours of flat regions
    take thousands of steps to separate.
    """
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    for m in vae.modules():
        if isinstance(m, ResnetBlock2D):
            m.conv2.weight.zero_()
            m.conv2.bias.zero_()
            if m.conv_shortcut is not None:
                _eye(m.conv_shortcut)
        elif isinstance(m, Attention):
            m.to_out[0].weight.zero_()
            m.to_out[0].bias.zero_()
        elif isinstance(m, Downsample2D):
            w = m.conv.weight
            w.zero_()
            for i in range(min(w.shape[0], w.shape[1])):
                w[i, i, 0:2, 0:2] = 0.25
            m.conv.bias.zero_()
        elif isinstance(m, Upsample2D):
            _eye(m.conv)
    ci = vae.encoder.conv_in
    ci.weight[:4].zero_()
    ci.bias[:4].zero_()
    for i in range(3):
        ci.weight[i, i, 1, 1] = 1.0
    ci.bias[3] = 1.0
    _eye(vae.encoder.conv_out, 4)
    _eye(vae.quant_conv)
    _eye(vae.post_quant_conv)
    _eye(vae.decoder.conv_in, 4)


def vae_step(vae, opt, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One stage-1 step: the weighted L1 + L2 of the round trip (a deterministic auto-encoder: the posterior
    std is fixed after training), gradients clipped to 1. Returns the loss."""
    z = vae.encode(x).latent_dist.mean
    err = vae.decode(z).sample - x
    loss = (w * (err.abs() + err.pow(2))).mean() / w.mean() + 1e-6 * z.pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    opt.step()
    return loss


def train_vae(args, work: Path):
    torch.manual_seed(args.seed)
    rng = random.Random(f"vae-{args.seed}")
    dev = args.device
    if args.vae_init:  # fine-tune a trained VAE (model 2 starts from model 1's) instead of the identity start
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae_init, torch_dtype=torch.float32)
        log("stage 1 starts from the VAE in", args.vae_init)
    else:
        vae = make_vae()
        identity_init(vae)
    vae.to(dev)
    log(f"VAE params {n_params(vae):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    t0 = time.time()
    step = 0
    for step in range(args.vae_steps):
        frac = min(1.0, max((time.time() - t0) / (args.vae_minutes * 60), step / args.vae_steps))
        lr = args.vae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, w = (v.to(dev) for v in render_batch([args.w.sample_scene(rng) for _ in range(args.vae_batch)], args.w))
        loss = vae_step(vae, opt, x, w)
        if step % 25 == 0:
            log(f"vae step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s")
        if time.time() - t0 > args.vae_minutes * 60:
            log("vae time budget reached")
            break
    vae.eval()
    # Fix the posterior std to ~0 (logvar = -20) so that latent_dist.sample(), which the
    # img2img / inpaint pipelines use, equals the mean the model was trained on.
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -20.0
    # latent statistics -> scaling factor
    with torch.no_grad():
        zs = []
        for _ in range(8):
            x, _ = render_batch([args.w.sample_scene(rng) for _ in range(32)], args.w)
            zs.append(vae.encode(x.to(dev)).latent_dist.mean)
        z = torch.cat(zs)
        std = z.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    log(f"VAE done: {step + 1} steps, {time.time() - t0:.0f}s, latent mean {z.mean().item():.3f} std {std:.3f}")
    vae.cpu().save_pretrained(work / "vae", safe_serialization=True)
    return vae.to(dev)


# ----------------------------------------------------------------- stage 2a
# The text encoder first learns to parse prompts: from the pooled (end-of-text) state, linear heads
# predict what the prompt claims, keyed by object colour (colours in a scene are distinct).  This is
# cheap (no images) and gives the UNet a text representation that already separates colour, shape,
# size, position and relation, instead of one it must discover through the diffusion loss alone.
RELS = list(REL_WORDS)
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
AUX_GROUPS = (("present", 2), ("shape", len(SHAPES)), ("size", len(SIZE_NAMES)), ("pos", len(POSITION_NAMES)),
              ("rel", len(RELS)))
N_COL = len(COLOUR_NAMES)
IGNORE = -100


def text_targets(scene: Scene, claims: Claims | None) -> list[int]:
    """Flat target vector: background, then per colour (present, shape, size, position, relation)."""
    t = {g: [IGNORE] * N_COL for g, _ in AUX_GROUPS}
    bg = IGNORE
    if claims is not None:
        if claims.background:
            bg = COLOUR_NAMES.index(scene.background)
        if all(c.colour for c in claims.objects):
            t["present"] = [0] * N_COL
        for o, c in zip(scene.objects, claims.objects, strict=True):
            if not c.colour:
                continue
            k = COLOUR_NAMES.index(o.colour)
            t["present"][k] = 1
            if c.shape:
                t["shape"][k] = SHAPES.index(o.shape)
            if c.size:
                t["size"][k] = SIZE_NAMES.index(o.size)
            if c.position:
                t["pos"][k] = POSITION_NAMES.index(o.pos)
        if claims.relation is not None:
            a, rel, b = claims.relation
            if claims.objects[a].colour and claims.objects[b].colour:
                t["rel"][COLOUR_NAMES.index(scene.objects[a].colour)] = RELS.index(rel)
                t["rel"][COLOUR_NAMES.index(scene.objects[b].colour)] = RELS.index(_INVERSE[rel])
    out = [bg]
    for g, _ in AUX_GROUPS:
        out += t[g]
    return out


class ParseHead(torch.nn.Module):
    """Training-only linear heads on the pooled text state (not shipped)."""

    def __init__(self, hidden: int, groups=AUX_GROUPS):
        super().__init__()
        self.aux_groups = groups
        self.bg = torch.nn.Linear(hidden, N_COL)
        self.groups = torch.nn.ModuleList(torch.nn.Linear(hidden, N_COL * k) for _, k in groups)

    def loss(self, pooled: torch.Tensor, targets: torch.Tensor, with_acc: bool = False
             ) -> tuple[torch.Tensor, float | None]:
        """Summed cross-entropy; the accuracy (a host sync per head) only when asked, for logging."""
        logits = [self.bg(pooled)]
        tg = [targets[:, 0]]
        for i, (head, (_, k)) in enumerate(zip(self.groups, self.aux_groups, strict=True)):
            logits.append(head(pooled).view(-1, N_COL, k).reshape(-1, k))
            tg.append(targets[:, 1 + i * N_COL:1 + (i + 1) * N_COL].reshape(-1))
        loss = sum(F.cross_entropy(lg, t, ignore_index=IGNORE)
                   for lg, t in zip(logits, tg, strict=True) if (t != IGNORE).any())
        if not with_acc:
            return loss, None
        with torch.no_grad():
            hit = tot = 0
            for lg, t in zip(logits, tg, strict=True):
                m = t != IGNORE
                hit += (lg.argmax(-1)[m] == t[m]).sum().item()
                tot += m.sum().item()
        return loss, hit / max(tot, 1)


def sample_batch(scenes, idx, rng: random.Random, tok, device, p_empty: float = 0.1, world=None):
    """Token ids and parse targets for a fresh training prompt per scene (``p_empty`` of them empty)."""
    world = world or get_world(1)
    prompts, targets = [], []
    for i in idx:
        text, claims = world.train_example(scenes[i], rng) if rng.random() >= p_empty else ("", None)
        prompts.append(text)
        targets.append(world.text_targets(scenes[i], claims))
    ids = tok(prompts, padding="max_length", max_length=world.max_length, truncation=True,
              return_tensors="pt").input_ids
    return ids.to(device), torch.tensor(targets).to(device)


def pretrain_text(args, te, head, tok) -> None:
    rng = random.Random(f"text-{args.seed}")
    scene_rng = random.Random(f"text-scenes-{args.seed}")
    params = list(te.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.text_lr, weight_decay=0.01)
    t0 = time.time()
    for step in range(args.text_steps):
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.text_steps))
        lr = args.text_lr * min(1.0, (step + 1) / 50) * cosine
        for g in opt.param_groups:
            g["lr"] = lr
        scenes = [args.w.sample_training_scene(scene_rng) for _ in range(args.text_batch)]
        ids, targets = sample_batch(scenes, range(len(scenes)), rng, tok, args.device, p_empty=0.0, world=args.w)
        report = step % 50 == 0 or step == args.text_steps - 1
        loss, acc = head.loss(te(ids).pooler_output, targets, with_acc=report)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if report:
            log(f"text step {step} loss {loss.item():.4f} parse accuracy {acc:.3f} {time.time() - t0:.0f}s")


# ----------------------------------------------------------------- stage 2b
def encode_dataset(vae, n: int, seed: int, work: Path, world=None, workers: int = 0):
    """Render and encode the stage-2b scenes once (rendered in ``workers`` processes if > 0; the same
    pictures either way); latents and weights are kept on the CPU. A world with a share of one-thing
    scenes (``--one-share``) names it in the cache file, so that another mix encodes its own."""
    world = world or get_world(1)
    share = world.one_share
    hard = f"_hard{world.hard_weight:g}-{'-'.join(world.hard)}" if world.hard else ""
    cache = work / (f"latents_{n}_{seed}_one{share:g}{hard}.pt" if share else f"latents_{n}_{seed}.pt")
    rng = random.Random(f"data-{seed}")
    scenes = [world.sample_training_scene(rng) for _ in range(n)]
    # the cache is valid only for the VAE that wrote it: a retrained or changed VAE re-encodes
    h = hashlib.sha1()
    for v in vae.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    key = h.hexdigest()
    if cache.exists():
        d = torch.load(cache)
        if d.get("vae") == key:
            return scenes, d["mean"], d["weight"]
        log("latent cache", cache, "was written by another VAE; encoding again")
    means, weights = [], []
    t0 = time.time()
    chunks = [scenes[i:i + 128] for i in range(0, n, 128)]
    with _pool(workers) as pool, torch.no_grad():
        rendered = pool.imap(_render_chunk, [(c, world) for c in chunks]) if pool else (
            _render_arrays(c, world) for c in chunks)
        for i, (imgs, ws) in zip(range(0, n, 128), rendered, strict=True):
            x, w = _tensors(imgs, ws)
            means.append(vae.encode(x.to(vae.device)).latent_dist.mean.half().cpu())
            weights.append(F.avg_pool2d(w, VAE_FACTOR).half())  # object weight per latent pixel
            if i % 5120 == 0:
                log(f"encoded {i}/{n} {time.time() - t0:.0f}s")
    mean, weight = torch.cat(means), torch.cat(weights)
    torch.save({"mean": mean, "weight": weight, "vae": key}, cache)
    return scenes, mean, weight


def _render_chunk(job):
    scenes, world = job
    return _render_arrays(scenes, world)


@contextlib.contextmanager
def _pool(workers: int):
    """A pool of ``workers`` fresh (spawned) processes, or None for in-process work (the CPU recipe). Not
    forked: a fork of a process running torch's thread pools or CUDA can hang (seen here with OpenMP)."""
    if workers <= 0:
        yield None
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield pool


class StepBatches(torch.utils.data.Dataset):
    """``--workers N``: stage 2b's batch for step s, built in a worker process from seeds of its own
    (``--batch-seed``, s): which scenes, their fresh prompts and parse targets, the noise. The batches do not
    depend on the number of workers or on where a run resumed; they differ from the in-process stream
    (workers 0, the CPU recipes), which draws everything from one generator in order."""

    def __init__(self, scenes, tok, world, batch: int, bseed: int, latent_shape):
        self.scenes, self.tok, self.world = scenes, tok, world
        self.batch, self.bseed, self.latent_shape = batch, bseed, latent_shape

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int):
        gen = torch.Generator().manual_seed(self.bseed * 1_000_003 + step)
        rng = random.Random(f"prompts-{self.bseed}-{step}")
        idx = torch.randint(0, len(self.scenes), (self.batch,), generator=gen)
        ids, targets = sample_batch(self.scenes, idx.tolist(), rng, self.tok, torch.device("cpu"), world=self.world)
        noise = torch.randn((self.batch, *self.latent_shape), generator=gen)
        return idx, ids, targets, noise, gen.get_state()


def edge_band(pw: torch.Tensor) -> torch.Tensor:
    """1 on latent pixels within one pixel of an object outline, else 0.

    ``pw`` is the object weight averaged over each latent pixel's 4x4 image pixels: it lies strictly
    between the background (1) and object (5) values where an outline crosses the latent pixel (a side
    that runs exactly along latent pixel borders leaves none, and is marked only near its corners).
    """
    outline = ((pw > 1.01) & (pw < 4.99)).float()
    return F.max_pool2d(outline, 3, stride=1, padding=1)


def unet_lr(args, step: int, elapsed: float) -> float:
    """Warm-up, then a linear cool-down to 0.1x over the second half. Progress is the larger of the
    step and the wall-time fractions, so a run that a slow machine stops at --minutes still cools
    down (most of the accuracy came in the cool-down: docs/imagegate-mini.md, learning curve)."""
    progress = max(step / args.steps, elapsed / (args.minutes * 60))
    lr = args.lr * min(1.0, (step + 1) / args.warmup)
    if progress > COOLDOWN:
        lr *= max(0.1, 1 - (progress - COOLDOWN) / (1 - COOLDOWN))
    return lr


def sample_timesteps(dist: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """Training timesteps. "uniform": every t alike (model 1). "mid": 80% from a logit-normal
    (logit mean 0.6, std 1; median about t = 625, 5-95% between t = 180 and 910), 20% uniform. Run 13
    drew the right outline 82% of the time when img2img started from the rendered scene at strength
    0.3, 38% at 0.6 and 10% from noise: the kind's silhouette is decided at middle-to-high noise, so
    that is where model 2's steps go."""
    uniform = torch.randint(0, 1000, (n,), generator=gen)
    if dist == "uniform":
        return uniform
    mid = (torch.sigmoid(torch.randn(n, generator=gen) + 0.6) * 1000).long().clamp(0, 999)
    return torch.where(torch.rand(n, generator=gen) < 0.8, mid, uniform)


def timestep_dist(args, step: int) -> str:
    """--timesteps, until --uniform-from (if given): uniform from that step on (model 2: the layout and
    silhouette at middle-to-high noise first, then every noise level for the outlines)."""
    return "uniform" if args.uniform_from is not None and step >= args.uniform_from else args.timesteps


def train_unet(args, vae, work: Path, tok_dir: Path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(args.seed)
    scenes, lat_mean, lat_weight = encode_dataset(vae, args.n_scenes, args.seed, work, args.w, args.workers)
    # objects weigh 5x the flat background per latent pixel (they are a few % of the image), and the
    # band around their outlines (corners, star points) weighs --edge-weight more again; fixed per scene
    lat_weight = lat_weight.float()
    if args.edge_weight:
        lat_weight += args.edge_weight * edge_band(lat_weight)
    sf = vae.config.scaling_factor
    dev = args.device
    lat_mean, lat_weight = lat_mean.to(dev), lat_weight.to(dev)  # no-op on the CPU; on a GPU, one copy
    unet = (args.w.make_unet(tuple(args.unet_channels)) if args.unet_channels else args.w.make_unet()).to(dev)
    te = make_text_encoder(tok, args.w.max_length).to(dev)
    if args.init_from:  # continue from a saved pipeline (its EMA weights); fresh optimizer
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        src = Path(args.init_from)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(src / "unet", dtype=torch.float32).state_dict())
        te.load_state_dict(CLIPTextModel.from_pretrained(src / "text_encoder", dtype=torch.float32).state_dict())
        log("initialised UNet and text encoder from", src)
    elif args.warm_from:  # model 1's UNet whole, its text encoder by token string (warm.py)
        from .warm import warm_start

        log("warm start from", args.warm_from, warm_start(unet, te, args.warm_from, tok_dir))
    log(f"UNet params {n_params(unet):,}  text encoder params {n_params(te):,}")
    if dev.type == "cpu":
        # PyTorch's CPU SDPA kernels are slow in the backward pass for these small heads; plain
        # bmm + softmax attention takes a training step from 0.76 to 0.64 s here. Neither choice is
        # saved with the model.
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
        te.set_attn_implementation("eager")
    head = ParseHead(te.config.hidden_size, args.w.aux_groups).to(dev)
    state_path = work / f"state_{Path(args.out).name}.pt"
    state = load_state(state_path, args)
    if state is not None and (state["step"] + 1 >= args.steps or state["elapsed"] > args.minutes * 60) and (
            Path(args.out) / "unet").exists():
        # the run ended (all its steps, or its time cap) and wrote its folder: the same command again changes nothing
        log(f"{state_path} is a finished run (step {state['step']}, {state['elapsed']:.0f}s); {args.out} stands")
        return
    if state is None and not (args.init_from or args.warm_from) and args.text_steps:
        pretrain_text(args, te, head, tok)
    params = list(unet.parameters()) + list(te.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_unet, ema_te = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_te.parameters())
    live_params = list(unet.parameters()) + list(te.parameters())
    for p in ema_params:
        p.requires_grad_(False)
    sched = make_scheduler_train()
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    bseed = args.seed if args.batch_seed is None else args.batch_seed
    rng = random.Random(f"prompts-{bseed}")
    gen = torch.Generator().manual_seed(bseed)
    t0 = time.time()
    losses = []
    step = first = 0
    if state is not None:  # resume: every weight, the optimizer, the data and noise streams, the clock
        for m, key in ((unet, "unet"), (te, "te"), (head, "head"), (ema_unet, "ema_unet"), (ema_te, "ema_te")):
            try:
                m.load_state_dict(state[key])
            except RuntimeError as e:  # the recipe's architecture changed since the state was written
                raise SystemExit(f"{state_path} holds a {key} of another shape ({str(e)[:200]}); "
                                 "delete it to start again") from None
        opt.load_state_dict(state["opt"])
        rng.setstate(state["rng"])
        gen.set_state(state["gen"])
        losses, first = state["losses"], state["step"] + 1
        t0 -= state["elapsed"]
        log(f"resumed from {state_path} after step {state['step']} ({state['elapsed']:.0f}s of training)")
    last_ckpt = time.time()
    stopped_early = False
    interrupted = getattr(args, "interrupted", lambda: False)
    pending: list[torch.Tensor] = []  # this step's losses, read back to the host every 25 steps (no sync a step)
    batches = None
    if args.workers > 0:
        loader = torch.utils.data.DataLoader(
            StepBatches(scenes, tok, args.w, args.batch, bseed, tuple(lat_mean.shape[1:])),
            sampler=range(first, args.steps), batch_size=None, num_workers=args.workers, prefetch_factor=4,
            pin_memory=dev.type == "cuda", multiprocessing_context="spawn")
        batches = iter(loader)

    def save_state(step: int) -> None:
        losses.extend(torch.stack(pending).tolist() if pending else [])
        pending.clear()
        save_training_state(state_path, args, step, time.time() - t0, losses, rng, gen, opt,
                            unet=unet, te=te, head=head, ema_unet=ema_unet, ema_te=ema_te)

    if state is None:  # a restart from here skips stage 2a
        save_state(-1)
    step = first - 1
    for step in range(first, args.steps):
        lr = unet_lr(args, step, time.time() - t0)
        for g in opt.param_groups:
            g["lr"] = lr
        if batches is None:
            idx = torch.randint(0, len(scenes), (args.batch,), generator=gen)
            ids, targets = sample_batch(scenes, idx.tolist(), rng, tok, dev, world=args.w)
            noise = torch.randn((args.batch, *lat_mean.shape[1:]), generator=gen)  # all draws on CPU generators
            t = sample_timesteps(timestep_dist(args, step), args.batch, gen)
        else:
            idx, ids, targets, noise, gstate = next(batches)
            step_gen = torch.Generator()
            step_gen.set_state(gstate)
            t = sample_timesteps(timestep_dist(args, step), args.batch, step_gen)
            ids, targets = ids.to(dev, non_blocking=True), targets.to(dev, non_blocking=True)
        idx = idx.to(dev)
        z0 = lat_mean[idx].float() * sf
        noise, snr_t, t = noise.to(dev, non_blocking=True), snr[t].to(dev), t.to(dev)
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        # bf16 autocast (weights, optimizer and loss stay fp32): 20% faster per step on this CPU
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            te_out = te(ids)
            pred = unet(zt, t, te_out.last_hidden_state).sample.float()
        # "minsnr" caps the weight at SNR 5; plain v-loss puts more weight on high-noise steps
        # (background colour, layout).
        w = torch.clamp(snr_t, max=5.0) / (snr_t + 1) if args.weighting == "minsnr" else torch.ones_like(snr_t)
        pw = lat_weight[idx]
        per = (pw * (pred - target).pow(2)).mean(dim=(1, 2, 3)) / pw.mean(dim=(1, 2, 3))
        aux, acc = head.loss(te_out.pooler_output.float(), targets, with_acc=step % 25 == 0)
        loss = (w * per).mean() + args.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - decay)
        pending.append(loss.detach())
        if step % 25 == 0:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()
            el = time.time() - t0
            log(f"step {step} loss {np.mean(losses[-25:]):.4f} parse {acc:.3f} lr {lr:.2e} {el:.1f}s "
                f"({el / (step + 1):.3f}s/step)")
        now = time.time()
        out_of_time = now - t0 > args.minutes * 60
        if now - last_ckpt > args.ckpt_minutes * 60 or out_of_time:
            checkpoint(args, vae, ema_unet, ema_te, tok_dir, work, step)
            save_state(step)
            last_ckpt = time.time()
        if out_of_time:
            log("time budget reached, stopping")
            stopped_early = True
            break
        if interrupted() or (args.stop_after is not None and step + 1 >= args.stop_after):
            if interrupted():  # a run stopped by a time limit keeps what it learnt since the last checkpoint
                checkpoint(args, vae, ema_unet, ema_te, tok_dir, work, step)
            save_state(step)
            log(f"stopped after step {step}; the same command resumes from {state_path}")
            return
    if not stopped_early and first <= args.steps - 1:
        checkpoint(args, vae, ema_unet, ema_te, tok_dir, work, step)
    save_state(step)
    del batches  # ends the loader's workers
    meta = {"steps": step + 1, "batch": args.batch, "seconds": round(time.time() - t0), "seed": args.seed,
            "n_scenes": args.n_scenes, "final_loss": float(np.mean(losses[-100:]))}
    (work / f"train_meta_{Path(args.out).name}.json").write_text(json.dumps(meta, indent=2))
    log("done", meta)


# ----------------------------------------------------------------- stopping and checkpoints
@contextlib.contextmanager
def stop_on_signal():
    """While inside: SIGTERM / SIGINT end stage 2b after the current step, with its state saved.
    Yields the check; the previous handlers come back on the way out."""
    import signal

    hit = []

    def handler(signum, frame):
        hit.append(signum)
        log(f"signal {signum}: stopping after this step, saving the state")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(hit)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def checkpoint(args, vae, ema_unet, ema_te, tok_dir, work, step):
    out = Path(args.out)
    save_pipeline(out, vae, ema_unet, ema_te, tok_dir)
    log(f"checkpoint saved at step {step} -> {out}")
    if args.sheets and args.world == 1:  # the sheet's prompts are model 1's
        try:
            torch.set_num_threads(args.threads)
            contact_sheet(out, work / f"sheet_{step:06d}.png", args.seed)
        except Exception as e:  # noqa: BLE001 - never kill training for a preview
            log("contact sheet failed:", repr(e))


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output diffusers folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=74.0, help="wall-time cap for the UNet stage")
    ap.add_argument("--work", default=None, help="work dir (default: .mini-runs/work-seedN)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-steps", type=int, default=1300)
    ap.add_argument("--vae-minutes", type=float, default=9.0)
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-from", default=None, help="reuse a trained VAE folder (skips stage 1)")
    ap.add_argument("--vae-init", default=None, help="stage 1 fine-tunes this VAE folder instead of starting afresh")
    ap.add_argument("--n-scenes", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=7000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--ckpt-minutes", type=float, default=15.0)
    ap.add_argument("--text-steps", type=int, default=300, help="stage 2a: text encoder parse pre-training")
    ap.add_argument("--text-batch", type=int, default=192)
    ap.add_argument("--text-lr", type=float, default=2e-3)
    ap.add_argument("--aux-weight", type=float, default=0.1, help="parse loss weight during stage 2b")
    ap.add_argument("--no-sheets", dest="sheets", action="store_false")
    ap.add_argument("--edge-weight", type=float, default=10.0,
                    help="extra loss weight on latent pixels at object outlines (0: objects 5x only)")
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast in stage 2b; auto: where the device computes bf16 natively")
    ap.add_argument("--no-bf16", dest="bf16", action="store_const", const="off", help="same as --bf16 off")
    ap.add_argument("--weighting", choices=["minsnr", "v"], default="v",
                    help="loss weighting: min-SNR-5 or plain v-prediction MSE")
    ap.add_argument("--timesteps", choices=["uniform", "mid"], default="uniform",
                    help="training timestep distribution (mid: most steps at middle-to-high noise; model 2)")
    ap.add_argument("--uniform-from", type=int, default=None,
                    help="from this step on, uniform timesteps whatever --timesteps says (model 2: mid, then uniform)")
    ap.add_argument("--batch-seed", type=int, default=None,
                    help="seed for batch order/noise/prompts in stage 2 (default --seed); vary it when continuing")
    ap.add_argument("--init-from", default=None, help="continue stage 2 from a saved pipeline folder")
    ap.add_argument("--warm-from", default=None,
                    help="begin stage 2 from another world's pipeline folder (model 1's): its UNet whole, its text "
                         "encoder's rows for the tokens both vocabularies hold (warm.py); skips stage 2a")
    ap.add_argument("--stage", choices=["all", "vae"], default="all", help="vae: stop after stage 1")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="save the state and stop after this many steps of stage 2b (as a kill would; for tests)")
    ap.add_argument("--world", type=int, choices=[1, 2], default=1,
                    help="1: model 1 (shapes; make train-mini); 2: model 2 (everyday things, richer language)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes that render the scenes and build stage 2b's batches (0: in-process, the CPU "
                         "recipes; N > 0 feeds a GPU: each step's batch is seeded by its step, another stream)")
    ap.add_argument("--unet-channels", type=int, nargs="+", default=None,
                    help="model 2's UNet widths, four levels (default recipe2.UNET_CHANNELS)")
    ap.add_argument("--one-share", type=float, default=0.0,
                    help="model 2: this share of the training scenes is one thing of any kind, the picture the "
                         "server draws for each thing it lays out (0: the world's own mix, runs 13-23)")
    ap.add_argument("--hard-kinds", nargs="+", default=None, metavar="KIND",
                    help="with --one-share: these kinds are --hard-weight times as likely to be that one thing")
    ap.add_argument("--hard-weight", type=float, default=None, help="with --hard-kinds (default 3)")
    args = ap.parse_args(argv)
    if args.hard_kinds or args.hard_weight is not None:
        from .world2 import KIND_NAMES

        if not (args.one_share and args.hard_kinds):
            ap.error("--hard-kinds weights the one-thing scenes: pass it with --one-share (and --hard-weight with it)")
        if unknown := sorted(set(args.hard_kinds) - set(KIND_NAMES)):
            ap.error(f"--hard-kinds: unknown kinds {unknown}; model 2 draws {', '.join(KIND_NAMES)}")
        args.hard_weight = 3.0 if args.hard_weight is None else args.hard_weight
        if args.hard_weight <= 0:
            ap.error("--hard-weight takes a weight above 0")
        args.hard_kinds = sorted(set(args.hard_kinds))
    if args.one_share and args.world != 2:
        ap.error("--one-share is a share of model 2's training scenes: pass it with --world 2")
    if not 0.0 <= args.one_share < 1.0:
        ap.error("--one-share takes a share from 0 up to (not including) 1")
    args.w = get_world(args.world, args.one_share, tuple(args.hard_kinds or ()), args.hard_weight or 1.0)
    if args.workers < 0:
        ap.error("--workers takes 0 (in-process) or a number of processes")
    if args.warm_from and args.init_from:
        ap.error("--warm-from and --init-from are two ways to begin stage 2: pass one")
    if args.unet_channels and (args.world != 2 or len(args.unet_channels) != 4):
        ap.error("--unet-channels takes four widths, with --world 2")

    torch.set_num_threads(args.threads)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:  # GPU kernels round differently from the CPU's anyway: take the fastest convolutions
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.device.type == "cuda" and args.bf16 == "auto":
        args.bf16 = torch.cuda.is_bf16_supported()
    elif args.bf16 == "auto":
        # the server's dtype="auto" rule: bf16 only where the device computes it natively. On a CPU
        # with AVX-512 BF16 a UNet training step was 20% faster than fp32; on an AVX2-only CPU oneDNN
        # emulates bf16 and the same step was 13x slower (40.6 vs 3.1 s, batch 32, 1 thread, 2026-12-01)
        from imagegate.backends.diffusers import pick_dtype

        args.bf16 = pick_dtype("auto", args.device.type) is torch.bfloat16
    else:
        args.bf16 = args.bf16 == "on"
    work = Path(args.work or f".mini-runs/work-seed{args.seed}")
    work.mkdir(parents=True, exist_ok=True)
    log("args", {k: v for k, v in vars(args).items() if k != "w"})
    if args.init_from:  # the text encoder it continues reads that folder's token ids, not a new fit's
        tok_dir = work / "tokenizer"
        shutil.rmtree(tok_dir, ignore_errors=True)
        shutil.copytree(Path(args.init_from) / "tokenizer", tok_dir)
    else:
        tok_dir = build_tokenizer(work / "tokenizer", args.w.corpus(args.seed), args.w.max_length)
    vae_done = work / "vae" / "done.json"
    vae_key = {k: getattr(args, k) for k in ("world", "seed", "vae_steps", "vae_batch", "vae_lr", "vae_minutes",
                                             "vae_init")}
    if args.vae_from or (vae_done.exists() and json.loads(vae_done.read_text()) == vae_key):
        from diffusers import AutoencoderKL

        src = args.vae_from or work / "vae"  # a finished stage 1 of this same run is not repeated
        vae = AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32).to(args.device)
        log("loaded VAE from", src, "scaling", vae.config.scaling_factor)
    else:
        vae = train_vae(args, work)
        vae_done.write_text(json.dumps(vae_key))
    if args.stage == "vae":
        return
    vae.eval().requires_grad_(False)
    with stop_on_signal() as args.interrupted:
        train_unet(args, vae, work, tok_dir)


if __name__ == "__main__":
    sys.exit(main())
