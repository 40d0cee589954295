"""The gateway's own overhead per request: the same request to an upstream imagegate
directly and through a gateway routing `gpt-image-1` to it, interleaved in one run.

Both are real uvicorn servers on 127.0.0.1 (in this process, each on its own thread) and
the client is the openai SDK. The upstream serves the tiny random pipeline; the gateway
passes its PNG through untouched (no emulation), so the difference is the gateway's hop:
parsing, routing, one more HTTP call, base64 decode/encode and the ledger.

    .venv/bin/python bench/bench_gateway.py [--requests 30] [--no-record]
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


async def one(client, size: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    raw = await client.images.with_raw_response.generate(model="gpt-image-1", prompt="a red circle", size=size,
                                                         quality="low", extra_body={"seed": 1})
    raw.parse()
    return time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from openai import AsyncOpenAI

    from conftest import live_server, make_settings, tiny_config
    from imagegate.app import create_app
    from tiny import build_tiny_sd

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    tiny = build_tiny_sd(tmp / "models")
    os.environ["BENCH_UPSTREAM_KEY"] = "sk-bench-upstream"
    up_app = create_app(make_settings(tmp / "up", api_keys=["sk-bench-upstream"]),
                        [tiny_config(tiny, name="tiny")])
    rows = []
    with live_server(up_app) as up:
        models = tmp / "models.toml"
        models.write_text(
            f'[[providers]]\nname = "up"\nkind = "openai-compatible"\nbase_url = "{up}/v1"\n'
            'api_key_env = "BENCH_UPSTREAM_KEY"\n'
            '[[models]]\nname = "gpt-image-1"\nroutes = [{ provider = "up", model = "gpt-image-1" }]\n')
        gw_app = create_app(make_settings(tmp / "gw", models_file=models, api_keys=["sk-bench-client"]), [])
        with live_server(gw_app) as gw:
            direct = AsyncOpenAI(api_key="sk-bench-upstream", base_url=up + "/v1", max_retries=0)
            via = AsyncOpenAI(api_key="sk-bench-client", base_url=gw + "/v1", max_retries=0)
            for size in ("256x256", "1024x1024"):
                for c in (direct, via):  # warm both paths
                    await one(c, size)
                d, g = [], []
                for _ in range(args.requests):  # interleaved: drift hits both alike
                    d.append(await one(direct, size))
                    g.append(await one(via, size))
                pd, pg = statistics.median(d), statistics.median(g)
                rows.append([size, args.requests, f"{pd * 1000:.1f}", f"{pg * 1000:.1f}", f"{(pg - pd) * 1000:.1f}",
                             f"{pct(d, 0.9) * 1000:.1f}", f"{pct(g, 0.9) * 1000:.1f}"])
            await direct.close()
            await via.close()
    table = markdown_table(["size (png, b64)", "requests", "direct p50 ms", "via gateway p50 ms",
                            "gateway overhead p50 ms", "direct p90 ms", "via gateway p90 ms"], rows)
    print(device_description())
    print(table)
    if not args.no_record:
        append_results("gateway overhead (bench_gateway.py)", " ".join(["bench/bench_gateway.py", *sys.argv[1:]]),
                       table, notes="upstream and gateway: real uvicorn servers in one process, tiny pipeline, "
                                    "sequential requests, interleaved")


if __name__ == "__main__":
    asyncio.run(main())
