"""The server around the images: /health and loading, an event loop that stays free under
load, concurrency, back-pressure, API keys, response headers, the ledger and /v1/models.

Fakes only at the GPU edge: a device that loads slowly, one that holds its first call
(so later requests are provably queued), one that faults."""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from conftest import live_server, make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.backends.diffusers import DiffusersBackend


def http(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


def server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


class HeldGPU:
    """Fake at the GPU edge: the first pipeline call waits until released (a busy device)."""

    def __init__(self, backend: Any) -> None:
        self.real = backend.run_batch
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        backend.run_batch = self.run_batch

    def run_batch(self, jobs: list[Any], runtimes: list[Any]) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(30)
        return self.real(jobs, runtimes)


@pytest.fixture
async def app(tmp_path: Path, tiny_sd_path: Path) -> AsyncIterator[Any]:
    application = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(application):
        yield application


@pytest.fixture
async def sdk(app: Any) -> AsyncIterator[AsyncOpenAI]:
    c = sdk_client(app)
    yield c
    await c.close()


# -- /health ------------------------------------------------------------------------------
async def test_health_is_503_while_loading_then_200(tmp_path: Path, tiny_sd_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_load = DiffusersBackend.load

    def slow_load(self: DiffusersBackend) -> None:  # fake at the GPU edge: weights take a while to arrive
        gate.wait(30)
        real_load(self)

    monkeypatch.setattr(DiffusersBackend, "load", slow_load)
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with app.router.lifespan_context(app), http(app) as h:
        r = await h.get("/health")
        assert r.status_code == 503
        assert r.json() == {"status": "loading", "models": {"tiny-sd": "loading"}}
        # a generation while loading: 503 with Retry-After, which the SDK honours
        r = await h.post("/v1/images/generations", json={"prompt": "x", "size": "256x256"})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) >= 1000
        assert r.json()["error"]["type"] == "server_error"
        # the catalogue is known before the weights are loaded
        assert (await h.get("/v1/models")).status_code == 200
        gate.set()
        deadline = time.monotonic() + 60
        while (r := await h.get("/health")).status_code != 200:
            assert r.status_code == 503
            assert time.monotonic() < deadline, "model never became ready"
            await asyncio.sleep(0.05)
        assert r.json() == {"status": "ok", "models": {"tiny-sd": "ready"}}
        ok = await h.post("/v1/images/generations", json={"prompt": "x", "size": "256x256", "quality": "low"})
        assert ok.status_code == 200


async def test_health_reports_a_failed_load(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path / "missing", name="broken")])
    async with app.router.lifespan_context(app), http(app) as h:
        deadline = time.monotonic() + 30
        while "failed" not in (body := (await h.get("/health")).json())["models"]["broken"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        r = await h.get("/health")
        assert r.status_code == 503
        assert "broken" in body["models"]["broken"] and "does not exist" in body["models"]["broken"]


async def test_health_answers_fast_while_generations_run(tmp_path: Path, tiny_sd_path: Path) -> None:
    """The event loop is never blocked by model work: with 8 generations of 30 steps in
    flight on a live uvicorn, /health's median latency stays under 50 ms. (A blocked loop
    shows up as latencies of a whole pipeline call: seconds.)"""
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    with live_server(app) as base:
        worker = app.state.scheduler.worker("tiny-sd")
        sdk = AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        gens = [asyncio.create_task(sdk.images.generate(prompt=f"load {i}", size="256x256",
                                                        extra_body={"num_inference_steps": 30, "seed": i}))
                for i in range(8)]
        latencies: list[float] = []
        async with httpx2.AsyncClient(base_url=base, timeout=30) as h:
            await h.get("/health")  # open the connection outside the measurement
            deadline = time.monotonic() + 5
            while worker.waiting == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            while not all(g.done() for g in gens):
                busy = worker.waiting > 0
                t0 = time.perf_counter()
                r = await h.get("/health")
                dt = time.perf_counter() - t0
                assert r.status_code == 200
                if busy:
                    latencies.append(dt)
                await asyncio.sleep(0.02)
        results = await asyncio.gather(*gens)
        await sdk.close()
    assert all(len(r.data) == 1 for r in results)
    assert len(latencies) >= 5, f"only {len(latencies)} samples while the model was busy"
    median = statistics.median(latencies)
    print(f"/health under load: median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, n={len(latencies)}")
    assert median < 0.050, f"/health median {median * 1000:.1f} ms over {len(latencies)} calls under load"


# -- concurrency and back-pressure ---------------------------------------------------------
async def test_concurrent_sdk_requests_all_succeed(app: Any, sdk: AsyncOpenAI) -> None:
    sizes = ["256x256", "512x256", "256x512", "256x256"] * 2
    raws = await asyncio.gather(*(sdk.images.with_raw_response.generate(
        prompt=f"concurrent {i}", size=s, quality="low", extra_body={"seed": i}) for i, s in enumerate(sizes)))
    ids = {r.headers["x-request-id"] for r in raws}
    assert len(ids) == 8
    for raw, size in zip(raws, sizes, strict=True):
        r = raw.parse()
        img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))
        assert f"{img.width}x{img.height}" == size == r.size
    rows = [await app.state.ledger.get(i) for i in ids]
    assert all(row is not None and row.status == "ok" for row in rows)
    assert app.state.scheduler.worker("tiny-sd").waiting == 0


