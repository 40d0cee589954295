"""How fast the playground is for a person on the same machine: the page loaded and ready
(its model list filled) on loopback, and a streamed generation's first preview and final
image as the page shows them; plus a /metrics scrape. Debian's Chromium, driven by
Playwright (scripts/chromium.sh installs it), against a real uvicorn with the built-in model.

    python bench/bench_playground.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from common import append_results

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    import httpx2
    import torch
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(1)
    from test_playground import chromium_path

    from conftest import live_server, make_settings
    from imagegate.app import create_app

    exe = chromium_path()
    if exe is None:
        sys.exit("no Chromium: run scripts/chromium.sh ensure")
    app = create_app(make_settings(Path(tempfile.mkdtemp())))
    load, first, final, scrape = [], [], [], []
    with live_server(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=FLAGS)
        for _ in range(args.runs):
            ctx = browser.new_context()  # a fresh cache each time: every file is fetched
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_selector("#model option", state="attached")
            load.append(time.perf_counter() - t0)
            page.fill("#prompt", "a red circle")
            page.select_option("#size", "256x256")
            page.select_option("#quality", "low")
            t0 = time.perf_counter()
            page.click("#run")
            page.wait_for_selector(".card img[src^='blob:']", timeout=60_000)
            first.append(time.perf_counter() - t0)
            page.wait_for_selector(".card:not(.partial)", timeout=60_000)
            final.append(time.perf_counter() - t0)
            ctx.close()
            t0 = time.perf_counter()
            httpx2.get(base + "/metrics").raise_for_status()
            scrape.append(time.perf_counter() - t0)
        browser.close()

    def row(name: str, xs: list[float]) -> str:
        return (f"| {name} | {statistics.median(xs) * 1000:.0f} | {max(xs) * 1000:.0f} | {len(xs)} |")

    table = "\n".join(["| what | p50 ms | max ms | runs |", "|---|---|---|---|",
                       row("page loaded and ready (fresh context, loopback)", load),
                       row("first preview on screen (imagegate-mini, 256x256 low, stream)", first),
                       row("final image on screen (same request)", final),
                       row("GET /metrics", scrape)])
    print(table)
    if not args.no_record:
        append_results("Playground: page load and streamed generation in Chromium",
                       f"python bench/bench_playground.py --runs {args.runs}", table)


if __name__ == "__main__":
    main()
