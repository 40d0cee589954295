"""Micro-batching through the public surface: concurrent SDK requests that share a
batching key run as one pipeline call (seen in the ledger), incompatible ones do not,
priorities order the queue, and the same seed gives the same image batched or alone.

The only fake is at the GPU edge: a gate that holds the first pipeline call so that
later requests are provably queued behind it."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app

# Batched and unbatched images for one seed agree to within this mean absolute
# difference (0-255 scale): batched kernels may reorder float sums.
BATCH_TOLERANCE = 1.0


class Gate:
    """Fake at the GPU edge: holds the first pipeline call until released."""

    def __init__(self, backend) -> None:  # type: ignore[no-untyped-def]
        self.backend = backend
        self.real = backend.run_batch
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []
        backend.run_batch = self.run_batch

    def run_batch(self, jobs, runtimes):  # type: ignore[no-untyped-def]
        self.calls.append(len(jobs))
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(30)
        return self.real(jobs, runtimes)


@pytest.fixture
async def gated(tmp_path, tiny_sd_path):  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(app):
        gate = Gate(app.state.scheduler.worker("tiny-sd").backend)
        client = sdk_client(app)
        yield app, gate, client
        gate.release.set()
        await client.close()


async def _gen(client, prompt: str, size: str = "256x256", seed: int = 1, **kw):  # type: ignore[no-untyped-def]
    raw = await client.images.with_raw_response.generate(model="tiny-sd", prompt=prompt, size=size,
                                                         extra_body={"seed": seed}, **kw)
    return raw.headers["x-request-id"], raw.parse()


async def _wait_queued(app, count: int) -> None:  # type: ignore[no-untyped-def]
    worker = app.state.scheduler.worker("tiny-sd")
    for _ in range(500):
        if len(worker.pending) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(worker.pending)} queued")


async def test_compatible_requests_share_one_pipeline_call(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    first = asyncio.create_task(_gen(client, "a red circle"))
    await asyncio.to_thread(gate.entered.wait, 10)
    rest = [asyncio.create_task(_gen(client, f"a blue square {i}", seed=10 + i)) for i in range(4)]
    await _wait_queued(app, 4)
    gate.release.set()
    results = await asyncio.gather(first, *rest)
    assert gate.calls == [1, 4]
    rows = [await app.state.ledger.get(rid) for rid, _ in results]
    assert rows[0].batch_jobs == 1
    assert len({r.batch_id for r in rows[1:]}) == 1 and rows[1].batch_jobs == 4 and rows[1].batch_images == 4
    assert all(r.status == "ok" for r in rows)


async def test_incompatible_requests_do_not_share(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    first = asyncio.create_task(_gen(client, "x"))
    await asyncio.to_thread(gate.entered.wait, 10)
    a = asyncio.create_task(_gen(client, "a", size="256x256", quality="low"))
    b = asyncio.create_task(_gen(client, "b", size="256x256", quality="high"))  # other step count
    c = asyncio.create_task(_gen(client, "c", size="1536x1024", quality="low"))  # other bucket
    await _wait_queued(app, 3)
    gate.release.set()
    results = await asyncio.gather(first, a, b, c)
    rows = [await app.state.ledger.get(rid) for rid, _ in results[1:]]
    assert len({r.batch_id for r in rows}) == 3
    assert gate.calls == [1, 1, 1, 1]


async def test_interactive_runs_before_bulk(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    first = asyncio.create_task(_gen(client, "x"))
    await asyncio.to_thread(gate.entered.wait, 10)
    bulk = asyncio.create_task(_gen(client, "bulk", quality="low", extra_headers={"x-imagegate-priority": "bulk"}))
    await _wait_queued(app, 1)
    inter = asyncio.create_task(_gen(client, "interactive", quality="high"))
    await _wait_queued(app, 2)
    gate.release.set()
    results = await asyncio.gather(first, bulk, inter)
    b_row = await app.state.ledger.get(results[1][0])
    i_row = await app.state.ledger.get(results[2][0])
    assert i_row.batch_id < b_row.batch_id


async def test_cancelled_while_queued_never_runs(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    first = asyncio.create_task(_gen(client, "x"))
    await asyncio.to_thread(gate.entered.wait, 10)
    doomed = asyncio.create_task(_gen(client, "doomed", quality="high"))
    await _wait_queued(app, 1)
    doomed.cancel()  # the client goes away while queued
    for _ in range(200):
        if not app.state.scheduler.worker("tiny-sd").pending:
            break
        await asyncio.sleep(0.01)
    gate.release.set()
    await first
    await asyncio.sleep(0.1)
    assert gate.calls == [1]
    assert app.state.scheduler.worker("tiny-sd").pending == []


def _pixels(resp) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(resp.data[0].b64_json))).convert("RGB"), dtype=np.float32)


async def test_same_seed_same_image_batched_or_alone(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    gate.release.set()  # no holding: this request runs alone
    _, alone = await _gen(client, "a green star", seed=42)
    gate.release.clear()
    gate.calls.clear()
    gate.entered.clear()
    first = asyncio.create_task(_gen(client, "hold"))
    await asyncio.to_thread(gate.entered.wait, 10)
    together = [asyncio.create_task(_gen(client, p, seed=s)) for p, s in
                [("a green star", 42), ("a red ring", 7), ("a blue heart", 9)]]
    await _wait_queued(app, 3)
    gate.release.set()
    await first
    results = await asyncio.gather(*together)
    assert gate.calls[-1] == 3
    diff = np.abs(_pixels(alone) - _pixels(results[0][1])).mean()
    assert diff <= BATCH_TOLERANCE, diff
    assert np.abs(_pixels(alone) - _pixels(results[1][1])).mean() > BATCH_TOLERANCE  # other seed/prompt differs


async def test_edits_batch_with_their_own_inputs(gated) -> None:  # type: ignore[no-untyped-def]
    app, gate, client = gated
    first = asyncio.create_task(_gen(client, "hold"))
    await asyncio.to_thread(gate.entered.wait, 10)

    def png(colour: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (128, 128), colour).save(buf, "PNG")
        return buf.getvalue()

    def mask() -> bytes:
        m = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
        m.paste((0, 0, 0, 0), (32, 32, 96, 96))
        buf = io.BytesIO()
        m.save(buf, "PNG")
        return buf.getvalue()

    edits = [asyncio.create_task(client.images.with_raw_response.edit(
        model="tiny-sd", image=("in.png", png(c), "image/png"), mask=("m.png", mask(), "image/png"), prompt="a star"))
        for c in [(255, 0, 0), (0, 0, 255)]]
    await _wait_queued(app, 2)
    gate.release.set()
    await first
    raws = await asyncio.gather(*edits)
    assert gate.calls[-1] == 2
    for raw, colour in zip(raws, [(255, 0, 0), (0, 0, 255)], strict=True):
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(raw.parse().data[0].b64_json))).convert("RGB"))
        assert out.shape == (128, 128, 3)
        assert (out[0:16, 0:16] == np.array(colour, dtype=np.uint8)).all()  # outside the mask: its own input