async def test_queue_full_answers_503_with_retry_after(tmp_path: Path, tiny_sd_path: Path) -> None:
    queue_size = 2
    app = create_app(make_settings(tmp_path, queue_size=queue_size), [tiny_config(tiny_sd_path)])
    async with running(app):
        worker = app.state.scheduler.worker("tiny-sd")
        gpu = HeldGPU(worker.backend)
        sdk = sdk_client(app)

        def gen(i: int) -> Any:
            return sdk.images.generate(prompt=f"q{i}", size="256x256", quality="low")

        accepted = [asyncio.create_task(gen(0))]
        assert await asyncio.to_thread(gpu.entered.wait, 10)
        rejected: openai.APIStatusError | None = None
        for i in range(1, queue_size + 3):
            task = asyncio.create_task(gen(i))
            deadline = time.monotonic() + 10
            while not task.done() and worker.waiting < len(accepted) + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            if task.done():
                with pytest.raises(openai.InternalServerError) as ei:
                    task.result()
                rejected = ei.value
                break
            accepted.append(task)
        assert rejected is not None, f"{len(accepted)} requests accepted with queue_size={queue_size}"
        # queue_size requests in flight (the running one counted or not), then back-pressure
        assert queue_size <= len(accepted) <= queue_size + 1
        assert rejected.status_code == 503
        assert rejected.code == "overloaded" and rejected.type == "server_error"
        assert int(rejected.response.headers["retry-after"]) >= 1
        assert int(rejected.response.headers["retry-after-ms"]) >= 1000
        assert rejected.response.headers["x-request-id"]
        # streams are refused before the event stream starts: a plain 503, not an SSE error
        async with http(app) as h:
            r = await h.post("/v1/images/generations",
                             json={"prompt": "s", "size": "256x256", "stream": True, "partial_images": 1})
            assert r.status_code == 503 and r.headers["content-type"].startswith("application/json")
            assert "retry-after-ms" in r.headers
        # a client that retries (the SDK honours retry-after-ms) gets through once the queue drains
        patient = AsyncOpenAI(api_key="k", base_url="http://testserver/v1", http_client=http(app), max_retries=4)
        later = asyncio.create_task(patient.images.generate(prompt="patient", size="256x256", quality="low"))
        await asyncio.sleep(0.05)
        gpu.release.set()
        results = await asyncio.gather(*accepted, later)
        assert all(r.data[0].b64_json for r in results)
        await patient.close()
        await sdk.close()


