"""Pilot 5: would 16x16 latents (a factor-8 VAE) make model 2's CPU recipe cheap enough?

    python -m training.mini.pilot_latents [--vae-steps 1000] [--vae-minutes 14] [--channels 8]
                                          [--f4-vae DIR] [--n 200] [--threads 2]

Model 2's UNet works on 32x32x4 latents (a factor-4 VAE) and one 150-minute CPU run reaches about 6,000
steps, a third of what its shapes need (docs/imagegate-mini.md, runs 16-19). This pilot measures the two
things a factor-8 latent space has to get right before a run is worth it, and prints them as tables:

1. fidelity: a factor-8 VAE (four levels, ``--channels`` latent channels) trained here from scratch with
   stage 1's loss, then the round trip render -> encode -> decode read by the evaluation's checker
   (``checker2``) on world-2 scenes, against the same scenes through the factor-4 VAE (``--f4-vae``, e.g.
   a run's ``work/vae``) and the rendered pictures themselves;
2. cost: a UNet training step (batch 32, forward, backward, AdamW; best of 3) and a sampling call
   (batch 2, one thread; median of 6) for run 16's UNet on 32x32x4 and for candidate UNets on 16x16 latents.

Nothing here is shipped; the VAE it trains is written to ``--out`` for a run to start from.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from .components import get_world, n_params, render_batch
from .stage1 import vae_step


def make_vae_f8(channels: int):
    from diffusers import AutoencoderKL

    from imagegate.mini import NATIVE_SIZE

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1, latent_channels=channels,
        norm_num_groups=1, sample_size=NATIVE_SIZE, mid_block_add_attention=False,
    )


def train_vae_f8(channels: int, steps: int, minutes: float, seed: int, log=print):
    """Stage 1's loss (weighted L1 + L2 on the rendered scene), cosine LR, batch 8."""
    world = get_world(2)
    torch.manual_seed(seed)
    rng = random.Random(f"pilot5-vae-{seed}")
    vae = make_vae_f8(channels)
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=0.0)
    t0 = time.time()
    step = 0
    for step in range(steps):
        frac = min(1.0, max((time.time() - t0) / (minutes * 60), step / steps))
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        x, w = render_batch([world.sample_scene(rng) for _ in range(8)], world)
        loss = vae_step(vae, opt, x, w)
        if step % 100 == 0:
            log(f"f8 vae step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s")
        if time.time() - t0 > minutes * 60:
            break
    return vae.eval(), step + 1, time.time() - t0


def round_trip(vae, scenes) -> list:
    from PIL import Image

    from .world2 import render2

    out = []
    with torch.no_grad():
        for i in range(0, len(scenes), 16):
            batch = scenes[i:i + 16]
            x, _ = render_batch(batch, get_world(2))
            rec = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mean).sample.float()
            arr = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            out += [Image.fromarray(a) for a in arr]
    assert len(out) == len(scenes) and out[0].size == render2(scenes[0]).size
    return out


def fidelity(vae, singles, multis) -> dict[str, float]:
    from .targets import multi_checks, single_checks
    from .world2 import render2

    pics = round_trip(vae, singles + multis) if vae is not None else [render2(s) for s in singles + multis]
    checks = [single_checks(p, s) for p, s in zip(pics, singles, strict=False)]
    res = {k: sum(c[k] for c in checks) / len(checks) for k in ("colour", "background", "kind", "position", "size")}
    two = [multi_checks(p, s)["all_right"] for p, s in zip(pics[len(singles):], multis, strict=True)]
    res["two_all_right"] = sum(two) / len(two)
    return res


def unet_f8(channels: tuple[int, ...], latent: int, attention: tuple[bool, ...]):
    from diffusers import UNet2DConditionModel

    from imagegate.mini import NATIVE_SIZE

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DConditionModel(
        sample_size=NATIVE_SIZE // 8, in_channels=latent, out_channels=latent, layers_per_block=1,
        block_out_channels=channels, down_block_types=down, up_block_types=up,
        cross_attention_dim=128, attention_head_dim=4, norm_num_groups=8,
    )


