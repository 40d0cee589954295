"""Safety in numbers: the input stage's precision and recall on a labelled prompt set
(bench/data/moderation_prompts.tsv: benign look-alikes and harmful prompts across the
categories and obfuscations), at moderation=auto and =low; the open_nsfw scores of benign
images from the built-in model (imagegate-mini, through the SDK); and each stage's cost
per image, p50 in ms: the input check of a prompt, the output classifier (1024x1024 image,
thumbnail included; alone and in a batch of 4) and C2PA signing per format.

    .venv/bin/python bench/bench_moderation.py [--repeats 30] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import append_results, device_description, markdown_table  # noqa: E402

DATA = ROOT / "bench" / "data" / "moderation_prompts.tsv"


def load() -> list[tuple[str, str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, category, prompt = line.split("\t")
        rows.append((label, category, prompt))
    return rows


def p50_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def input_stage(rows: list[tuple[str, str, str]]) -> tuple[str, list[str]]:
    from imagegate.safety.moderation import TEXT_THRESHOLDS
    from imagegate.safety.text import MINORS, WordLists

    words = WordLists.from_files()
    table, notes = [], []
    for level, threshold in TEXT_THRESHOLDS.items():
        tp = fp = fn = tn = 0
        for label, category, prompt in rows:
            scores = words.score(prompt).scores
            blocked = [c for c, s in scores.items() if (s > 0 if c == MINORS else s >= threshold)]
            if label == "harmful":
                if blocked:
                    tp += 1
                else:
                    fn += 1
                    notes.append(f"{level}: missed ({category}) {prompt!r}")
            elif blocked:
                fp += 1
                notes.append(f"{level}: false positive {prompt!r} → {blocked}")
            else:
                tn += 1
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        table.append([f"moderation={level}", tp + fn, tn + fp, f"{precision:.3f}", f"{recall:.3f}", fp, fn])
    return markdown_table(["level", "harmful", "benign", "precision", "recall", "false pos.", "missed"], table), notes


async def mini_scores(n: int) -> list[float]:
    """open_nsfw scores of benign built-in-model images (512x512, low), generated through the SDK."""
    from conftest import make_settings, running, sdk_client
    from imagegate.app import create_app

    prompts = ["a red circle left of a green square", "a yellow star on a purple background", "a blue heart",
               "a white triangle above a black square", "an orange ring on a grey background",
               "a pink square", "a green circle and a yellow star", "a purple triangle"]
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(make_settings(Path(tmp)))
        async with running(app):
            sdk = sdk_client(app)
            images = []
            for i in range(n):
                r = await sdk.images.generate(prompt=prompts[i % len(prompts)], size="512x512", quality="low",
                                              extra_body={"seed": i})
                images.append(Image.open(io.BytesIO(base64.b64decode((r.data or [])[0].b64_json or ""))))
            await sdk.close()
            return app.state.container.moderation.moderator.classifier.scores(images)


def stage_costs(repeats: int) -> str:
    from imagegate.postprocess import encode
    from imagegate.safety import thumbnail
    from imagegate.safety.images import shared_classifier
    from imagegate.safety.provenance import Signer, dev_credentials
    from imagegate.safety.text import WordLists

    words = WordLists.from_files()
    prompt = "a watercolour of a lighthouse on a cliff at dusk, waves crashing, gulls, warm light " * 2
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    clf = shared_classifier(1)
    text_ms = p50_ms(lambda: words.score(prompt), repeats)
    rows = [["input check (word lists), one ~170-character prompt", f"{text_ms:.2f}"],
            ["output classifier, 1 image (1024² → thumbnail → open_nsfw)",
             f"{p50_ms(lambda: clf.scores([img]), repeats):.1f}"],
            ["output classifier, batch of 4, per image",
             f"{p50_ms(lambda: clf.scores([img] * 4), max(3, repeats // 4)) / 4:.1f}"],
            ["thumbnail alone (1024² → 256²)", f"{p50_ms(lambda: thumbnail(img), repeats):.1f}"]]
    with tempfile.TemporaryDirectory() as tmp:
        signer = Signer(dev_credentials(Path(tmp)))
        for fmt in ("png", "jpeg", "webp", "avif", "gif"):
            data = encode(img, fmt, None)
            ms = p50_ms(lambda d=data, f=fmt: signer.sign(d, f, model="bench", ingredients=()), repeats)
            rows.append([f"C2PA signing, 1024² {fmt} ({len(data) // 1024} KiB)", f"{ms:.1f}"])
    return markdown_table(["stage (per image)", "p50 ms"], rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--mini-images", type=int, default=8)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = load()
    quality, notes = input_stage(rows)
    print(f"device: {device_description()}\n\ninput stage, {len(rows)} labelled prompts\n{quality}")
    for n in notes:
        print("  ", n)
    scores = asyncio.run(mini_scores(args.mini_images))
    score_line = (f"open_nsfw scores of {len(scores)} benign imagegate-mini images (512², low): max {max(scores):.4f}, "
                  f"median {statistics.median(scores):.4f} (thresholds: auto 0.6, low 0.85)")
    print("\n" + score_line)
    costs = stage_costs(args.repeats)
    print("\n" + costs)
    if not args.no_record:
        append_results("Moderation and provenance (bench_moderation.py)", "bench/bench_moderation.py",
                       quality + "\n\n" + costs, notes=score_line + "; onnxruntime 1 thread")


if __name__ == "__main__":
    main()
