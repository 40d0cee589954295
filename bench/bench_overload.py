"""Overload: offer 10x the load the server can serve and check that it degrades cleanly.

A real `imagegate serve` child process (the built-in model unless --models is given):
1. capacity: closed loop at concurrency 1 for --calibrate seconds -> requests/s served;
2. overload: open-loop arrivals at --factor x that rate for --seconds, each request with a
   --timeout (a request still unanswered then counts as a hang), while /health is polled
   every 100 ms;
3. after: the process's RSS a few seconds after the load stops.

Prints outcomes by status with p50/p95 latency, /health latency, and idle/peak/after RSS,
and appends them to bench/RESULTS.md with the date, device and commit. The verdict line
checks the issue's properties: only 200/429/503 (503s with Retry-After), no hang, no 5xx,
/health under 100 ms throughout, memory back near idle.

    .venv/bin/python bench/bench_overload.py [--seconds 20] [--factor 10] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import httpx2  # noqa: E402

from common import append_results, markdown_table  # noqa: E402

MB = 1024 * 1024
BODY = {"prompt": "a red circle on a blue background", "size": "256x256", "quality": "low"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def calibrate(base: str, seconds: float) -> float:
    async with httpx2.AsyncClient(base_url=base, timeout=120) as c:
        await c.post("/v1/images/generations", json=BODY)  # warm-up
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            r = await c.post("/v1/images/generations", json=BODY)
            assert r.status_code == 200, r.text
            done += 1
        return done / (time.perf_counter() - t0)


async def overload(base: str, rate: float, seconds: float,
                   timeout: float) -> tuple[list[tuple[str, float, bool]], list[float]]:
    results: list[tuple[str, float, bool]] = []  # (outcome, latency s, has Retry-After)
    stop_file = Path(tempfile.mkdtemp()) / "stop"
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=64)

    async with httpx2.AsyncClient(base_url=base, timeout=timeout, limits=limits) as c:
        async def one() -> None:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/images/generations", json=BODY)
                results.append((str(r.status_code), time.perf_counter() - t0, "retry-after" in r.headers))
            except httpx2.TimeoutException:
                results.append(("hang", time.perf_counter() - t0, False))
            except httpx2.HTTPError as exc:
                results.append((type(exc).__name__, time.perf_counter() - t0, False))

        poller = asyncio.get_running_loop().run_in_executor(None, _poll_health_in_a_process, base, stop_file)
        tasks = []
        t0 = time.perf_counter()
        k = 0
        while (now := time.perf_counter() - t0) < seconds:
            due = k / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one()))
            k += 1
        await asyncio.gather(*tasks)
        stop_file.touch()
        health = await poller
    return results, health


def _poll_health_in_a_process(base: str, stop_file: Path) -> list[float]:
    """/health latency, measured from a process of its own: in the load generator's process
    its event loop and GIL would be part of the figure."""
    import subprocess

    code = (
        "import sys, time, httpx2, pathlib\n"
        "stop = pathlib.Path(sys.argv[2])\n"
        "with httpx2.Client(base_url=sys.argv[1], timeout=5) as h:\n"
        "    h.get('/health')  # the client's own first-call set-up is not the server's latency\n"
        "    while not stop.exists():\n"
        "        t0 = time.perf_counter()\n"
        "        try:\n"
        "            h.get('/health'); print(time.perf_counter() - t0, flush=True)\n"
        "        except httpx2.HTTPError:\n"
        "            print('inf', flush=True)\n"
        "        time.sleep(0.1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, base, str(stop_file)], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--factor", type=float, default=10)
    ap.add_argument("--calibrate", type=float, default=8)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    import procserver

    with tempfile.TemporaryDirectory() as tmp:
        server = procserver.start(Path(tmp) / "data", args.models,
                                  IMAGEGATE_TORCH_THREADS="1", IMAGEGATE_ENCODE_WORKERS="1")
        try:
            capacity = asyncio.run(calibrate(server.base, args.calibrate))
            time.sleep(1)
            idle = server.status("VmRSS")
            exact = server.reset_peak()
            rate = capacity * args.factor
            t0 = time.perf_counter()
            results, health = asyncio.run(overload(server.base, rate, args.seconds, args.timeout))
            wall = time.perf_counter() - t0
            peak = server.status("VmHWM")
            time.sleep(3)
            after = server.status("VmRSS")
        finally:
            server.stop()

    by: dict[str, list[float]] = collections.defaultdict(list)
    for outcome, latency, _ in results:
        by[outcome].append(latency)
    rows = [[k, len(v), f"{100 * len(v) / len(results):.1f}%", f"{pct(v, 0.5):.3f}", f"{pct(v, 0.95):.3f}"]
            for k, v in sorted(by.items())]
    table = markdown_table(["outcome", "requests", "share", "p50 s", "p95 s"], rows)
    finite = [h for h in health if h != float("inf")]
    served = len(by.get("200", []))
    summary = markdown_table(
        ["capacity req/s", "offered req/s", "served req/s", "/health p50 ms", "/health p99 ms", "/health max ms",
         "RSS idle MB", "RSS peak MB", "RSS after MB"],
        [[f"{capacity:.2f}", f"{rate:.1f}", f"{served / wall:.2f}", f"{1000 * pct(finite, 0.5):.1f}",
          f"{1000 * pct(finite, 0.99):.1f}",
          f"{1000 * max(health):.1f}", f"{idle / MB:.0f}", f"{peak / MB:.0f}{'' if exact else ' (since start)'}",
          f"{after / MB:.0f}"]])
    clean = set(by) <= {"200", "429", "503"} and all(ra for o, _, ra in results if o == "503")
    ok_health = max(health) < 0.1
    ok_memory = after - idle < 128 * MB
    verdict = (f"only 200/429/503 with Retry-After: {'yes' if clean else 'NO'}; "
               f"/health under 100 ms: {'yes' if ok_health else 'NO'}; "
               f"memory back within 128 MB of idle: {'yes' if ok_memory else 'NO'}")
    print(table, "", summary, "", verdict, sep="\n")
    if not args.no_record:
        model = str(args.models) if args.models else "imagegate-mini (built-in)"
        append_results("Overload (10x capacity)", "python bench/bench_overload.py " + " ".join(sys.argv[1:]),
                       table + "\n\n" + summary,
                       notes=f"model: {model}, {BODY['size']} {BODY['quality']}, {args.seconds:.0f} s of open-loop "
                             f"arrivals at {args.factor:g}x capacity, request timeout {args.timeout:.0f} s; {verdict}")


if __name__ == "__main__":
    main()
