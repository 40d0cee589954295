"""The playground in a real browser: Debian's Chromium (scripts/chromium.sh installs it)
driven by Playwright for Python, against a real uvicorn serving the built-in model.

A person's path through the page: generate with streaming (a partial image, then the
final one), paint a mask and edit (only the painted area changes), copy the Python snippet
and run it (the same image), see an API error as a sentence, give a key when asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import live_server, make_settings, tiny_config
from imagegate.app import create_app

pytestmark = pytest.mark.slow

# Flags for a sandboxed, offline machine: no setuid sandbox, no GPU, no calls home.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for p in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", "/usr/bin/chromium", shutil.which("chromium")):
        if p and os.access(p, os.X_OK):
            return p
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/chromium.sh ensure installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in model (imagegate-mini), no keys: a local user's server."""
    app = create_app(make_settings(tmp_path_factory.mktemp("playground")))
    with live_server(app) as base:
        yield base


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server + "/playground")
    pg.wait_for_selector("#model option", state="attached")
    yield pg
    context.close()
    assert not errors, errors  # no script errors (a CSP violation included)


def prompt_and_size(pg: Any, prompt: str, size: str = "256x256", quality: str = "low") -> None:
    pg.fill("#prompt", prompt)
    pg.select_option("#size", size)
    pg.select_option("#quality", quality)


def download(pg: Any, card: Any) -> Image.Image:
    with pg.expect_download() as info:
        card.locator("a.download").click()
    img = Image.open(info.value.path())
    img.load()
    return img


# Every image the page puts in a card: its tag, whether the card was still a preview, the
# kind of URL. A MutationObserver's callback runs before the page handles the next event.
WATCH_IMAGES = """() => {
  window.shown = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const card = r.target.closest(".card");
      if (!card) continue;
      window.shown.push({tag: card.querySelector(".tag").textContent,
                         partial: card.classList.contains("partial"), src: r.target.src.slice(0, 5)});
    }
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["src"]});
}"""


def test_generate_streams_a_partial_then_the_final_image(page: Any, server: str) -> None:
    models = page.locator("#model option").all_text_contents()
    assert "imagegate-mini" in models and "gpt-image-1 (alias of imagegate-mini)" in models
    assert page.is_checked("#stream")  # streaming is on by default
    prompt_and_size(page, "a red circle on a white background", quality="high")
    page.click("#advanced summary")
    page.fill("#partials", "2")
    # What the card showed, recorded in the page as it happens: polling for the preview
    # can miss it when the final follows within a frame on a loaded machine.
    page.evaluate(WATCH_IMAGES)
    page.click("#run")
    final = page.locator(".card:not(.partial)").first
    try:
        final.wait_for(timeout=90_000)
    except Exception as e:  # say what the page got so far: a stalled stream, an error card...
        raise AssertionError(f"no final image; images shown: {page.evaluate('window.shown')}; "
                             f"cards: {page.locator('.card').all_inner_texts()}") from e
    shown = page.evaluate("window.shown")
    assert [s["tag"] for s in shown] == ["partial 1", "partial 2", "final"], shown  # previews, then the image
    assert all(s["src"] == "blob:" for s in shown) and [s["partial"] for s in shown] == [True, True, False], shown
    assert int(final.get_attribute("data-partials") or 0) == 2
    assert final.locator(".tag").inner_text() == "final"
    meta = final.locator(".meta").inner_text()
    assert "imagegate-mini" in meta and "free" in meta and page.input_value("#seed") in meta
    img = download(page, final)
    assert img.size == (256, 256) and img.format == "PNG"
    # The session's history holds it, through the server's store.
    page.click("#tab-history")
    page.wait_for_selector("#history .card img[src*='/v1/images/content/']")


def noise_png(path: Path, size: int = 128) -> Image.Image:
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    img.save(path)
    return img


