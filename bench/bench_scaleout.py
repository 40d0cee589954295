"""Scale-out on Ray Serve, on this machine: images/s with 1 and 2 replicas of the built-in
model, and what the Ray hop adds to one request's latency against the one-process server,
measured in one run.

- A Ray head is started here (`ray start --head`), and `imagegate serve --engine ray` joins it
  (as on a cluster); each model replica is a CPU replica on one torch thread.
- The one-process server (`imagegate serve`) runs beside it on one torch thread too, so the
  latency difference at concurrency 1 is the hop (ingress -> replica -> ingress), requests
  alternating between the two.
- Throughput: `--requests` requests at concurrency `--concurrency` (HTTP client threads),
  256x256 low quality, in `--rounds` rounds that alternate the setups, so drift in the
  shared machine's load hits all of them alike.

    .venv/bin/python bench/bench_scaleout.py [--requests 40] [--concurrency 8] [--rounds 3] [--no-record]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from ray_support import ray_head  # noqa: E402

from common import append_results, device_description, load_average, markdown_table  # noqa: E402
from conftest import free_port  # noqa: E402

BIN = Path(sys.executable).parent
PROMPT = "a red circle on a blue background"


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + log.read_text()[-3000:])
        try:
            if httpx2.get(base + "/health", timeout=5).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("not healthy:\n" + log.read_text()[-3000:])
        time.sleep(1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def server(work: Path, name: str, env: dict[str, str], args: list[str]) -> Iterator[str]:
    port = free_port()
    log = work / f"{name}.log"
    proc = subprocess.Popen([str(BIN / "imagegate"), "serve", "--port", str(port), *args], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        yield base
    finally:
        stop(proc)


def one(client: httpx2.Client, base: str, model: str = "imagegate-mini") -> tuple[float, str]:
    t0 = time.perf_counter()
    r = client.post(base + "/v1/images/generations", timeout=300,
                    json={"model": model, "prompt": PROMPT, "size": "256x256", "quality": "low"})
    r.raise_for_status()
    return time.perf_counter() - t0, r.headers.get("x-imagegate-replica", "")


def throughput(base: str, model: str, requests: int, concurrency: int) -> tuple[float, int]:
    with httpx2.Client() as c:
        for _ in range(2):
            one(c, base, model)  # warm
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            done = list(pool.map(lambda _: one(c, base, model), range(requests)))
        elapsed = time.perf_counter() - t0
    return requests / elapsed, len({r for _, r in done if r})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-requests", type=int, default=30)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "IMAGEGATE_TORCH_THREADS": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # One Ray application serving the built-in model twice: `mini-1` in one replica and
    # `mini-2` in two, so the two are measured in alternating rounds of one run (an idle
    # replica costs no CPU), beside two one-process servers (1 and 2 torch threads).
    models = work / "models.toml"
    models.write_text('[[models]]\nname = "mini-1"\nsource = "builtin"\nreplicas = 1\n'
                      '[[models]]\nname = "mini-2"\nsource = "builtin"\nreplicas = 2\n')
    load = [load_average()]
    with ray_head(work, env) as address, \
            server(work, "ray", {**env, "RAY_ADDRESS": address, "IMAGEGATE_DATA_DIR": str(work / "ray"),
                                 "IMAGEGATE_MODELS_FILE": str(models)}, ["--engine", "ray"]) as ray, \
            server(work, "one-1", {**env, "IMAGEGATE_DATA_DIR": str(work / "one1")}, []) as one1, \
            server(work, "one-2", {**env, "IMAGEGATE_DATA_DIR": str(work / "one2"),
                                   "IMAGEGATE_TORCH_THREADS": "2"}, []) as one2:
        # 1. The hop at concurrency 1: the same request, alternating between the two servers.
        d, h = [], []
        with httpx2.Client() as c:
            one(c, one1)
            one(c, ray, "mini-1")
            for _ in range(args.latency_requests):
                d.append(one(c, one1)[0])
                h.append(one(c, ray, "mini-1")[0])
        pd, ph = statistics.median(d), statistics.median(h)
        # 2. Throughput at the same concurrency, setups alternating round by round.
        setups = {"one-process server, 1 torch thread": (one1, "imagegate-mini"),
                  "Ray, 1 replica (1 torch thread)": (ray, "mini-1"),
                  "Ray, 2 replicas (1 torch thread each)": (ray, "mini-2"),
                  "one-process server, 2 torch threads": (one2, "imagegate-mini")}
        got: dict[str, list[float]] = {k: [] for k in setups}
        seen: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, (base, model) in setups.items():
                ips, replicas = throughput(base, model, args.requests, args.concurrency)
                got[name].append(ips)
                seen[name] = max(seen.get(name, 0), replicas)
        load.append(load_average())
    med = {k: statistics.median(v) for k, v in got.items()}
    one_replica = med["Ray, 1 replica (1 torch thread)"]
    rows: list[list[object]] = [
        ["one-process server, 1 torch thread", "1", "-", f"{pd * 1000:.0f}", "-"],
        ["Ray, 1 replica", "1", "-", f"{ph * 1000:.0f}", f"hop: {(ph - pd) * 1000:+.0f} ms p50"]]
    for name, v in med.items():
        note = f"{v / one_replica:.2f}x one replica" if name.startswith("Ray") else ""
        if seen[name]:
            note += f"; {seen[name]} replica(s) answered"
        rows.append([name, str(args.concurrency), f"{v:.2f} ({' / '.join(f'{x:.2f}' for x in got[name])})", "-",
                     note.strip("; ")])
    table = markdown_table(["setup", "concurrency", "images/s median (rounds)", "p50 ms", "notes"], rows)
    print(device_description())
    print(table)
    print("load average (1/5/15 min) before, after:", ", ".join(load))
    if not args.no_record:
        append_results("scale-out on Ray Serve (bench_scaleout.py)",
                       " ".join(["bench/bench_scaleout.py", *sys.argv[1:]]), table,
                       notes="built-in model, 256x256 low, b64 PNG with moderation and C2PA on; a Ray head with 4 "
                             "logical CPUs on this machine, one Ray application serving it in 1 and in 2 replicas, "
                             "beside two one-process servers; setups alternate round by round; "
                             f"load average before/after: {', '.join(load)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
