"""Screenshots of the playground's main screens at desktop and phone width, for the README
(docs/img/). Debian's Chromium driven by Playwright against a real server with the built-in
model; run from a checkout:  python scripts/playground_screenshots.py"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "docs" / "img"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZES = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(1)
    from test_playground import chromium_path

    from conftest import live_server, make_settings
    from imagegate.app import create_app

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(3)
    photo = tmp / "input.png"
    # A soft gradient with some texture, to edit.
    y, x = np.mgrid[0:256, 0:256]
    arr = np.stack([x, y, 255 - x], -1) * 0.8 + rng.normal(0, 12, (256, 256, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(photo)
    app = create_app(make_settings(tmp))
    with live_server(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        for name, viewport in SIZES.items():
            page = browser.new_page(viewport=viewport, device_scale_factor=1)
            page.goto(base + "/")
            page.wait_for_selector("#model option", state="attached")
            page.fill("#prompt", "a yellow star on a purple background")
            page.select_option("#size", "256x256")
            page.fill("#n", "4" if name == "desktop" else "2")
            page.click("#run")
            page.wait_for_selector(".card:not(.partial) >> nth=0", timeout=60_000)
            page.wait_for_selector("#status:has-text('Done')", timeout=60_000)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=OUT / f"playground-generate-{name}.png", full_page=name == "desktop",
                            animations="disabled")
            page.click("#tab-edit")
            page.set_input_files("#files", str(photo))
            page.wait_for_selector("#mask-editor:not([hidden])")
            box = page.locator("#mask-paint").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.65, steps=10)
            page.mouse.up()
            page.fill("#prompt", "a red ball")
            page.fill("#n", "1")
            page.click("#run")
            page.wait_for_selector("#status:has-text('Done')", timeout=60_000)
            # phone: the mask editor in view (below the sticky header); desktop: the whole page
            page.evaluate("(y) => window.scrollTo(0, y)", 0 if name == "desktop" else 150)
            page.screenshot(path=OUT / f"playground-edit-{name}.png", full_page=name == "desktop",
                            animations="disabled")
            if name == "desktop":
                page.locator(".card:not(.partial) button.copy-code").first.click()
                page.screenshot(path=OUT / "playground-code-desktop.png", animations="disabled")
                page.keyboard.press("Escape")
                page.click("#tab-compare")
                page.select_option("#model-b", "gpt-image-1")
                page.fill("#prompt", "a lighthouse on a cliff at dawn")
                page.select_option("#size", "256x256")
                page.click("#run")
                page.wait_for_selector("#status:has-text('Done')", timeout=60_000)
                page.screenshot(path=OUT / "playground-compare-desktop.png", animations="disabled")
                page.click("#tab-history")
                page.wait_for_selector("#history .card img")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=OUT / "playground-history-desktop.png", animations="disabled")
            page.close()
        browser.close()
    for f in sorted(OUT.glob("playground-*.png")):
        # 256 colours keep the README's images a few hundred kB in all
        Image.open(f).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(f, optimize=True)
        print(f.relative_to(ROOT), f.stat().st_size)


if __name__ == "__main__":
    main()
