"""Throughput of a 200-line batch against the same 200 requests sent synchronously at
concurrency 8, in one run, through a real uvicorn on 127.0.0.1 serving imagegate-mini.

The sync side is the openai SDK's images.generate at concurrency 8; the batch side uploads
the JSONL, creates the batch and polls it until `completed` (wall time from upload to
completed), once per job-worker count (IMAGEGATE_JOB_WORKERS: how many lines feed the
engine's micro-batcher at once).

    .venv/bin/python bench/bench_batch.py [--requests 200] [--workers 2,8] [--size 256x256] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from common import append_results, device_description, load_average, markdown_table  # noqa: E402


def body(i: int, size: str, quality: str) -> dict[str, object]:
    return {"model": "imagegate-mini", "prompt": f"a red circle left of a blue square, variant {i}", "size": size,
            "quality": quality, "seed": i, "output_format": "jpeg"}


async def sync_run(client, n: int, size: str, quality: str, concurrency: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> float:
        async with sem:
            t0 = time.perf_counter()
            b = body(i, size, quality)
            await client.images.generate(model=b.pop("model"), prompt=b.pop("prompt"), size=b.pop("size"),
                                         quality=b.pop("quality"), output_format=b.pop("output_format"),
                                         extra_body=b)
            return time.perf_counter() - t0

    t0 = time.perf_counter()
    lats = await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, sorted(lats)


async def batch_run(client, n: int, size: str, quality: str) -> tuple[float, dict[str, int]]:  # type: ignore[no-untyped-def]
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/images/generations",
                                "body": body(i, size, quality)}) + "\n" for i in range(n))
    t0 = time.perf_counter()
    f = await client.files.create(file=("bench.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h")
    while b.status not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.2)
        b = await client.batches.retrieve(b.id)
    wall = time.perf_counter() - t0
    assert b.status == "completed", b
    out = (await client.files.content(b.output_file_id)).content.decode().splitlines()
    assert len(out) == n and len({json.loads(x)["custom_id"] for x in out}) == n
    return wall, {"completed": b.request_counts.completed, "failed": b.request_counts.failed}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--workers", default="2,8", help="IMAGEGATE_JOB_WORKERS values to measure the batch with")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--quality", default="low")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the settings below (make_settings: torch_threads=1)

    from openai import AsyncOpenAI

    from conftest import live_server, make_settings
    from imagegate.app import create_app
    from imagegate.registry import builtin_mini_config

    rows = []
    n = args.requests
    for k, workers in enumerate(int(w) for w in args.workers.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="imagegate-bench-batch-"))
        settings = make_settings(tmp, queue_size=256, job_workers=workers)  # 1 torch thread, 2 encode threads
        app = create_app(settings, [builtin_mini_config()])
        with live_server(app) as base:
            client = AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0, timeout=600)
            await sync_run(client, args.concurrency, args.size, args.quality, args.concurrency)  # warm-up
            if k == 0:
                wall, lats = await sync_run(client, n, args.size, args.quality, args.concurrency)
                rows.append([f"sync, concurrency {args.concurrency}", n, f"{wall:.1f}", f"{n / wall:.2f}",
                             f"{statistics.median(lats) * 1000:.0f}", "-"])
            wall, counts = await batch_run(client, n, args.size, args.quality)
            rows.append([f"batch, {workers} job worker(s)", n, f"{wall:.1f}", f"{n / wall:.2f}", "-",
                         f"{counts['completed']}/{counts['failed']}"])
            await client.close()

    table = markdown_table(["mode", "requests", "wall s", "images/s", "sync p50 ms", "batch ok/failed"], rows)
    print(f"device: {device_description()}")
    print(f"imagegate-mini, {args.size}, quality {args.quality}, jpeg, 1 image per request\n")
    print(table)
    if not args.no_record:
        load = load_average()
        append_results(f"Batch vs synchronous throughput (imagegate-mini, {args.size}, {args.quality})",
                       "python bench/bench_batch.py " + " ".join(sys.argv[1:]), table,
                       notes=f"float32; one run, one process; load average at the end {load} on "
                             f"{os.cpu_count()} cores (a shared machine: compare rows of one run, not runs)")


if __name__ == "__main__":
    asyncio.run(main())
