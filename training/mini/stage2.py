"""Stage 2: 2a, the text encoder learns to parse prompts (no images); 2b, the UNet and the text encoder
learn the v-prediction loss on a latent cache of rendered scenes, resumable (``resume.py``), with an EMA
of the weights written as a diffusers folder at each checkpoint."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .components import (
    VAE_FACTOR,
    get_world,
    image_tensors,
    log,
    make_scheduler_train,
    make_text_encoder,
    n_params,
    render_arrays,
    save_pipeline,
)
from .parse import ParseHead
from .resume import load_state, save_training_state
from .scenes import render

COOLDOWN = 0.5  # fraction of stage 2b at constant LR before the linear cool-down


# ----------------------------------------------------------------- stage 2a
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
            render_arrays(c, world) for c in chunks)
        for i, (imgs, ws) in zip(range(0, n, 128), rendered, strict=True):
            x, w = image_tensors(imgs, ws)
            means.append(vae.encode(x.to(vae.device)).latent_dist.mean.half().cpu())
            weights.append(F.avg_pool2d(w, VAE_FACTOR).half())  # object weight per latent pixel
            if i % 5120 == 0:
                log(f"encoded {i}/{n} {time.time() - t0:.0f}s")
    mean, weight = torch.cat(means), torch.cat(weights)
    torch.save({"mean": mean, "weight": weight, "vae": key}, cache)
    return scenes, mean, weight


def _render_chunk(job):
    scenes, world = job
    return render_arrays(scenes, world)


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


# ----------------------------------------------------------------- checkpoints
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
