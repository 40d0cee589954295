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

This file is the command line; the work is in ``components.py`` (the networks,
schedulers, rendered tensors, saved folder and the World table), ``parse.py``
(model 1's parse targets and head), ``stage1.py``, ``stage2.py`` (2a and 2b)
and ``resume.py`` (what a saved stage-2b state must match to be continued).

Checkpoints are complete diffusers folders (fp16 safetensors) written to
``--out`` atomically every ``--ckpt-minutes``; unless ``--no-sheets``, a contact
sheet of samples is written to the work dir at each checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

import torch

from .components import get_world, log
from .stage1 import train_vae
from .stage2 import train_unet
from .tokenizer import build_tokenizer


# ----------------------------------------------------------------- stopping
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
