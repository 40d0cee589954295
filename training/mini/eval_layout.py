"""Several things in one prompt: the model alone against the server's layout (imagegate.mini.compose).

    python -m training.mini.eval_layout [--model DIR] [--n 300] [--seed 0] [--quality medium] [--one]

Model 1's held-out prompts with two and three things (``prompts.heldout_examples`` with no
one-thing prompts; ``--one``: one-thing prompts only, where a small thing is laid out), each
generated twice with the same seed: by the pipeline alone, as ``evaluate`` does, and through the
server's ``DiffusersBackend`` (lexicon, then the layout when ``compose.plan`` reads one). Both are
judged by model 1's checker. Prints, per group, the share of prompts whose things are all right
(``all_objects``: colour, shape, and position or relation) and whose every check is right, and
how many prompts the layout took.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
from pathlib import Path

import numpy as np

from imagegate.mini import QUALITY_PRESETS

from .checker import check
from .evaluate import checks_of
from .prompts import heldout_examples


def evaluate_layout(model_dir: Path, n: int, seed: int, quality: str, one: bool = False,
                    log=print) -> dict[str, float]:
    import torch

    from imagegate.backends.diffusers.backend import DiffusersBackend
    from imagegate.backends.diffusers.planning import plan
    from imagegate.mini import compose
    from imagegate.normalize import build_spec
    from imagegate.registry import builtin_mini_config

    torch.set_num_threads(1)
    config = dataclasses.replace(builtin_mini_config(), source=str(model_dir))
    backend = DiffusersBackend(config)
    backend.load()
    pipe = backend.pipes["txt2img"]
    steps, cfg = QUALITY_PRESETS[quality]
    per: dict[str, list[bool]] = collections.defaultdict(list)
    t0 = time.time()
    for k, (scene, prompt, claims) in enumerate(heldout_examples(seed, n, mix=(1.0, 0.0, 0.0) if one
                                                                  else (0.0, 0.5, 0.5))):
        group = {1: f"one-{scene.objects[0].size}", 2: "two-" + ("relation" if claims.relation else "absolute"),
                 3: "three"}[len(scene.objects)]
        s = seed * 100003 + k
        alone = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg,
                     generator=torch.Generator().manual_seed(s)).images[0]
        spec = build_spec(task="generate", model=config, requested_model=None, prompt=prompt, n=1, size="1024x1024",
                          quality=quality, background=None, output_format=None, output_compression=None,
                          response_format=None, stream=False, partial_images=None, seed=s)
        served = backend.run(plan(config, False, spec, "txt2img", [], None))[0].resize((128, 128))
        laid = compose.plan(backend.rewrite_prompt(prompt), s) is not None
        for name, img in (("alone", alone), ("served", served)):
            res = check(img, scene, claims)
            for g in (group, "two" if len(scene.objects) == 2 else None):
                if g:
                    # one thing: its colour, shape, size and position (check() names them apart)
                    per[f"{g}/{name}/all_objects"].append(res["all_objects"] if "all_objects" in res else all(
                        res[a] for a in ("colour", "shape", "size", "position")))
                    per[f"{g}/{name}/strict"].append(all(checks_of(res).values()))
        for g in (group, "two" if len(scene.objects) == 2 else None):
            if g:
                per[f"{g}/laid_out"].append(laid)
    log(f"model: {model_dir}  quality={quality}  n={n} held-out prompts with {'1' if one else '2 and 3'} things, "
        f"seed={seed}, "
        f"{time.time() - t0:.0f} s")
    for key in sorted(per):
        log(f"  {key:34s} {np.mean(per[key]):.3f}  (n={len(per[key])})")
    return {key: float(np.mean(v)) for key, v in per.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder (default: shipped weights)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", default="medium", choices=list(QUALITY_PRESETS))
    ap.add_argument("--one", action="store_true", help="one-thing prompts instead (a small thing is laid out)")
    args = ap.parse_args(argv)
    from imagegate.mini import WEIGHTS_DIR

    evaluate_layout(Path(args.model) if args.model else WEIGHTS_DIR, args.n, args.seed, args.quality, args.one)


if __name__ == "__main__":
    main()
