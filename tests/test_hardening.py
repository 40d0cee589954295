"""Regression tests for defects found by hostile use (issue #19): one bad request never
fails the others of its batch; input memory is bounded per request and per server; ledger
rows have a bounded size; JSON bodies are strictly typed and clearly refused; a request
leaves a `running` row when accepted, marked `interrupted` after a crash.

The only fakes are at the GPU edge: a gate that holds the first pipeline call (so later
requests provably share the next one), and a device that faults on one job's input."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from conftest import make_settings, running, tiny_config
from imagegate.app import create_app
from imagegate.db import Ledger, RequestRow

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver", timeout=120)


def assert_error(r: httpx2.Response, status: int, param: str | None, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


class PoisonGPU:
    """Fake at the GPU edge: the real pipeline, but a call that contains a job whose prompt
    holds POISON raises (as a tokenizer or kernel would on an input it cannot take); the
    first call is held until `release` so that later requests queue up and batch together."""

    def __init__(self, backend: Any) -> None:
        self.real = backend.run_batch
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        backend.run_batch = self.run_batch

    def run_batch(self, jobs: list[Any], runtimes: list[Any]) -> Any:
        self.calls.append(len(jobs))
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(30)
        if any("POISON" in j.spec.prompt for j in jobs):
            raise RuntimeError("device fault on this input")
        return self.real(jobs, runtimes)


@pytest.fixture
async def poisoned(tmp_path: Path, tiny_sd_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        gpu = PoisonGPU(app.state.scheduler.worker("tiny-sd").backend)
        async with http(app) as c:
            yield app, gpu, c
        gpu.release.set()


async def test_a_failing_request_does_not_fail_the_others_of_its_batch(poisoned) -> None:  # type: ignore[no-untyped-def]
    app, gpu, c = poisoned
    body = {"size": "256x256", "model": "tiny-sd"}
    first = asyncio.create_task(c.post(GEN, json={**body, "prompt": "a red circle"}))
    await asyncio.to_thread(gpu.entered.wait, 10)
    rest = [asyncio.create_task(c.post(GEN, json={**body, "prompt": p}))
            for p in ("a blue square", "POISON", "a green star")]
    worker = app.state.scheduler.worker("tiny-sd")
    for _ in range(500):
        if len(worker.pending) >= 3:
            break
        await asyncio.sleep(0.01)
    gpu.release.set()
    first_r, good1, bad, good2 = await asyncio.gather(first, *rest)
    assert gpu.calls[:2] == [1, 3]  # the three shared one call, which failed; then one by one
    assert first_r.status_code == good1.status_code == good2.status_code == 200
    err = assert_error(bad, 500, None, "generation_failed")
    assert "device fault" not in err["message"]  # internals go to the log and the ledger only
    rows = {r.id: r for r in await app.state.ledger.recent()}
    assert rows[bad.headers["x-request-id"]].status == "error"
    assert rows[good1.headers["x-request-id"]].batch_jobs == 1


async def test_a_lone_surrogate_is_a_400_and_its_neighbours_succeed(app: Any) -> None:
    async with http(app) as c:
        good = {"prompt": "a red circle", "size": "256x256"}
        # Written by hand: a lone surrogate escape is legal JSON syntax that Python parses.
        bad = c.post(GEN, content=b'{"prompt": "a \\ud800 circle", "size": "256x256"}',
                     headers={"content-type": "application/json"})
        r1, r2, r3 = await asyncio.gather(c.post(GEN, json=good), bad, c.post(GEN, json=good))
    assert r1.status_code == r3.status_code == 200
    err = assert_error(r2, 400, "prompt", "invalid_value")
    assert "surrogate" in err["message"]


@pytest.mark.parametrize(("field", "value"), [
    # Arabic-Indic digits on purpose: int() accepts them, a size must not.
    ("n", "3"), ("n", True), ("n", 2.5), ("model", ""), ("size", ""), ("size", "1024x1024\n"), ("size", "١٠٢٤x١٠٢٤"),  # noqa: RUF001
    ("quality", 1), ("stream", "true"), ("partial_images", "1"), ("seed", "7"), ("user", 5),
    ("output_compression", 50.5), ("prompt", ["a", "b"]), ("background", 0),
])
async def test_json_types_are_enforced(app: Any, field: str, value: Any) -> None:
    async with http(app) as c:
        body = {"prompt": "a red circle", "size": "256x256", field: value}
        r = await c.post(GEN, json=body)
    assert_error(r, 400, field)


async def test_multipart_values_are_text_and_still_parse(app: Any) -> None:
    image = png(Image.new("RGB", (64, 64), (200, 30, 30)))
    async with http(app) as c:
        r = await c.post(EDIT, files={"image": ("a.png", image, "image/png")},
                         data={"prompt": "a blue square", "n": "2", "size": "256x256"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2


@pytest.mark.parametrize("path", [GEN, EDIT])
@pytest.mark.parametrize(("body", "ctype", "needle"), [
    (b"[" * 100_000, "application/json", "nested too deeply"),
    (b'{"prompt": ' * 50_000, "application/json", "nested too deeply"),
    (b"", "application/json", "empty"),
    (b"   ", "application/json", "empty"),
    (b"[1, 2]", "application/json", "must be an object"),
    (b'{"prompt": "x",', "application/json", "not valid JSON"),
    (b"\xff\xfe{", "application/json", "not valid JSON"),
])
async def test_malformed_json_bodies_get_a_clear_400(app: Any, path: str, body: bytes, ctype: str, needle: str) -> None:
    async with http(app) as c:
        r = await c.post(path, content=body, headers={"content-type": ctype})
    err = assert_error(r, 400, None, "invalid_json")
    assert needle in err["message"]


async def test_a_plain_text_body_names_the_content_type(app: Any) -> None:
    async with http(app) as c:
        r = await c.post(GEN, content=b"a red circle", headers={"content-type": "text/plain"})
    err = assert_error(r, 400, None, "unsupported_content_type")
    assert "'None'" not in err["message"] and "text/plain" in err["message"]


async def test_a_non_image_upload_message_has_no_object_repr(app: Any) -> None:
    async with http(app) as c:
        r = await c.post(EDIT, files={"image": ("a.png", b"GIF89a but not really", "image/png")},
                         data={"prompt": "x"})
    err = assert_error(r, 400, "image", "invalid_image")
    assert "0x" not in err["message"] and "BytesIO" not in err["message"]


async def test_an_image_over_pillows_own_limit_reports_ours(app: Any) -> None:
    # 20000x20000 is over twice Pillow's MAX_IMAGE_PIXELS, so Pillow's guard fires in open().
    bomb = png(Image.new("1", (20000, 20000)))
    async with http(app) as c:
        r = await c.post(EDIT, files={"image": ("a.png", bomb, "image/png")}, data={"prompt": "x"})
    err = assert_error(r, 400, "image", "image_too_large")
    assert str(app.state.settings.max_input_pixels) in err["message"]


# -- memory ---------------------------------------------------------------------------
async def test_the_request_pixel_budget_is_checked_before_decoding(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, max_input_pixels=4_000_000, max_request_pixels=5_000_000)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    big = png(Image.new("1", (1800, 1800)))  # 3.24 M pixels each: under the per-image limit
    async with running(app), http(app) as c:
        r = await c.post(EDIT, files=[("image[]", ("a.png", big, "image/png")),
                                      ("image[]", ("b.png", big, "image/png"))],
                         data={"prompt": "x", "size": "256x256"})
        err = assert_error(r, 400, "image", "image_too_large")
        assert "5000000" in err["message"]
        one = await c.post(EDIT, files={"image": ("a.png", big, "image/png")}, data={"prompt": "x", "size": "256x256"})
        assert one.status_code == 200
    assert app.state.service.pixels.used == 0 and app.state.service.pixels.peak >= 1800 * 1800


async def test_the_server_pixel_budget_answers_503_with_retry_after(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, max_inflight_pixels=3_000_000)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    big = png(Image.new("RGB", (1500, 1500), (10, 200, 10)))  # 2.25 M pixels: one fits, two do not
    async with running(app), http(app) as c:
        budget = app.state.service.pixels
        budget.acquire(2_000_000)  # another request's inputs being decoded
        r = await c.post(EDIT, files={"image": ("a.png", big, "image/png")}, data={"prompt": "x", "size": "256x256"})
        assert_error(r, 503, None, "overloaded")
        assert int(r.headers["retry-after"]) >= 1 and "retry-after-ms" in r.headers
        budget.release(2_000_000)
        ok = await c.post(EDIT, files={"image": ("a.png", big, "image/png")}, data={"prompt": "x", "size": "256x256"})
        assert ok.status_code == 200
        assert budget.used == 0


async def test_masked_edits_keep_inputs_compressed_while_queued(poisoned) -> None:  # type: ignore[no-untyped-def]
    app, gpu, c = poisoned
    image = Image.new("RGB", (1200, 800), (200, 30, 30))
    mask = Image.new("RGBA", (1200, 800), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (400, 200, 800, 600))
    first = asyncio.create_task(c.post(GEN, json={"prompt": "a red circle", "size": "256x256"}))
    await asyncio.to_thread(gpu.entered.wait, 10)
    edit = asyncio.create_task(c.post(EDIT, files={"image": ("a.png", png(image), "image/png"),
                                                   "mask": ("m.png", png(mask), "image/png")},
                                      data={"prompt": "a blue square", "size": "auto"}))
    worker = app.state.scheduler.worker("tiny-sd")
    for _ in range(500):
        if worker.pending:
            break
        await asyncio.sleep(0.01)
    assert app.state.service.pixels.used == 0  # queued: no decoded input is held
    job = worker.pending[0].job
    held = [im for im in (job.init_image, job.edit_mask, *job.references) if im is not None]
    assert all(im.width * im.height <= 256 * 256 for im in held)  # generation-size copies only
    gpu.release.set()
    await first
    r = await edit
    assert r.status_code == 200
    out = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).convert("RGB")
    assert out.size == (1200, 800) and out.getpixel((10, 10)) == (200, 30, 30)  # outside the mask: exact


async def test_the_body_budget_answers_503(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path, max_inflight_body_bytes=64 * 1024), [tiny_config(tiny_sd_path)])
    async with running(app), http(app) as c:
        app.state.body_budget.acquire(60 * 1024)  # bodies of requests in flight
        r = await c.post(GEN, json={"prompt": "x" * 10_000, "size": "256x256"})
        assert_error(r, 503, None, "overloaded")
        assert "retry-after" in r.headers
        app.state.body_budget.release(60 * 1024)
        ok = await c.post(GEN, json={"prompt": "a red circle", "size": "256x256"})
        assert ok.status_code == 200
        assert app.state.body_budget.used == 0


# -- the ledger -------------------------------------------------------------------------
async def test_rejected_huge_prompts_leave_bounded_rows(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, ledger_text_chars=100)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    prompt = "é" * 2_000_000  # 4 MB of UTF-8, over the 32,000-character limit
    db = settings.data_dir / "imagegate.db"
    async with running(app), http(app) as c:
        before = db.stat().st_size
        ids = []
        for _ in range(5):
            r = await c.post(GEN, json={"prompt": prompt, "user": "u" * 100_000})
            assert_error(r, 400, "prompt", "string_above_max_length")
            ids.append(r.headers["x-request-id"])
        rows = [await app.state.ledger.get(i) for i in ids]
    assert all(r is not None and r.status == "error" for r in rows)
    row = rows[0]
    assert row is not None
    assert row.params["prompt"] == "é" * 100 and row.params["prompt_bytes"] == 4_000_000
    assert len(row.params["prompt_sha256"]) == 64 and len(row.user or "") <= 256
    assert db.stat().st_size - before < 200_000  # five 4 MB requests: kilobytes, not megabytes


async def test_accepted_requests_have_a_running_row_and_crashes_are_marked(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(app):
        gpu = PoisonGPU(app.state.scheduler.worker("tiny-sd").backend)
        async with http(app) as c:
            task = asyncio.create_task(c.post(GEN, json={"prompt": "a red circle", "size": "256x256"}))
            await asyncio.to_thread(gpu.entered.wait, 10)
            rows = await app.state.ledger.recent()
            assert [(r.status, r.model) for r in rows] == [("running", "tiny-sd")]
            gpu.release.set()
            r = await task
        row = await app.state.ledger.get(r.headers["x-request-id"])
        assert row is not None and row.status == "ok" and row.http_status == 200 and row.output_tokens
    # A row a crashed process left running is marked at the next start.
    ledger = Ledger(settings.resolved_database_url)
    await ledger.start()
    await ledger.record(RequestRow(id="req_crashed", created_at=dt.datetime.now(dt.timezone.utc),
                                   endpoint="images.edits", params={}, status="running", http_status=0, notes=[]))
    await ledger.close()
    app2 = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(app2):
        crashed = await app2.state.ledger.get("req_crashed")
        assert crashed is not None and (crashed.status, crashed.error_code) == ("interrupted", "interrupted")
        ok = await app2.state.ledger.get(r.headers["x-request-id"])
        assert ok is not None and ok.status == "ok"
    assert json.dumps(crashed.params) == "{}"


def test_a_cut_off_stream_is_logged_as_such(tmp_path: Path, tiny_sd_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from conftest import live_server

    settings = make_settings(tmp_path, max_inference_steps=200)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    caplog.set_level("INFO", logger="imagegate.access")
    with live_server(app) as base:
        with httpx2.stream("POST", base + GEN, timeout=60, json={
                "prompt": "x", "size": "256x256", "stream": True, "partial_images": 3,
                "num_inference_steps": 200}) as r:
            assert r.status_code == 200
            next(r.iter_bytes())  # the first partial image, then the client goes away
        complete = httpx2.post(base + GEN, json={"prompt": "x", "size": "256x256"}, timeout=60)
        assert complete.status_code == 200
        deadline = time.monotonic() + 20
        while "cut off" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "imagegate.access"]
    cut = [m for m in lines if GEN in m and "cut off" in m]
    assert len(cut) == 1 and '" 200 ' in cut[0]
    assert any(complete.headers["x-request-id"] in m and "cut off" not in m for m in lines)


async def test_whole_number_floats_are_integers_as_in_json_schema(app: Any) -> None:
    async with http(app) as c:
        r = await c.post(GEN, json={"prompt": "a red circle", "size": "256x256", "n": 2.0, "output_compression": 80.0,
                                    "output_format": "jpeg"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
