"""What accounts add to a request: authentication (a key looked up by its digest), the rate
limits (two counter upserts), the budget (a hold, then a settle) and the cost, on SQLite and
on PostgreSQL, against the same kind of server with authentication off, in one run.

Two apps per database (in-process, the SDK over an ASGI transport, the tiny pipeline at
64x64 low): one with no keys at all, one whose caller has a key with rpm, ipm and a budget.
Requests alternate between them so that both see the same machine. Reported: the p50 of
the accounts' own time (Server-Timing `accounts`, µs) and of the whole request, and the
difference of the p50s (end-to-end; noisier: the machine is shared).

    .venv/bin/python bench/bench_accounts.py [--requests 200] [--no-record]
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

from common import append_results, device_description, load_average, markdown_table  # noqa: E402

ADMIN = "bench-admin-" + "x" * 32


def timing(header: str, name: str) -> float | None:
    for part in header.split(","):
        key, _, dur = part.strip().partition(";dur=")
        if key == name and dur:
            return float(dur)
    return None


async def measure(db_url_off: str, db_url_on: str, data: Path, n: int) -> list[str]:
    import httpx2

    from conftest import make_settings, running, sdk_client, tiny_config
    from imagegate.app import create_app
    from tiny import build_tiny_sd

    model = build_tiny_sd(data / "model")
    off = create_app(make_settings(data / "off", database_url=db_url_off), [tiny_config(model, name="tiny")])
    on = create_app(make_settings(data / "on", database_url=db_url_on, admin_key=ADMIN),
                    [tiny_config(model, name="tiny")])
    async with running(off), running(on):
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=on), base_url="http://t",
                                      headers={"authorization": f"Bearer {ADMIN}"}) as admin:
            made = (await admin.post("/admin/v1/keys", json={
                "name": "bench", "rpm": 1_000_000, "ipm": 1_000_000, "budget_usd": 1_000_000})).json()
        clients = {"off": sdk_client(off), "on": sdk_client(on, api_key=made["key"])}
        lat: dict[str, list[float]] = {"off": [], "on": []}
        acc: list[float] = []

        async def one(mode: str) -> None:
            t0 = time.perf_counter()
            raw = await clients[mode].images.with_raw_response.generate(
                model="tiny", prompt="a red circle", size="1024x1024", quality="low", output_format="jpeg",
                extra_body={"seed": 1})
            lat[mode].append(time.perf_counter() - t0)
            if mode == "on":
                a = timing(raw.headers.get("server-timing", ""), "accounts")
                assert a is not None and raw.headers.get("x-ratelimit-limit-requests")
                acc.append(a / 1000)

        for _ in range(5):  # warm both
            await one("off")
            await one("on")
        lat = {"off": [], "on": []}
        acc.clear()
        for i in range(n):
            for mode in (("off", "on") if i % 2 else ("on", "off")):
                await one(mode)
        for c in clients.values():
            await c.close()
    p50_off, p50_on = statistics.median(lat["off"]), statistics.median(lat["on"])
    return [f"{statistics.median(acc) * 1e6:.0f}", f"{sorted(acc)[int(0.95 * (len(acc) - 1))] * 1e6:.0f}",
            f"{p50_off * 1000:.1f}", f"{p50_on * 1000:.1f}", f"{(p50_on - p50_off) * 1e6:.0f}"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        rows.append(["SQLite (WAL)", *await measure(f"sqlite+aiosqlite:///{data / 'off.db'}",
                                                     f"sqlite+aiosqlite:///{data / 'on.db'}", data, args.requests)])
        import pg_support

        reason, bin_dir, run_as = pg_support.unavailable_reason()
        if reason is None and bin_dir is not None:
            server = pg_support.PgServer(bin_dir, run_as)
            try:
                server.start()
                base = server.url
                for name in ("auth_off", "auth_on"):
                    pg_support._admin(base, lambda c, name=name: c.execute(f"CREATE DATABASE {name}"))
                rows.append(["PostgreSQL 15 (local socket)", *await measure(
                    base.replace("@/postgres?", "@/auth_off?"), base.replace("@/postgres?", "@/auth_on?"), data / "pg",
                    args.requests)])
            finally:
                server.stop()
        else:
            print(f"PostgreSQL not measured: {reason}")
    table = markdown_table(["database", "accounts p50 µs", "accounts p95 µs", "request p50 ms, auth off",
                            "request p50 ms, key with limits + budget", "difference of p50s µs"], rows)
    print(f"device: {device_description()}")
    print(f"{args.requests} requests per server, alternating; tiny pipeline 64px -> 1024x1024 JPEG, low\n")
    print(table)
    if not args.no_record:
        load = load_average()
        append_results("Accounts overhead per request (auth + rate limits + budget hold/settle + cost)",
                       f"python bench/bench_accounts.py --requests {args.requests}", table,
                       notes=f"load average at the end {load} on {os.cpu_count()} cores; `accounts` is the "
                             "Server-Timing entry (time inside the accounts' calls); the difference of p50s "
                             "is end-to-end and noisier")


if __name__ == "__main__":
    asyncio.run(main())