def step_cost(unet, latent: int, size: int, threads: int) -> tuple[float, float]:
    """(training step at batch 32 with `threads`, best of 3; sampling call at batch 2, one thread, median of 6)."""
    torch.set_num_threads(threads)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(32, latent, size, size)
    ctx = torch.randn(32, 64, 128)
    t = torch.randint(0, 1000, (32,))
    best = math.inf
    for _ in range(4):
        t0 = time.perf_counter()
        loss = unet(x, t, encoder_hidden_states=ctx).sample.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(1)
    calls = []
    with torch.inference_mode():
        for _ in range(7):
            t0 = time.perf_counter()
            unet(x[:2], t[:2], encoder_hidden_states=ctx[:2])
            calls.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return best, statistics.median(calls[1:])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae-steps", type=int, default=1000)
    ap.add_argument("--vae-minutes", type=float, default=14.0)
    ap.add_argument("--channels", type=int, default=8, help="latent channels of the factor-8 VAE")
    ap.add_argument("--f4-vae", default=None, help="a factor-4 VAE directory to compare (a run's work/vae)")
    ap.add_argument("--n", type=int, default=200, help="single-thing scenes for the round trip (and n/2 two-thing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".mini-runs/pilot5")
    ap.add_argument("--skip-vae", action="store_true", help="only the cost table")
    ap.add_argument("--skip-cost", action="store_true", help="only the VAE table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from .recipe2 import make_unet
    from .world2 import sample_scene2

    print(f"pilot 5, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    candidates = [("run 16: (32, 64, 64, 128)", make_unet(), 4, 32)]
    for ch in ((64, 64, 128), (48, 64, 128), (32, 64, 128)):  # run 16's 16x16, 8x8 and 4x4 levels, or narrower
        candidates.append((f"f8: {ch}, attention at 16 and 8", unet_f8(ch, args.channels, (True, True, False)),
                           args.channels, 16))
    if not args.skip_cost:
        print("\n| UNet | latents | parameters | training step (batch 32) | call (batch 2, 1 thread) |")
        print("|---|---|---|---|---|")
    for name, unet, latent, size in [] if args.skip_cost else candidates:
        step, call = step_cost(unet, latent, size, args.threads)
        print(f"| {name} | {size}x{size}x{latent} | {n_params(unet) / 1e6:.2f} M | {step:.3f} s "
              f"| {call * 1e3:.1f} ms |", flush=True)
    if args.skip_vae:
        return
    rng = random.Random(f"pilot5-eval-{args.seed}")
    singles = [sample_scene2(rng, 1, "plain", False) for _ in range(args.n)]
    multis = [sample_scene2(rng, 2, "plain", False) for _ in range(args.n // 2)]
    rows = [("rendered (no VAE)", None, "")]
    if args.f4_vae:
        from diffusers import AutoencoderKL

        rows.append(("factor 4 (32x32x4)", AutoencoderKL.from_pretrained(args.f4_vae, torch_dtype=torch.float32),
                     ""))
    vae, steps, secs = train_vae_f8(args.channels, args.vae_steps, args.vae_minutes, args.seed)
    vae.save_pretrained(Path(args.out) / "vae-f8", safe_serialization=True)
    rows.append((f"factor 8 (16x16x{args.channels})", vae, f"{steps} steps from scratch, {secs:.0f} s"))
    print(f"\nround trip read by checker2: {args.n} one-thing and {args.n // 2} two-thing world-2 scenes\n")
    print("| VAE | colour | background | kind | position | size | two things all right | trained |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v, note in rows:
        f = fidelity(v, singles, multis)
        print(f"| {name} | " + " | ".join(f"{100 * f[k]:.1f}%" for k in ("colour", "background", "kind", "position",
                                                                          "size", "two_all_right")) + f" | {note} |",
              flush=True)


if __name__ == "__main__":
    main()