# -- API keys -----------------------------------------------------------------------------
async def test_api_keys(tmp_path: Path, tiny_sd_path: Path) -> None:
    app = create_app(make_settings(tmp_path, api_keys=["right-1", "right-2"]), [tiny_config(tiny_sd_path)])
    async with running(app):
        for key in ("right-1", "right-2"):
            good = sdk_client(app, api_key=key)
            r = await good.images.generate(prompt="k", size="256x256", quality="low", response_format="url")
            await good.close()
        url = r.data[0].url
        assert url
        bad = sdk_client(app, api_key="wrong")
        with pytest.raises(openai.AuthenticationError) as ei:
            await bad.images.generate(prompt="k", size="256x256")
        assert ei.value.status_code == 401 and ei.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        await bad.close()
        async with http(app) as h:
            for headers in ({}, {"authorization": "Bearer"}, {"authorization": "Basic right-1"},
                            {"authorization": "Bearer right-1x"}, {"authorization": "Bearer right"}):
                r = await h.post("/v1/images/generations", json={"prompt": "x"}, headers=headers)
                assert r.status_code == 401, headers
                assert r.json()["error"]["code"] == "invalid_api_key"
            # multipart endpoints are guarded too
            r = await h.post("/v1/images/edits", files={"image": ("a.png", b"x", "image/png")}, data={"prompt": "x"})
            assert r.status_code == 401
            # signed image links need no key: the signature is the credential
            got = await h.get(url)
            assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
            # ...and a key does not make up for a bad signature
            r = await h.get(url[:-4] + "0000", headers={"authorization": "Bearer right-1"})
            assert r.status_code == 403
            assert (await h.get("/health")).status_code == 200


