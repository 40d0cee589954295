"""Stage 1: the AutoencoderKL (factor 4, 4 latent channels) on freshly rendered scenes, from an identity-like
start or from another trained VAE (``--vae-init``)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from .components import log, make_vae, n_params, render_batch


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
