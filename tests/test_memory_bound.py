"""The process's peak memory stays under the bound the README states for the default
settings while adversarial edits run concurrently, and returns near its idle level after.

A real `imagegate serve` child process (its RSS is what an operator sees), default budgets,
the tiny model. The attack: edits carrying 16 large solid images (a few hundred KB of body,
gigabytes decoded), single images at the per-image limit, masked edits (decoded twice: once
to build the job, once to composite) and JSON edits with data URLs, all at once."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from PIL import Image

import procserver
from imagegate.settings import Settings

MB = 1024 * 1024


def worst_case_bytes(s: Settings, encode_workers: int) -> int:
    """The README's statement, as a formula (see "Memory" there): beyond the idle process
    and the model's own working memory, decoded inputs take at most 8 bytes per budgeted
    pixel, request bodies at most 3 bytes per budgeted byte (raw, parsed, decoded), and
    each encode worker at most ~13 bytes per pixel of the 3840x2160 output limit."""
    return 8 * s.max_inflight_pixels + 3 * s.max_inflight_body_bytes + encode_workers * 13 * 3840 * 2160


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture(scope="module")
def attack_images() -> dict[str, bytes]:
    return {
        "huge": png(Image.new("RGB", (6300, 6300), (40, 90, 200))),  # 39.7 M px, just under 40 M
        "large": png(Image.new("RGB", (6000, 5000), (200, 90, 40))),
        "mask": png(Image.new("RGBA", (6000, 5000), (0, 0, 0, 0))),
        "mid": png(Image.new("RGB", (4000, 3000), (90, 200, 40))),
    }


def _attack(base: str, imgs: dict[str, bytes]) -> list[int]:
    edit = base + "/v1/images/edits"

    def sixteen() -> int:
        files = [("image[]", (f"{i}.png", imgs["huge"], "image/png")) for i in range(16)]
        return httpx2.post(edit, files=files, data={"prompt": "x", "size": "256x256"}, timeout=300).status_code

    def one_large() -> int:
        return httpx2.post(edit, files={"image": ("a.png", imgs["huge"], "image/png")},
                           data={"prompt": "x", "size": "256x256"}, timeout=300).status_code

    def masked() -> int:
        return httpx2.post(edit, files={"image": ("a.png", imgs["large"], "image/png"),
                                        "mask": ("m.png", imgs["mask"], "image/png")},
                           data={"prompt": "x", "size": "auto", "output_format": "jpeg"}, timeout=300).status_code

    def json_edit() -> int:
        url = "data:image/png;base64," + base64.b64encode(imgs["mid"]).decode()
        return httpx2.post(edit, json={"prompt": "x", "size": "256x256", "images": [{"image_url": url}] * 3},
                           timeout=300).status_code

    def generation() -> int:
        return httpx2.post(base + "/v1/images/generations", json={"prompt": "a red circle", "size": "256x256"},
                           timeout=300).status_code

    work = [sixteen] * 4 + [one_large] * 6 + [masked] * 3 + [json_edit] * 3 + [generation] * 4
    with ThreadPoolExecutor(len(work)) as pool:
        return list(pool.map(lambda f: f(), work))


@pytest.mark.slow
def test_peak_memory_stays_under_the_stated_bound(tmp_path: Path, tiny_sd_path: Path,
                                                   attack_images: dict[str, bytes]) -> None:
    models = procserver.tiny_models_file(tmp_path, tiny_sd_path)
    server = procserver.start(tmp_path / "data", models)
    try:
        # Warm every path once so that idle includes the code and pools they load.
        assert _warm(server.base, attack_images) == [200, 200]
        time.sleep(1)
        idle = server.status("VmRSS")
        exact_peak = server.reset_peak()
        statuses = _attack(server.base, attack_images) + _attack(server.base, attack_images)
        print(statuses)
        peak = server.status("VmHWM")
        time.sleep(2)
        after = server.status("VmRSS")
        health = httpx2.get(server.base + "/health", timeout=5).status_code
    finally:
        server.stop()
    bound = worst_case_bytes(Settings(), encode_workers=2)
    print(f"idle {idle / MB:.0f} MB, peak {peak / MB:.0f} MB (+{(peak - idle) / MB:.0f}), after {after / MB:.0f} MB, "
          f"bound +{bound / MB:.0f} MB, statuses {sorted(statuses)}")
    assert set(statuses) <= {200, 400, 503}, statuses  # an image, a refusal or back-pressure: never a 5xx
    assert statuses.count(400) == 8  # the 16-image edits: over the per-request pixel budget
    assert statuses.count(503) > 0  # the server-wide budget pushed back
    assert 200 in statuses
    assert health == 200
    if exact_peak:
        assert peak - idle <= bound
    assert after - idle <= 256 * MB  # freed memory goes back to the system


def _warm(base: str, imgs: dict[str, bytes]) -> list[int]:
    small = png(Image.new("RGB", (512, 512), (1, 2, 3)))
    mask = png(Image.new("RGBA", (512, 512), (0, 0, 0, 0)))
    a = httpx2.post(base + "/v1/images/edits",
                    files={"image": ("a.png", small, "image/png"), "mask": ("m.png", mask, "image/png")},
                    data={"prompt": "x"}, timeout=300).status_code
    b = httpx2.post(base + "/v1/images/generations", json={"prompt": "x", "size": "256x256"}, timeout=300).status_code
    return [a, b]
