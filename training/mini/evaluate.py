"""Evaluate imagegate-mini on held-out prompts with the deterministic checker.

    python -m training.mini.evaluate --model DIR --n 300 [--seed 0] [--quality medium]
    python -m training.mini.evaluate --targets [--model DIR] [--n-per-line 40]   (issue #27's lines)

Prints: the checker's own accuracy on rendered images (must be >= 99%), the
same checks after the model's VAE round trip (the ceiling it puts on the model),
per-attribute accuracy of the model, the inpainting evaluation, and as its
last line ``adherence: X`` (mean over prompts of the fraction of the prompt's
checks that pass; see docs/imagegate-mini.md).
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imagegate.mini import NATIVE_SIZE, QUALITY_PRESETS

from .checker import check, read
from .prompts import Claims, ObjClaim, describe, heldout_examples, is_heldout
from .scenes import COLOUR_NAMES, SHAPES, SIZES, Obj, Scene, render, sample_scene


def load_pipeline(model_dir, threads: int | None = None):
    import torch
    from diffusers import DiffusionPipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = DiffusionPipeline.from_pretrained(str(model_dir), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image, feather: int = 3) -> Image.Image:
    """original where the mask keeps (black), generated where it repaints (white).

    The seam is feathered *inward* only, so every pixel outside the mask is
    exactly the original.
    """
    orig = np.asarray(original.convert("RGB"), dtype=np.float32)
    gen = np.asarray(generated.convert("RGB").resize(original.size, Image.BICUBIC), dtype=np.float32)
    m = np.asarray(mask.convert("L").resize(original.size, Image.NEAREST)) > 127
    alpha = np.zeros(m.shape, np.float32)
    cur = m.copy()
    for _ in range(feather):
        alpha += cur
        e = cur.copy()
        e[1:, :] &= cur[:-1, :]
        e[:-1, :] &= cur[1:, :]
        e[:, 1:] &= cur[:, :-1]
        e[:, :-1] &= cur[:, 1:]
        cur = e
    alpha = (alpha / max(feather, 1))[..., None]
    out = orig * (1 - alpha) + gen * alpha
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else 0.0
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0 ** 2 / mse))


def checks_of(res: dict[str, bool]) -> dict[str, bool]:
    """The per-prompt checks that count towards adherence."""
    return {k: v for k, v in res.items() if k not in ("count", "all_objects")}


def validate_checker(n: int, seed: int) -> float:
    ok = tot = 0
    for scene, _, claims in heldout_examples(seed + 777, n):
        res = checks_of(check(render(scene), scene, claims))
        ok += sum(res.values())
        tot += len(res)
    return ok / tot


def validate_vae(pipe, n: int, seed: int) -> float:
    """The same checks on rendered scenes sent through the model's own VAE (encode, decode): the ceiling
    the VAE puts on everything the UNet draws."""
    import torch

    ok = tot = 0
    proc = pipe.image_processor
    for scene, _, claims in heldout_examples(seed + 555, n):
        x = proc.preprocess(render(scene)).to(pipe.vae.dtype)
        with torch.no_grad():
            y = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
        res = checks_of(check(proc.postprocess(y, output_type="pil")[0], scene, claims))
        ok += sum(res.values())
        tot += len(res)
    return ok / tot


def inpaint_cases(n: int, seed: int):
    """Two-object scenes; object 0 is replaced by a new colour+shape at the same place."""
    rng = random.Random(f"inpaint-{seed}")
    cases = []
    while len(cases) < n:
        scene = sample_scene(rng, 2)
        old, other = scene.objects
        colour = rng.choice([c for c in COLOUR_NAMES if c not in (scene.background, old.colour, other.colour)])
        shape = rng.choice([s for s in SHAPES if s != old.shape])
        new = Obj(shape, colour, old.size, old.pos, old.cx, old.cy)
        new_scene = Scene(scene.background, [new, other])
        claims = Claims(background=True, objects=[ObjClaim(), ObjClaim()])
        text = None
        for _ in range(200):
            t, _ = describe(new_scene, rng, full=True, form="absolute")
            if is_heldout(t):
                text = t
                break
        if text is None:
            continue
        r = SIZES[old.size] + 6
        mask = Image.new("L", (NATIVE_SIZE, NATIVE_SIZE), 0)
        from PIL import ImageDraw

        ImageDraw.Draw(mask).rectangle([old.cx - r, old.cy - r, old.cx + r, old.cy + r], fill=255)
        cases.append((scene, new_scene, text, claims, mask))
    return cases


def run_inpaint(pipe, n: int, seed: int, steps: int, cfg: float, log=print, save_dir: Path | None = None):
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    ip = StableDiffusionInpaintPipeline(**pipe.components)
    ip.set_progress_bar_config(disable=True)
    psnr_out, psnr_raw, recog, other_ok = [], [], 0, 0
    sheet = Image.new("RGB", (3 * 128 * 2, 128 * ((min(n, 8) + 1) // 2)), "white") if save_dir else None
    for k, (scene, new_scene, text, claims, mask) in enumerate(inpaint_cases(n, seed)):
        orig = render(scene)
        g = torch.Generator().manual_seed(seed * 100003 + k)
        gen = ip(text, image=orig, mask_image=mask, num_inference_steps=steps, guidance_scale=cfg,
                 strength=1.0, generator=g, height=NATIVE_SIZE, width=NATIVE_SIZE).images[0]
        out = composite(orig, gen, mask)
        keep = np.asarray(mask) <= 127
        o, c, rw = (np.asarray(x, dtype=np.float32) for x in (orig, out, gen))
        psnr_out.append(psnr(o[keep], c[keep]))
        psnr_raw.append(psnr(o[keep], rw[keep]))
        r = read(out)
        newo = new_scene.objects[0]
        hit = [d for d in r.objects if d.colour == newo.colour and d.shape == newo.shape]
        recog += bool(hit) and hit[0].pos == newo.pos
        res = check(out, new_scene, claims)
        other_ok += res["obj1"]
        if sheet is not None and k < 8:
            x, y = (k % 2) * 384, (k // 2) * 128
            for j, im in enumerate((orig, gen, out)):
                sheet.paste(im, (x + 128 * j, y))
    if sheet is not None:
        sheet.save(save_dir / "inpaint_sheet.png")
    return {
        "n": n,
        "psnr_outside_mask_composited_db": float(np.min(psnr_out)),
        "psnr_outside_mask_composited_mean_db": float(np.mean(psnr_out)),
        "psnr_outside_mask_raw_pipeline_db": float(np.mean(psnr_raw)),
        "new_object_recognised": recog / n,
        "kept_object_intact": other_ok / n,
    }


def evaluate(model_dir, n: int = 300, seed: int = 0, quality: str = "medium", n_inpaint: int = 50,
             threads: int = 1, log=print, save_dir: Path | None = None) -> dict:
    import torch

    steps, cfg = QUALITY_PRESETS[quality]
    t0 = time.time()
    chk = validate_checker(200, seed)
    log(f"checker accuracy on rendered images: {chk:.4f} (n=200 scenes)")
    pipe = load_pipeline(model_dir, threads)
    vae_rt = validate_vae(pipe, 100, seed)
    log(f"VAE round trip (rendered scenes encoded and decoded, same checks): {vae_rt:.4f} (n=100)")
    ex = heldout_examples(seed, n)
    per = collections.defaultdict(list)  # "group/attr" -> [bool]
    adher, strict = [], []
    sheet = Image.new("RGB", (8 * 128, 4 * 128), "white") if save_dir else None
    times = []
    for k, (scene, prompt, claims) in enumerate(ex):
        g = torch.Generator().manual_seed(seed * 100003 + k)
        t1 = time.time()
        img = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg, generator=g).images[0]
        times.append(time.time() - t1)
        if sheet is not None and k % max(1, n // 32) == 0 and k // max(1, n // 32) < 32:
            j = k // max(1, n // 32)
            sheet.paste(img, ((j % 8) * 128, (j // 8) * 128))
        res = check(img, scene, claims)
        nobj = len(scene.objects)
        grp = {1: "one", 2: "two-" + ("relation" if claims.relation else "absolute"), 3: "three"}[nobj]
        for a, v in res.items():
            per[f"{grp}/{a}"].append(v)
            if nobj == 2:
                per[f"two/{a}"].append(v)
        c = checks_of(res)
        adher.append(sum(c.values()) / len(c))
        strict.append(all(c.values()))
    if sheet is not None:
        sheet.save(save_dir / "eval_sheet.png")
    log(f"model: {model_dir}  quality={quality} steps={steps} cfg={cfg}  n={n} held-out prompts, seed={seed}")
    log(f"generation time per image: p50 {np.median(times):.3f}s  (threads={threads})")
    for key in sorted(per):
        v = per[key]
        log(f"  {key:28s} {np.mean(v):.3f}  (n={len(v)})")
    inp = run_inpaint(pipe, n_inpaint, seed, steps, cfg, log, save_dir) if n_inpaint else {}
    for kk, vv in inp.items():
        log(f"  inpaint/{kk:40s} {vv:.3f}" if isinstance(vv, float) else f"  inpaint/{kk:40s} {vv}")
    summary = {k: float(np.mean(v)) for k, v in per.items()}
    summary.update({f"inpaint/{k}": v for k, v in inp.items()})
    summary["checker"] = chk
    summary["vae_round_trip"] = vae_rt
    summary["strict_all_checks"] = float(np.mean(strict))
    summary["adherence"] = float(np.mean(adher))
    log(f"all checks of a prompt right (strict): {np.mean(strict):.3f}")
    log(f"eval wall time {time.time() - t0:.0f}s")
    log(f"adherence: {np.mean(adher):.4f}")
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder (default: shipped weights)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", default="medium", choices=list(QUALITY_PRESETS))
    ap.add_argument("--n-inpaint", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-dir", default=None, help="write contact sheets here")
    ap.add_argument("--targets", action="store_true",
                    help="the issue #27 target lines instead (training/mini/targets.py), --n-per-line each")
    ap.add_argument("--n-per-line", type=int, default=40)
    ap.add_argument("--no-server", dest="server", action="store_false",
                    help="--targets without the lines that go through create_app (non-square, transparent)")
    ap.add_argument("--language-only", action="store_true",
                    help="--targets: only the held-out line, as the model reads it and as served (lexicon)")
    ap.add_argument("--edits-only", action="store_true",
                    help="--targets: only the edit lines (change-only inpainting, mask-less instructions)")
    ap.add_argument("--objects-only", action="store_true",
                    help="--targets: only the two- and three-thing lines, by the model alone and as served (layout)")
    ap.add_argument("--served-only", action="store_true",
                    help="--targets: only the lines served through the prompt reader (*_served, each split's)")
    ap.add_argument("--kinds-only", action="store_true",
                    help="--targets: only each everyday kind, then each shape, on its own fresh prompts, served, "
                         "--n-per-line a kind")
    ap.add_argument("--part", choices=("splits", "rest"), default=None,
                    help="--targets: only the later held-out splits' lines (splits), or every other line (rest): "
                         "a full run's drawings in two processes, one a core")
    args = ap.parse_args(argv)
    flags = ("language_only", "edits_only", "objects_only", "served_only", "kinds_only", "part")
    only = [flag for flag in flags if getattr(args, flag)]
    names = ", ".join("--" + f.replace("_", "-") for f in flags)
    if only and not args.targets:
        ap.error(f"{names} select --targets lines; add --targets")
    if len(only) > 1:
        ap.error(f"{names} exclude each other")
    from imagegate.mini import WEIGHTS_DIR

    if args.targets:
        from .targets import evaluate_targets

        evaluate_targets(args.model or WEIGHTS_DIR, args.n_per_line, args.seed, args.quality, args.threads,
                         args.server, language_only=args.language_only, edits_only=args.edits_only,
                         objects_only=args.objects_only, served_only=args.served_only, kinds_only=args.kinds_only,
                         part=args.part)
        return

    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    evaluate(args.model or WEIGHTS_DIR, args.n, args.seed, args.quality, args.n_inpaint, args.threads,
             save_dir=save_dir)


if __name__ == "__main__":
    sys.exit(main())
