"""Benchmark the shipped imagegate-mini model at each quality preset.

    .venv/bin/python bench/bench_mini.py [--n 20] [--threads 1] [--model DIR] [--no-append]
                                         [--channels-last] [--compile MODE]

End-to-end StableDiffusionPipeline calls (text encoding, CFG denoising,
VAE decode, PIL conversion) at 128x128, one image per call; then held-out prompts
with two and three things through the server's backend, which draws one picture
per thing and composes them (imagegate.mini.compose).  Prints a
markdown table and appends it to bench/RESULTS.md (bench/common.append_results).
The model is loaded by the server's DiffusersBackend with the server's settings for it
(``compile = "trace"``); ``--channels-last`` and ``--compile MODE`` override the models
file's ``channels_last`` and ``compile`` (off, trace, full, ...). The warm-up (timed and
reported apart) runs enough steps for a traced UNet to be traced, or a compiled one compiled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # training.mini (the held-out prompts) is not installed

from common import append_results, device_description, markdown_table  # noqa: E402
from imagegate.backends.diffusers.options import COMPILE_MODES  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20, help="images per preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--channels-last", action="store_true", help="UNet in channels_last memory format")
    ap.add_argument("--compile", default=None, choices=COMPILE_MODES,
                    help="the models file's compile setting (default: the built-in model's, trace)")
    args = ap.parse_args(argv)

    import dataclasses

    import torch

    from imagegate.backends.diffusers import DiffusersBackend
    from imagegate.backends.diffusers.tracing import HOT_AFTER
    from imagegate.mini import QUALITY_PRESETS, WEIGHTS_DIR
    from imagegate.registry import builtin_mini_config
    from training.mini.prompts import heldout_examples

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else WEIGHTS_DIR
    # the server's loader, so the two flags are the models file's settings, not a copy of them
    base = builtin_mini_config()
    config = dataclasses.replace(base, source=str(model), options={
        **base.options, "channels_last": args.channels_last, "compile": args.compile or base.options["compile"]})
    backend = DiffusersBackend(config)
    backend.load()
    pipe = backend.pipes["txt2img"]
    prompts = [p for _, p, _ in heldout_examples(0, args.n)]
    t0 = time.perf_counter()
    pipe("warm up", num_inference_steps=HOT_AFTER + 2, guidance_scale=2.0)
    warm = time.perf_counter() - t0
    rows = []
    for name, (steps, cfg) in QUALITY_PRESETS.items():
        ts = []
        for k, p in enumerate(prompts):
            t0 = time.perf_counter()
            pipe(p, num_inference_steps=steps, guidance_scale=cfg, generator=torch.Generator().manual_seed(k))
            ts.append(time.perf_counter() - t0)
        rows.append((name, steps, cfg, statistics.median(ts), pct(ts, 0.95), statistics.mean(ts)))
    # Prompts with two / three things as the server serves them: one picture per thing, composed
    # (imagegate.mini.compose), so through the backend rather than the bare pipeline.
    from imagegate.backends.diffusers.planning import plan
    from imagegate.normalize import build_spec

    steps, cfg = QUALITY_PRESETS["medium"]
    for things, mix in ((2, (0.0, 1.0, 0.0)), (3, (0.0, 0.0, 1.0))):
        ts = []
        for k, (_, p, _) in enumerate(heldout_examples(0, args.n, mix=mix)):
            spec = build_spec(task="generate", model=config, requested_model=None, prompt=p, n=1, size="1024x1024",
                              quality="medium", background=None, output_format=None, output_compression=None,
                              response_format=None, stream=False, partial_images=None, seed=k)
            t0 = time.perf_counter()
            backend.run(plan(config, False, spec, "txt2img", [], None))
            ts.append(time.perf_counter() - t0)
        rows.append((f"medium, {things} things laid out", steps, cfg, statistics.median(ts), pct(ts, 0.95),
                     statistics.mean(ts)))
    cmd = ("python bench/bench_mini.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    notes = (f"model: `{model.relative_to(ROOT) if model.is_relative_to(ROOT) else model}`, 128x128, "
             f"StableDiffusionPipeline end to end, CFG on, {args.n} images per preset"
             + (", UNet channels_last" if args.channels_last else "")
             + f", compile = {config.options['compile']!r} (warm-up of {HOT_AFTER + 2} steps {warm:.1f} s)")
    table = markdown_table(["quality", "steps", "guidance", "p50 s/image", "p95 s/image", "mean s/image"],
                           [[name, steps, cfg, f"{p50:.3f}", f"{p95:.3f}", f"{mean:.3f}"]
                            for name, steps, cfg, p50, p95, mean in rows])
    print(f"device: {device_description()}\n{notes}\n\n{table}")
    if not args.no_append:
        append_results("imagegate-mini", cmd, table, notes)


if __name__ == "__main__":
    main()
