"""Streaming (SSE partial images) and client disconnects, against a real uvicorn on
127.0.0.1 with the official openai SDK as the client: in-process transports buffer
streams and never disconnect.

Fakes only at the GPU edge: a device that faults after its first preview, and a slow
device (each denoising step held a few milliseconds) that counts the steps it ran."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from conftest import live_server, make_settings, tiny_config
from imagegate.app import create_app
from imagegate.normalize import output_tokens

MODEL = "tiny-sd"


class Live:
    def __init__(self, app: Any, base: str, db: Path) -> None:
        self.app, self.base, self.db = app, base, db
        self.backend = app.state.scheduler.worker(MODEL).backend

    def sdk(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base + "/v1", api_key="x", max_retries=0, timeout=60)

    def rows(self) -> list[dict[str, Any]]:
        """The ledger read straight from SQLite: the server's engine lives on its own loop."""
        with sqlite3.connect(self.db) as c:
            c.row_factory = sqlite3.Row
            return [dict(r) for r in c.execute("SELECT * FROM requests ORDER BY created_at")]

    async def wait_row(self, timeout: float = 20) -> dict[str, Any]:
        """The request's final row (it is written `running` when accepted, then updated)."""
        deadline = time.monotonic() + timeout
        while not (rows := self.rows()) or rows[0]["status"] == "running":
            assert time.monotonic() < deadline, "no final ledger row"
            await asyncio.sleep(0.05)
        assert len(rows) == 1
        return rows[0]


@pytest.fixture
def live(tmp_path: Path, tiny_sd_path: Path) -> Iterator[Live]:
    settings = make_settings(tmp_path, max_inference_steps=200)  # the disconnect tests run long jobs
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    with live_server(app) as base:
        yield Live(app, base, settings.data_dir / "imagegate.db")


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class FaultyGPU:
    """Fake at the GPU edge: the real pipeline, but the device faults right after the
    first preview has been handed out."""

    def __init__(self, backend: Any) -> None:
        self.real = backend.run_batch
        backend.run_batch = self.run_batch

    def run_batch(self, jobs: list[Any], runtimes: list[Any]) -> Any:
        for runtime in runtimes:
            sink = runtime.on_preview

            def on_preview(i: int, k: int, im: Image.Image, sink: Any = sink) -> None:
                sink(i, k, im)
                raise RuntimeError("simulated device fault after the first preview")

            runtime.on_preview = on_preview
        return self.real(jobs, runtimes)


