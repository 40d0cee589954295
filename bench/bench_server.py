"""Server overhead and throughput with the tiny pipeline.

For 1024x1024 outputs of the tiny random pipeline (generated at its 64px bucket, then
resized), compares end-to-end HTTP latency through a real uvicorn on 127.0.0.1 with the
pipeline's own time for the same work (the server's overhead = the difference), for
png/jpeg/webp/avif and b64_json/url, and measures requests/s at concurrency 1/8/32.

    .venv/bin/python bench/bench_server.py [--requests 12] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
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

from common import append_results, device_description, markdown_table  # noqa: E402


def parse_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def one(client, fmt: str, rf: str) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    raw = await client.images.with_raw_response.generate(
        model="tiny", prompt="a red circle on a blue background", size="1024x1024", output_format=fmt,
        response_format=rf, extra_body={"seed": 1})
    raw.parse()
    return time.perf_counter() - t0, parse_timing(raw.headers.get("server-timing", ""))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from openai import AsyncOpenAI

    from conftest import live_server, make_settings, tiny_config
    from imagegate.app import create_app
    from imagegate.backends.diffusers import DiffusersBackend
    from imagegate.engine.base import Job
    from imagegate.normalize import build_spec
    from tiny import build_tiny_sd

    tmp = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    model_path = build_tiny_sd(tmp)
    config = tiny_config(model_path, name="tiny")

    # The pipeline's own time for the same work, called directly (no server).
    backend = DiffusersBackend(config)
    backend.load()
    spec = build_spec(task="generate", model=config, requested_model=None, prompt="a red circle on a blue background",
                      n=1, size="1024x1024", quality=None, background=None, output_format="png",
                      output_compression=None, response_format="b64_json", stream=False, partial_images=None, seed=1)
    spec = backend.plan(spec).spec  # at the model's bucket, as the server runs it
    for _ in range(3):
        backend.run(Job(spec=spec))
    own = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        backend.run(Job(spec=spec))
        own.append(time.perf_counter() - t0)
    pipe_s = statistics.median(own)

    app = create_app(make_settings(tmp, queue_size=256), [config])
    rows = []
    with live_server(app) as base:
        client = AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0)
        for fmt in ("png", "jpeg", "webp", "avif"):
            for rf in ("b64_json", "url"):
                for _ in range(2):
                    await one(client, fmt, rf)
                lat, timings = [], []
                for _ in range(args.requests):
                    s, t = await one(client, fmt, rf)
                    lat.append(s)
                    timings.append(t)
                p50 = statistics.median(lat)
                enc = statistics.median(t.get("encode", 0.0) for t in timings) / 1000
                rows.append([fmt, rf, f"{pipe_s * 1000:.1f}", f"{p50 * 1000:.1f}", f"{enc * 1000:.1f}",
                             f"{(p50 - pipe_s) * 1000:.1f}", f"{(p50 - pipe_s) / p50 * 100:.0f}%"])
        conc_rows = []
        for c in (1, 8, 32):
            total = max(c * 2, args.requests)
            sem = asyncio.Semaphore(c)

            async def limited(sem: asyncio.Semaphore) -> float:
                async with sem:
                    return (await one(client, "jpeg", "b64_json"))[0]

            t0 = time.perf_counter()
            lats = await asyncio.gather(*(limited(sem) for _ in range(total)))
            wall = time.perf_counter() - t0
            lats = sorted(lats)
            conc_rows.append([c, total, f"{total / wall:.2f}", f"{statistics.median(lats) * 1000:.0f}",
                              f"{lats[int(0.95 * (len(lats) - 1))] * 1000:.0f}"])
        await client.close()

    t1 = markdown_table(["format", "response", "pipeline p50 ms", "end-to-end p50 ms", "encode p50 ms",
                         "overhead ms", "overhead share"], rows)
    t2 = markdown_table(["concurrency", "requests", "requests/s", "p50 ms", "p95 ms"], conc_rows)
    print(f"device: {device_description()}")
    print("tiny random SD pipeline, 64px bucket resized to 1024x1024, 3 steps (medium)\n")
    print(t1)
    print()
    print(t2)
    if not args.no_record:
        try:  # the three numbers of /proc/loadavg, without file I/O in the event loop
            load = [f"{x:.2f}" for x in os.getloadavg()]
        except OSError:
            load = ["?"]
        append_results("Server overhead and throughput (tiny pipeline, 1024x1024)",
                       "python bench/bench_server.py", t1 + "\n\n" + t2,
                       notes=f"float32; load average at the end {'/'.join(load)} on {os.cpu_count()} cores "
                             "(a shared machine: compare rows of one run, not runs)")


if __name__ == "__main__":
    asyncio.run(main())