# -- headers ------------------------------------------------------------------------------
async def test_request_id_and_server_timing(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(prompt="timing", size="256x256", quality="low")
    t = server_timing(raw.headers["server-timing"])
    assert set(t) >= {"queue", "inference", "encode", "total"}
    assert all(v >= 0 for v in t.values())
    assert t["inference"] > 0 and t["total"] >= t["inference"] + t["encode"] - 1
    row = await app.state.ledger.get(raw.headers["x-request-id"])
    assert row is not None
    assert row.inference_s == pytest.approx(t["inference"] / 1000, abs=1e-3)
    # errors carry them too (total only: nothing ran)
    async with http(app) as h:
        r = await h.post("/v1/images/generations", json={"prompt": "x", "size": "1000x1000"})
        assert r.status_code == 400
        assert r.headers["x-request-id"].startswith("req_")
        assert "total" in server_timing(r.headers["server-timing"])
        r = await h.get("/health")
        assert r.headers["x-request-id"] and "total" in r.headers["server-timing"]


# -- the ledger ---------------------------------------------------------------------------
async def test_ledger_row_for_a_success(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a lighthouse", size="512x256", quality="high", n=2, user="alice",
        output_format="webp", extra_body={"seed": 42, "negative_prompt": "fog"})
    r = raw.parse()
    row = await app.state.ledger.get(raw.headers["x-request-id"])
    assert row is not None
    assert (row.status, row.http_status, row.endpoint) == ("ok", 200, "images.generations")
    assert row.user == "alice"
    assert (row.model_requested, row.model) == ("gpt-image-1", "tiny-sd")
    assert row.n == 2 and row.seed == 42
    p = row.params
    assert (p["width"], p["height"], p["quality"], p["output_format"]) == (512, 256, "high", "webp")
    assert p["steps"] == 4 and p["prompt"] == "a lighthouse" and p["negative_prompt"] == "fog"
    for k in ("queue_s", "inference_s", "encode_s", "total_s"):
        assert getattr(row, k) is not None and getattr(row, k) >= 0, k
    assert row.total_s >= row.inference_s
    assert r.usage is not None
    assert (row.input_tokens, row.output_tokens) == (r.usage.input_tokens, r.usage.output_tokens)
    assert row.output_tokens == 2 * round(4160 * 512 * 256 / 1024**2)
    assert row.error_code is None and row.error_message is None
    assert row.api_key and row.api_key != "test-key"


async def test_ledger_prefers_safety_identifier_as_the_user(app: Any, sdk: AsyncOpenAI) -> None:
    raw = await sdk.images.with_raw_response.generate(prompt="x", size="256x256", quality="low", user="old-style",
                                                      extra_body={"safety_identifier": "hashed-user-7"})
    row = await app.state.ledger.get(raw.headers["x-request-id"])
    assert row is not None and row.user == "hashed-user-7"


async def test_ledger_records_failures_without_usage(app: Any, sdk: AsyncOpenAI) -> None:
    # a bad parameter: recorded with its code, never billed
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.images.generate(prompt="x", size="1000x1000", user="bob")
    row = await app.state.ledger.get(ei.value.response.headers["x-request-id"])
    assert row is not None
    assert (row.status, row.http_status, row.error_code, row.user) == ("error", 400, "invalid_size", "bob")
    assert row.input_tokens is None and row.output_tokens is None
    assert row.params.get("size") == "1000x1000"

    # the device faults mid-run: a 500, recorded as an error, not billed
    backend = app.state.scheduler.worker("tiny-sd").backend

    def faulty_gpu(jobs: list[Any], runtimes: list[Any]) -> Any:  # fake at the GPU edge
        raise RuntimeError("simulated device fault")

    backend.run_batch = faulty_gpu
    with pytest.raises(openai.InternalServerError) as e5:
        await sdk.images.generate(prompt="x", size="256x256", user="carol")
    row = await app.state.ledger.get(e5.value.response.headers["x-request-id"])
    assert row is not None
    assert (row.status, row.http_status, row.error_code, row.user) == ("error", 500, "generation_failed", "carol")
    assert row.model == "tiny-sd"
    assert row.input_tokens is None and row.output_tokens is None
    assert "simulated device fault" in (row.error_message or "")


# -- /v1/models ---------------------------------------------------------------------------
async def test_models_list_and_retrieve(tmp_path: Path, tiny_sd_path: Path) -> None:
    configs = [tiny_config(tiny_sd_path), tiny_config(tiny_sd_path, name="org/tiny-two", aliases=("two",))]
    app = create_app(make_settings(tmp_path), configs)
    async with running(app):
        sdk = sdk_client(app)
        page = await sdk.models.list()
        ids = [m.id for m in page.data]
        assert ids[:2] == ["tiny-sd", "org/tiny-two"]
        assert {"two", "gpt-image-1", "dall-e-3"} <= set(ids)
        assert all(m.object == "model" and m.owned_by == "imagegate" for m in page.data)
        m = await sdk.models.retrieve("tiny-sd")
        assert m.id == "tiny-sd" and m.object == "model"
        m = await sdk.models.retrieve("org/tiny-two")  # ids with a slash
        assert m.id == "org/tiny-two"
        m = await sdk.models.retrieve("two")
        assert getattr(m, "alias_of", None) == "org/tiny-two"
        assert getattr(await sdk.models.retrieve("gpt-image-1"), "alias_of", None) == "tiny-sd"
        for unknown in ("nope", "org/nope", "tiny-sd-x"):
            with pytest.raises(openai.NotFoundError) as ei:
                await sdk.models.retrieve(unknown)
            assert ei.value.status_code == 404 and ei.value.code == "model_not_found"
            assert ei.value.body["param"] == "model"  # type: ignore[index]
        # the second model serves requests by its own name and by alias
        r = await sdk.images.generate(model="two", prompt="x", size="256x256", quality="low")
        assert r.data[0].b64_json
        await sdk.close()


# -- extension extremes -------------------------------------------------------------------
async def test_one_step_image_to_image_is_not_a_server_error(app: Any, sdk: AsyncOpenAI) -> None:
    """num_inference_steps=1 at strength < 1 would denoise zero steps (a crash inside the
    pipeline): the server runs the fewest steps that work and says so in a note."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 40, 200)).save(buf, "PNG")
    image = ("in.png", buf.getvalue(), "image/png")
    raw = await sdk.images.with_raw_response.create_variation(image=image, size="256x256",
                                                              extra_body={"num_inference_steps": 1})
    assert raw.status_code == 200 and raw.parse().data[0].b64_json
    assert "num_inference_steps raised" in raw.headers.get("x-imagegate-notes", "")
    raw = await sdk.images.with_raw_response.edit(image=image, prompt="x", size="256x256",
                                                  extra_body={"num_inference_steps": 1})
    assert raw.status_code == 200 and raw.parse().data[0].b64_json
    row = await app.state.ledger.get(raw.headers["x-request-id"])
    assert row is not None and row.status == "ok" and row.params["steps"] >= 2