class SlowGPU:
    """Fake at the GPU edge: the real pipeline on a slow device (each step held `step_s`),
    counting the denoising steps it runs; `done` is set when the pipeline call returns or raises."""

    def __init__(self, backend: Any, step_s: float = 0.01) -> None:
        self.real = backend.run_batch
        self.step_s = step_s
        self.steps = 0
        self.total = 0
        self.done = threading.Event()
        self.outcome: str | None = None
        backend.run_batch = self.run_batch

    def run_batch(self, jobs: list[Any], runtimes: list[Any]) -> Any:
        for runtime in runtimes:
            inner = runtime.on_step

            def on_step(step: int, total: int, inner: Any = inner) -> None:
                self.steps, self.total = step, total
                time.sleep(self.step_s)
                if inner is not None:
                    inner(step, total)

            runtime.on_step = on_step
        try:
            out = self.real(jobs, runtimes)
            self.outcome = "finished"
            return out
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.done.set()

    async def wait_steps(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.steps < n:
            assert time.monotonic() < deadline, f"only {self.steps} steps ran"
            await asyncio.sleep(0.01)


# -- events -------------------------------------------------------------------------------
async def test_generation_stream_partial_images_then_completed(live: Live) -> None:
    sdk = live.sdk()
    stream = await sdk.images.generate(model="gpt-image-1", prompt="a red circle", size="512x256", quality="auto",
                                       stream=True, partial_images=2, extra_body={"num_inference_steps": 6})
    events = [ev async for ev in stream]
    await sdk.close()
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    for e in events:
        img = decode(e.b64_json)
        assert img.size == (512, 256) and img.format == "PNG"
        # events echo the *requested* values: `auto` stays `auto`
        assert (e.size, e.quality, e.background, e.output_format) == ("512x256", "auto", "auto", "png")
        assert e.created_at > 0
    done = events[-1]
    assert done.usage is not None
    assert done.usage.output_tokens == output_tokens("medium", 512, 256)
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    # partial images are real intermediate decodes, not copies of the final image
    assert decode(events[0].b64_json).tobytes() != decode(done.b64_json).tobytes()
    row = await live.wait_row()
    assert row["status"] == "ok" and row["endpoint"] == "images.generations"
    assert row["output_tokens"] == done.usage.output_tokens
    assert row["model"] == MODEL
    assert row["model_requested"] == "gpt-image-1"


async def test_stream_echoes_requested_values(live: Live) -> None:
    sdk = live.sdk()
    stream = await sdk.images.generate(prompt="x", size="256x256", quality="low", background="transparent",
                                       output_format="webp", stream=True, partial_images=1,
                                       extra_body={"num_inference_steps": 4})
    events = [ev async for ev in stream]
    await sdk.close()
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    for e in events:
        assert (e.size, e.quality, e.background, e.output_format) == ("256x256", "low", "transparent", "webp")
        assert decode(e.b64_json).format == "WEBP"
    final = decode(events[-1].b64_json)
    assert final.mode == "RGBA"
    assert events[-1].usage is not None and events[-1].usage.output_tokens == output_tokens("low", 256, 256)


async def test_partial_images_zero_sends_only_the_completed_event(live: Live) -> None:
    sdk = live.sdk()
    stream = await sdk.images.generate(prompt="x", size="256x256", stream=True, partial_images=0)
    events = [ev async for ev in stream]
    await sdk.close()
    assert [e.type for e in events] == ["image_generation.completed"]
    assert decode(events[0].b64_json).size == (256, 256)
    assert events[0].size == "256x256" and events[0].quality == "auto"


async def test_stream_with_n2_completes_each_image(live: Live) -> None:
    sdk = live.sdk()
    stream = await sdk.images.generate(prompt="x", size="256x256", n=2, stream=True, partial_images=1,
                                       extra_body={"num_inference_steps": 4, "seed": 5})
    events = [ev async for ev in stream]
    await sdk.close()
    types = [e.type for e in events]
    assert types.count("image_generation.partial_image") == 2
    assert types[-2:] == ["image_generation.completed"] * 2
    a, b = (decode(e.b64_json) for e in events[-2:])
    assert a.tobytes() != b.tobytes()  # two different images, seeds 5 and 6
    row = await live.wait_row()
    assert row["status"] == "ok" and row["n"] == 2
    assert row["output_tokens"] == 2 * output_tokens("medium", 256, 256)  # the ledger bills both


async def test_edit_stream_gives_image_edit_events(live: Live) -> None:
    sdk = live.sdk()
    src = Image.new("RGB", (96, 64), (30, 120, 200))
    stream = await sdk.images.edit(image=("in.png", png(src), "image/png"), prompt="add a sun", stream=True,
                                   partial_images=1, extra_body={"num_inference_steps": 8})
    events = [ev async for ev in stream]
    await sdk.close()
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[0].partial_image_index == 0
    for e in events:
        assert decode(e.b64_json).size == (96, 64)  # size=auto on an edit: the input's size
        assert (e.size, e.quality, e.background, e.output_format) == ("auto", "auto", "auto", "png")
    assert events[-1].usage is not None and events[-1].usage.input_tokens_details.image_tokens > 0
    row = await live.wait_row()
    assert row["status"] == "ok" and row["endpoint"] == "images.edits"


# -- failures -----------------------------------------------------------------------------
async def test_mid_stream_failure_is_an_error_event_and_the_sdk_raises(live: Live) -> None:
    FaultyGPU(live.backend)
    sdk = live.sdk()
    stream = await sdk.images.generate(prompt="x", size="256x256", stream=True, partial_images=2,
                                       extra_body={"num_inference_steps": 6})
    got: list[Any] = []

    async def consume() -> None:
        async for ev in stream:
            got.append(ev)

    with pytest.raises(openai.APIError) as ei:
        await consume()
    await sdk.close()
    assert [e.type for e in got] == ["image_generation.partial_image"]  # the preview made it out first
    assert "simulated device fault" not in ei.value.message  # internals stay in the log and the ledger
    assert isinstance(ei.value.body, dict) and ei.value.body["code"] == "generation_failed"
    row = await live.wait_row()
    assert (row["status"], row["http_status"], row["error_code"]) == ("error", 500, "generation_failed")
    assert "simulated device fault" in row["error_message"]
    assert row["output_tokens"] is None and row["input_tokens"] is None  # failures are not billed


async def test_mid_stream_failure_on_the_wire(live: Live) -> None:
    """The raw SSE: named events for images, then a bare `data: {"error": {...}}`."""
    FaultyGPU(live.backend)
    async with (
        httpx2.AsyncClient(base_url=live.base, timeout=60) as h,
        h.stream("POST", "/v1/images/generations", json={
            "prompt": "x", "size": "256x256", "stream": True, "partial_images": 1, "num_inference_steps": 4}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = (await r.aread()).decode()
    blocks = [b for b in body.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    assert blocks[0].startswith("event: image_generation.partial_image\ndata: {")
    assert blocks[1].startswith("data: ")
    err = json.loads(blocks[1][len("data: "):])
    assert set(err) == {"error"}
    assert {"message", "type", "param", "code"} <= set(err["error"])
    assert err["error"]["type"] == "server_error"


async def test_stream_bad_request_is_a_plain_400_before_the_stream(live: Live) -> None:
    sdk = live.sdk()
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="1000x1000", stream=True, partial_images=1)
    await sdk.close()
    assert ei.value.body["param"] == "size"  # type: ignore[index]
    assert ei.value.response.headers["content-type"].startswith("application/json")


# -- disconnects --------------------------------------------------------------------------
@pytest.mark.parametrize("partial_images", [3, 0])
async def test_stream_disconnect_cancels_the_job(live: Live, partial_images: int) -> None:
    """The client leaves between events (after the first partial image, or before any):
    the job stops at its next step and the ledger says `cancelled`."""
    gpu = SlowGPU(live.backend)
    sdk = live.sdk()
    stream = await sdk.images.generate(prompt="x", size="256x256", stream=True, partial_images=partial_images,
                                       extra_body={"num_inference_steps": 200})
    if partial_images:
        first = await stream.__anext__()
        assert first.type == "image_generation.partial_image"
    else:
        await gpu.wait_steps(10)
    left_at = gpu.steps
    await stream.close()
    await sdk.close()
    assert await asyncio.to_thread(gpu.done.wait, 20), "the pipeline call never stopped"
    assert gpu.outcome == "RunCancelled"
    assert gpu.total == 200 and gpu.steps < 200
    assert gpu.steps - left_at < 25, f"left at step {left_at}, stopped at {gpu.steps}"
    row = await live.wait_row()
    assert (row["status"], row["http_status"]) == ("cancelled", 499)
    assert row["output_tokens"] is None
    assert live.app.state.scheduler.worker(MODEL).waiting == 0


async def test_non_streaming_disconnect_cancels_the_job(live: Live) -> None:
    gpu = SlowGPU(live.backend)
    sdk = live.sdk()
    task = asyncio.create_task(sdk.images.generate(prompt="x", size="256x256",
                                                   extra_body={"num_inference_steps": 200}))
    await gpu.wait_steps(10)
    left_at = gpu.steps
    task.cancel()  # the SDK closes its connection
    with pytest.raises(asyncio.CancelledError):
        await task
    await sdk.close()
    assert await asyncio.to_thread(gpu.done.wait, 20), "the pipeline call never stopped"
    assert gpu.outcome == "RunCancelled"
    assert gpu.steps < 200 and gpu.steps - left_at < 25, f"left at step {left_at}, stopped at {gpu.steps}"
    row = await live.wait_row()
    assert (row["status"], row["http_status"]) == ("cancelled", 499)
    assert row["output_tokens"] is None and row["input_tokens"] is None
    assert live.app.state.scheduler.worker(MODEL).waiting == 0
    # the model is free again for the next client
    sdk = live.sdk()
    r = await sdk.images.generate(prompt="y", size="256x256", quality="low")
    await sdk.close()
    assert r.data[0].b64_json


async def test_a_queued_request_that_disconnects_never_runs(live: Live) -> None:
    """Cancelled while still waiting behind another job: dropped from the queue."""
    gpu = SlowGPU(live.backend)
    sdk = live.sdk()
    first = asyncio.create_task(sdk.images.generate(prompt="first", size="256x256",
                                                    extra_body={"num_inference_steps": 60}))
    await gpu.wait_steps(2)
    second = asyncio.create_task(sdk.images.generate(prompt="second", size="512x256",
                                                     extra_body={"num_inference_steps": 60}))
    worker = live.app.state.scheduler.worker(MODEL)
    deadline = time.monotonic() + 10
    while worker.waiting < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    r = await first
    await sdk.close()
    assert r.data[0].b64_json
    deadline = time.monotonic() + 10
    while len(rows := live.rows()) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert sorted(row["status"] for row in rows) == ["cancelled", "ok"]
    assert worker.pipeline_calls == 1  # the cancelled one never reached the model