def test_a_painted_mask_changes_only_the_painted_area(page: Any, tmp_path: Path) -> None:
    original = noise_png(tmp_path / "input.png")
    page.click("#tab-edit")
    page.set_input_files("#files", str(tmp_path / "input.png"))
    page.wait_for_selector("#mask-editor:not([hidden])")
    canvas = page.locator("#mask-paint")
    box = canvas.bounding_box()
    page.fill("#brush", "40")
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    assert "Mask painted" in page.inner_text("#mask-state")
    page.fill("#prompt", "a yellow star")
    page.uncheck("#stream")
    page.click("#run")
    final = page.locator(".card:not(.partial)").first
    final.wait_for(timeout=60_000)
    out = np.asarray(download(page, final).convert("RGB")).astype(int)
    # The mask that was sent: the code dialog offers the files its snippets read.
    final.locator("button.copy-code").click()
    assert "mask=open(\"mask.png\", \"rb\")" in page.inner_text("#code")
    with page.expect_download() as info:
        page.click("#code-files a[download='mask.png']")
    info.value.save_as(tmp_path / "mask.png")
    mask = np.asarray(Image.open(tmp_path / "mask.png").convert("RGBA"))[..., 3]
    assert mask.shape == (128, 128) and set(np.unique(mask)) == {0, 255}
    assert 0.02 < (mask == 0).mean() < 0.5  # the stroke, transparent where to edit
    src = np.asarray(original).astype(int)
    keep = mask == 255
    assert out.shape == src.shape
    assert (out[keep] == src[keep]).all()  # outside the mask: the original, exactly
    assert np.abs(out[~keep] - src[~keep]).mean() > 10  # inside it: new pixels
    # The edit's Python snippet, with the files the dialog offers, makes the same image.
    with page.expect_download() as info:
        page.click("#code-files a[download='input-1.png']")
    info.value.save_as(tmp_path / "input-1.png")
    assert run_python(page.text_content("#code"), tmp_path) == out.astype(np.uint8).tobytes()


def test_the_python_snippet_makes_the_same_image(page: Any, tmp_path: Path) -> None:
    prompt_and_size(page, "a blue square")
    page.click("#advanced summary")
    page.fill("#seed", "4242")
    page.check("#seed-lock")
    page.click("#run")
    final = page.locator(".card:not(.partial)").first
    final.wait_for(timeout=60_000)
    shown = download(page, final)
    final.locator("button.copy-code").click()
    code = page.inner_text("#code")
    assert "seed" in code and "4242" in code and "stream=True" in code
    page.click("#code-copy")
    page.wait_for_selector("#code-copied:has-text('Copied')")
    assert page.evaluate("() => navigator.clipboard.readText()") == page.text_content("#code")
    assert run_python(page.text_content("#code"), tmp_path) == np.asarray(shown.convert("RGB")).tobytes()


def run_python(code: str, where: Path) -> bytes:
    """Run a copied snippet as a user would (in a folder of its own); the pixels of image-0."""
    (where / "snippet.py").write_text(code)
    run = subprocess.run([sys.executable, "snippet.py"], check=False, cwd=where, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "IMAGEGATE_API_KEY": "unused"})
    assert run.returncode == 0, run.stderr
    return np.asarray(Image.open(where / "image-0.png").convert("RGB")).tobytes()


def test_an_api_error_reads_as_a_message(page: Any) -> None:
    prompt_and_size(page, "x")
    page.click("#advanced summary")
    page.fill("#steps", "150")  # over the server's max_inference_steps (100)
    page.click("#run")
    error = page.locator("#error")
    error.wait_for(timeout=30_000)
    text = error.inner_text()
    assert "num_inference_steps" in text and "{" not in text and "invalid_request_error" not in text
    assert page.locator(".card").count() == 0


def test_the_page_asks_for_a_key_when_the_server_wants_one(browser: Any, tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path, api_keys=["sk-right"]), [tiny_config(tiny_sd_path)])
    with live_server(app) as base:
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(base + "/")
        pg.wait_for_selector("#key-dialog[open]")
        pg.fill("#key-input", "sk-wrong")
        pg.click("#key-dialog button[value=save]")
        pg.wait_for_selector("#key-dialog[open]")  # refused: asked again, saying why
        assert "refused" in pg.inner_text("#key-why")
        pg.fill("#key-input", "sk-right")
        pg.click("#key-dialog button[value=save]")
        pg.wait_for_selector("#model option", state="attached")
        assert pg.evaluate("() => sessionStorage.getItem('imagegate.key')") == "sk-right"
        assert pg.evaluate("() => localStorage.length") == 0
        context.close()


def test_usage_tab_charts_the_keys_images(browser: Any, tmp_path: Path, tiny_sd_path: Path) -> None:
    """Where the server has the usage API, a Usage tab shows images and cost per day by model."""
    from imagegate.routes import usage

    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    if not any(getattr(r, "path", "").startswith("/v1/organization/usage") for r in app.routes):
        app.include_router(usage.router)  # this snapshot's app does not mount it yet
    with live_server(app) as base:
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(base + "/")
        pg.wait_for_selector("#tab-usage:not([hidden])")
        prompt_and_size(pg, "x")
        pg.fill("#n", "2")
        pg.uncheck("#stream")
        pg.click("#run")
        pg.locator(".card:not(.partial)").nth(1).wait_for(timeout=60_000)
        pg.click("#tab-usage")
        pg.wait_for_selector("#usage-table td")
        trs = pg.locator("#usage-table tr").all()
        header = trs[0].locator("th").all_inner_texts()
        assert "tiny-sd images" in header, header
        col = header.index("tiny-sd images")
        assert sum(int(tr.locator("td").all_inner_texts()[col]) for tr in trs[1:]) == 2
        context.close()
