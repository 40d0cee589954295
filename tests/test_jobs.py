"""Async work through the official openai SDK: files (owned per key), JSON edits by
file_id, batches (50 mixed lines, malformed input, cancel), the queue API, and pricing at
the batch discount. The tiny model at 256x256 keeps each image a few milliseconds."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.pricing import Pricing

K1, K2 = "key-one", "key-two"
PER_IMAGE = {q: {"1024x1024": 1.0} for q in ("low", "medium", "high")}


def png(color: str = "red", size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
async def japp(tmp_path: Path, tiny_sd_path: Path) -> Any:
    config = tiny_config(tiny_sd_path, max_batch_images=4, pricing=Pricing(per_image=PER_IMAGE))
    settings = make_settings(tmp_path, api_keys=[K1, K2], janitor_interval_seconds=3600)
    application = create_app(settings, [config])
    async with running(application):
        yield application


def _http(app: Any, key: str = K1) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver",
                              headers={"authorization": f"Bearer {key}"})


async def _wait_batch(client: Any, batch_id: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = await client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "cancelled", "expired"):
            return b
        assert time.monotonic() < deadline, b
        await asyncio.sleep(0.2)


def _lines(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in raw.decode().splitlines() if x.strip()]


async def test_files_belong_to_their_key(japp: Any) -> None:
    c1, c2 = sdk_client(japp, api_key=K1), sdk_client(japp, api_key=K2)
    f = await c1.files.create(file=("red.png", png()), purpose="vision")
    assert f.object == "file" and f.purpose == "vision" and f.bytes == len(png()) and f.filename == "red.png"
    assert (await c1.files.retrieve(f.id)).id == f.id
    assert (await c1.files.content(f.id)).content == png()
    assert [x.id for x in (await c1.files.list()).data] == [f.id]
    with pytest.raises(openai.NotFoundError):
        await c2.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        await c2.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        await c2.files.delete(f.id)
    assert (await c2.files.list()).data == []
    with pytest.raises(openai.BadRequestError) as err:
        await c1.files.create(file=("x.png", png()), purpose="fine-tune")
    assert err.value.body["param"] == "purpose"  # type: ignore[index]
    # A JSON edit takes the file by id; another key's file is a 400 naming the parameter.
    async with _http(japp, K1) as h1, _http(japp, K2) as h2:
        body = {"prompt": "a hat", "images": [{"file_id": f.id}], "size": "256x256", "mask": {"file_id": f.id}}
        ok = await h1.post("/v1/images/edits", json={**body, "mask": None})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["data"]) == 1
        other = await h2.post("/v1/images/edits", json=body)
        assert other.status_code == 400 and other.json()["error"]["param"] == "images[0].file_id"
        assert other.json()["error"]["code"] == "file_not_found"
    deleted = await c1.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        await c1.files.retrieve(f.id)


async def test_batch_of_50_generations_and_edits(japp: Any) -> None:
    client = sdk_client(japp, api_key=K1)
    image = await client.files.create(file=("in.png", png("blue")), purpose="vision")
    lines = []
    for i in range(50):
        if i % 2:
            body: dict[str, Any] = {"prompt": f"edit {i}", "images": [{"file_id": image.id}], "size": "256x256"}
            url = "/v1/images/edits"
        else:
            body = {"prompt": f"gen {i}", "size": "256x256", "quality": "low"}
            url = "/v1/images/generations"
        lines.append({"custom_id": f"line-{i}", "method": "POST", "url": url, "body": body})
    # One batch has one endpoint: generations and edits go in two batches that run together.
    batches = []
    for endpoint in ("/v1/images/generations", "/v1/images/edits"):
        text = "\n".join(json.dumps(x) for x in lines if x["url"] == endpoint) + "\n"
        f = await client.files.create(file=("in.jsonl", text.encode()), purpose="batch")
        batches.append(await client.batches.create(input_file_id=f.id, endpoint=endpoint,
                                                   completion_window="24h", metadata={"run": "t"}))
    assert all(b.status == "in_progress" and b.request_counts.total == 25 for b in batches)
    seen: list[str] = []
    for b in batches:
        done = await _wait_batch(client, b.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == 25 and done.request_counts.failed == 0
        assert done.metadata == {"run": "t"} and done.completed_at and done.finalizing_at and done.in_progress_at
        assert done.error_file_id is None
        out = _lines((await client.files.content(done.output_file_id)).content)
        for line in out:
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["id"].startswith("batch_req_")
            body = line["response"]["body"]
            assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (256, 256)
        seen += [x["custom_id"] for x in out]
    assert sorted(seen) == sorted(f"line-{i}" for i in range(50))
    # The lines' results waited in the Store (not the database) until the output file was written.
    assert not [p for p in (japp.state.settings.data_dir / "images").iterdir() if p.name.startswith("result-")]
    listed = await client.batches.list(limit=1)
    assert len(listed.data) == 1 and listed.has_more
    rest = await client.batches.list(after=listed.data[0].id)
    assert {listed.data[0].id, *[b.id for b in rest.data]} == {b.id for b in batches}
    # Billed once each, at the batch discount, at bulk priority.
    db = japp.state.settings.data_dir / "imagegate.db"
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT id, status, cost_usd FROM requests WHERE id LIKE 'batch_req_%'").fetchall()
    assert len(rows) == 50 and {r[1] for r in rows} == {"ok"}
    async with _http(japp) as h:  # the same request, synchronously: full price
        sync = await h.post("/v1/images/generations", json={"prompt": "gen", "size": "256x256", "quality": "low"})
    full = float(sync.headers["x-imagegate-cost-usd"])
    assert full > 0
    assert all(r[2] == pytest.approx(full * 0.5) for r in rows)
    # Another key sees none of it.
    c2 = sdk_client(japp, api_key=K2)
    with pytest.raises(openai.NotFoundError):
        await c2.batches.retrieve(batches[0].id)
    assert (await c2.batches.list()).data == []


async def test_malformed_input_fails_the_batch_with_line_numbers(japp: Any) -> None:
    client = sdk_client(japp, api_key=K1)
    good = {"custom_id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}
    text = "\n".join([
        json.dumps(good),
        json.dumps({**good, "custom_id": "a"}),  # 2: duplicate
        json.dumps({**good, "custom_id": "b", "method": "GET"}),  # 3
        json.dumps({**good, "custom_id": "c", "url": "/v1/images/edits"}),  # 4
        json.dumps({**good, "custom_id": "d", "body": {"prompt": "x", "n": "2"}}),  # 5
        "{not json",  # 6
        json.dumps({**good, "custom_id": "e", "body": {"prompt": "x", "stream": True}}),  # 7
        json.dumps({**good, "custom_id": "f"}),
    ]) + "\n"
    f = await client.files.create(file=("bad.jsonl", text.encode()), purpose="batch")
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h")
    assert b.status == "failed" and b.failed_at
    errs = {e.line: e for e in b.errors.data}
    assert sorted(errs) == [2, 3, 4, 5, 6, 7]
    assert errs[2].code == "duplicate_custom_id" and errs[5].param == "body.n"
    assert (await client.batches.retrieve(b.id)).status == "failed"
    with pytest.raises(openai.BadRequestError) as err:
        await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert err.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-nope", endpoint="/v1/images/generations",
                                    completion_window="24h")


async def test_cancel_mid_batch_keeps_what_completed(japp: Any) -> None:
    client = sdk_client(japp, api_key=K1)
    text = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations",
                               "body": {"prompt": f"p{i}", "size": "256x256", "num_inference_steps": 20}}) + "\n"
                   for i in range(40))
    f = await client.files.create(file=("c.jsonl", text.encode()), purpose="batch")
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h")
    deadline = time.monotonic() + 120
    while (await client.batches.retrieve(b.id)).request_counts.completed < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    c = await client.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled") and c.cancelling_at
    done = await _wait_batch(client, b.id)
    assert done.status == "cancelled" and done.cancelled_at
    out = _lines((await client.files.content(done.output_file_id)).content)
    err = _lines((await client.files.content(done.error_file_id)).content)
    assert len(out) >= 2 and len(out) < 40
    ids = [x["custom_id"] for x in out + err]
    assert sorted(ids) == sorted(f"c{i}" for i in range(40))  # each exactly once
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    assert done.request_counts.completed == len(out) and done.request_counts.total == 40


async def test_queue_submit_status_response_cancel(japp: Any) -> None:
    async with _http(japp) as h, _http(japp, K2) as other:
        r = await h.post("/v1/queue/images/generations", json={"prompt": "a cat", "size": "256x256"})
        assert r.status_code == 202, r.text
        sub = r.json()
        assert sub["object"] == "image.request" and sub["status"] == "queued"
        assert sub["status_url"].endswith(f"/v1/queue/requests/{sub['id']}")
        assert (await other.get(sub["status_url"])).status_code == 404
        deadline = time.monotonic() + 60
        while (st := (await h.get(sub["status_url"])).json())["status"] != "completed":
            assert st["status"] in ("queued", "in_progress") and time.monotonic() < deadline, st
            await asyncio.sleep(0.05)
        resp = await h.get(sub["response_url"])
        assert resp.status_code == 200 and resp.json()["size"] == "256x256" and len(resp.json()["data"]) == 1
        again = await h.post(sub["cancel_url"])
        assert again.status_code == 400  # already ended

        # A multipart edit, then a request that fails validation in the flow (unknown model):
        # its response is the error the synchronous call would have got.
        e = await h.post("/v1/queue/images/edits", files={"image": ("a.png", png(), "image/png")},
                         data={"prompt": "hat", "size": "256x256"})
        assert e.status_code == 202, e.text
        bad = (await h.post("/v1/queue/images/generations", json={"prompt": "x", "model": "nope"})).json()
        for sub2, code in ((e.json(), 200), (bad, 404)):
            while (await h.get(sub2["status_url"])).json()["status"] in ("queued", "in_progress"):
                await asyncio.sleep(0.05)
            res = await h.get(sub2["response_url"])
            assert res.status_code == code, res.text
        assert (await h.get(bad["status_url"])).json()["error"]["code"] == "model_not_found"
        store = japp.state.settings.data_dir / "images"
        assert not [p for p in store.iterdir() if p.name.startswith("upload-")]  # an ended edit's uploads go

        # Cancel: a long queue; the last one is cancelled while queued, with its position shown.
        subs = [(await h.post("/v1/queue/images/generations", json={
            "prompt": f"q{i}", "size": "256x256", "num_inference_steps": 30})).json() for i in range(6)]
        last = (await h.get(subs[-1]["status_url"])).json()
        if last["status"] == "queued":
            assert last["queue_position"] >= 0
        cancelled = await h.post(subs[-1]["cancel_url"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelled", "in_progress")
        while (await h.get(subs[-1]["status_url"])).json()["status"] not in ("cancelled", "completed"):
            await asyncio.sleep(0.05)
        final = await h.get(subs[-1]["response_url"])
        assert final.status_code in (200, 400)
        bad_stream = await h.post("/v1/queue/images/generations", json={"prompt": "x", "stream": True})
        assert bad_stream.status_code == 400 and bad_stream.json()["error"]["param"] == "stream"


async def test_batch_and_queue_on_each_database(tmp_path: Path, tiny_sd_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, database_url=db_url, janitor_interval_seconds=3600)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(app):
        client = sdk_client(app)
        image = await client.files.create(file=("in.png", png("green")), purpose="vision")
        text = "".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/images/edits", "body": {
            "prompt": "hat", "images": [{"file_id": image.id}], "size": "256x256"}}) + "\n" for i in range(4))
        f = await client.files.create(file=("in.jsonl", text.encode()), purpose="batch")
        b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/edits", completion_window="24h")
        async with _http(app) as h:
            sub = (await h.post("/v1/queue/images/generations", json={"prompt": "x", "size": "256x256"})).json()
            done = await _wait_batch(client, b.id)
            assert done.status == "completed" and done.request_counts.completed == 4
            while (await h.get(sub["status_url"])).json()["status"] != "completed":
                await asyncio.sleep(0.05)
            assert (await h.get(sub["response_url"])).status_code == 200
        out = _lines((await client.files.content(done.output_file_id)).content)
        assert sorted(x["custom_id"] for x in out) == ["e0", "e1", "e2", "e3"]


async def test_a_late_finaliser_leaves_the_winners_output_whole(japp: Any) -> None:
    """Every worker that finishes a batch's last line, and the sweeper, may finalise it at once. One that read
    the lines, then lost the race to another that wrote the output and dropped the results, must not
    overwrite that output with lines whose results are gone (a 200 line without "data"; seen under load)."""
    import threading

    from sqlalchemy import select

    from imagegate.db.tables import JobRow

    client = sdk_client(japp, api_key=K1)
    batches = japp.state.jobs.batches

    async def later(batch_id: str) -> None:  # no finalising while the lines run
        return None

    batches.finalize = later
    text = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/images/generations",
                               "body": {"prompt": "p", "size": "256x256"}}) + "\n" for i in range(3))
    f = await client.files.create(file=("r.jsonl", text.encode()), purpose="batch")
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h")
    deadline = time.monotonic() + 120
    while True:
        async with batches.sessions() as s:
            states = set((await s.execute(select(JobRow.status).where(JobRow.batch_id == b.id))).scalars())
        if states == {"completed"}:
            break
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.1)
    del batches.finalize
    files, gate, started = batches.files, threading.Event(), threading.Event()
    load = files.load_result

    def held(result: Any) -> Any:  # the late finaliser's first read waits until the other has finished
        if not started.is_set():
            started.set()
            gate.wait(60)
        return load(result)

    files.load_result = held
    late = asyncio.create_task(batches.finalize(b.id))
    while not started.is_set():
        await asyncio.sleep(0.01)
    await batches.finalize(b.id)
    gate.set()
    await late
    done = await client.batches.retrieve(b.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = _lines((await client.files.content(done.output_file_id)).content)
    assert sorted(x["custom_id"] for x in out) == ["r0", "r1", "r2"]
    for line in out:
        body = line["response"]["body"]
        assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (256, 256)
    store = japp.state.settings.data_dir / "images"
    hexid = b.id.removeprefix("batch_")
    assert len([p for p in store.iterdir() if p.name.startswith(f"file-{hexid}-")]) == 1  # the loser's is gone


async def test_a_batch_past_its_window_expires(japp: Any) -> None:
    client = sdk_client(japp, api_key=K1)
    text = "".join(json.dumps({"custom_id": f"x{i}", "method": "POST", "url": "/v1/images/generations",
                               "body": {"prompt": "p", "size": "256x256"}}) + "\n" for i in range(30))
    f = await client.files.create(file=("x.jsonl", text.encode()), purpose="batch")
    jobs = japp.state.jobs
    await jobs.runner.stop()  # nothing runs: every line is still queued when the window closes
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h")
    from sqlalchemy import update

    from imagegate.db.tables import BatchRow
    async with jobs.batches.sessions() as s:
        await s.execute(update(BatchRow).where(BatchRow.id == b.id).values(expires_at=int(time.time()) - 1))
        await s.commit()
    await jobs.batches.expire_due()
    await jobs.batches.finalize_ready()
    done = await client.batches.retrieve(b.id)
    assert done.status == "expired" and done.expired_at and done.output_file_id is None
    err = _lines((await client.files.content(done.error_file_id)).content)
    assert sorted(x["custom_id"] for x in err) == sorted(f"x{i}" for i in range(30))
    assert {x["error"]["code"] for x in err} == {"batch_expired"}
