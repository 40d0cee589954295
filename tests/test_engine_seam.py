"""The engine seam: a backend that is not diffusers plugs into the engine and the flow by
implementing engine.base.Backend and nothing else; jobs pickle as plain data; the flow
yields Accepted, partial images, then Completed; a consumer that stops early cancels the
job and leaves a `cancelled` row.

The backend here is a fake at the GPU edge (solid images, previews on request), standing
in for an upstream provider or another process."""

from __future__ import annotations

import asyncio
import io
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.events import Accepted, Completed, PartialImage
from imagegate.core.request import ImageRequest, RequestContext, Upload
from imagegate.core.service import ImageService
from imagegate.db import Ledger
from imagegate.engine.base import Capabilities, Job, RunCancelled
from imagegate.engine.local import LocalEngine, ModelWorker
from imagegate.errors import InvalidRequest
from imagegate.normalize import build_spec
from imagegate.registry import ModelConfig, Registry
from imagegate.settings import Settings
from imagegate.storage import LocalStore, SignedLinks

CONFIG = ModelConfig(name="solid", source="-", backend="solid", native_size=64, size_multiple=16,
                     quality={"low": (2, 1.0), "medium": (3, 1.0), "high": (4, 1.0)})


class SolidBackend:
    """Fake at the GPU edge: every image is one colour; previews at each step when asked."""

    name = "solid"
    device = "cpu"
    config = CONFIG

    def __init__(self, hold: threading.Event | None = None) -> None:
        self._loaded = False
        self.hold = hold
        self.calls = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(modes=frozenset({"txt2img", "img2img"}))

    @property
    def loaded(self) -> bool:
        return self._loaded

    def validate(self) -> None: ...

    def prepare(self) -> None: ...

    def load(self) -> None:
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False

    def estimated_bytes(self) -> int:
        return 0

    def memory_bytes(self) -> int:
        return 0

    def segment(self, image: Image.Image, text: str) -> Image.Image | None:
        return None

    def batch_key(self, job: Job) -> tuple[object, ...]:
        return (job.mode, job.spec.gen_width, job.spec.gen_height)

    def run_batch(self, jobs: list[Job]) -> list[list[Image.Image]]:
        self.calls += 1
        out = []
        for job in jobs:
            size = (job.spec.gen_width, job.spec.gen_height)
            for k in range(job.spec.partial_images):
                if job.on_preview is not None:
                    job.on_preview(0, k, Image.new("RGB", size, (k * 40, 0, 0)))
            if self.hold is not None:
                self.hold.wait(10)
            if job.cancel.is_set():
                raise RunCancelled()
            job.seed_used = 7
            out.append([Image.new("RGB", size, (0, 200, 0)) for _ in range(job.spec.n)])
        return out


async def _service(tmp_path: Path, backend: SolidBackend) -> tuple[ImageService, Ledger, LocalEngine]:
    settings = Settings(data_dir=tmp_path, encode_workers=1)
    ledger = Ledger(settings.resolved_database_url)
    await ledger.start()
    engine = LocalEngine({"solid": ModelWorker(backend, queue_size=4)})
    await engine.load_all()
    links = SignedLinks(LocalStore(tmp_path / "images"), b"k" * 32, 3600)
    service = ImageService(settings, Registry([CONFIG]), engine, links, ledger, ThreadPoolExecutor(1))
    return service, ledger, engine


def test_a_job_pickles_as_plain_data_without_its_hooks() -> None:
    spec = build_spec(task="edit", model=CONFIG, requested_model=None, prompt="x", n=2, size="256x256", quality=None,
                      background=None, output_format="png", output_compression=None, response_format=None,
                      stream=False, partial_images=None)
    job = Job(spec=spec, mode="img2img", init_image=Image.new("RGB", (64, 64), (1, 2, 3)))
    job.on_preview = lambda i, k, im: None
    job.cancel.set()
    back = pickle.loads(pickle.dumps(job))
    assert back.spec == spec and back.mode == "img2img" and back.init_image.getpixel((0, 0)) == (1, 2, 3)
    assert back.on_preview is None and not back.cancel.is_set()


async def test_another_backend_kind_serves_the_whole_flow(tmp_path: Path) -> None:
    service, ledger, engine = await _service(tmp_path, SolidBackend())
    req = ImageRequest(task="generate", prompt="a green field", size="256x256", n=2, stream=True, partial_images=2)
    ctx = RequestContext(request_id="req_seam", endpoint="images.generations", base_url="http://x/")
    events = [ev async for ev in service.run(req, ctx)]
    assert isinstance(events[0], Accepted)
    assert [type(e) for e in events[1:]] == [PartialImage, PartialImage, Completed]
    done = events[-1]
    assert isinstance(done, Completed) and len(done.images) == 2 and done.seed == 7
    assert Image.open(io.BytesIO(done.images[0])).convert("RGB").getpixel((5, 5)) == (0, 200, 0)
    row = await ledger.get("req_seam")
    assert row is not None and row.status == "ok" and row.output_tokens
    engine.shutdown()
    await ledger.close()


async def test_a_mode_the_backend_lacks_is_a_400_before_acceptance(tmp_path: Path) -> None:
    service, ledger, engine = await _service(tmp_path, SolidBackend())
    png = io.BytesIO()
    Image.new("RGBA", (64, 64)).save(png, "PNG")
    req = ImageRequest(task="edit", prompt="x", images=(Upload("image", png.getvalue()),),
                       mask=Upload("mask", png.getvalue()))
    ctx = RequestContext(request_id="req_mask", endpoint="images.edits", base_url="")
    async def drain() -> None:
        async for _ in service.run(req, ctx):
            raise AssertionError("nothing is yielded for a refused request")

    with pytest.raises(InvalidRequest) as refused:
        await drain()
    assert refused.value.status == 400 and refused.value.param == "mask"
    row = await ledger.get("req_mask")
    assert row is not None and row.status == "error" and row.http_status == 400
    engine.shutdown()
    await ledger.close()


async def test_a_consumer_that_stops_early_cancels_the_job(tmp_path: Path) -> None:
    hold = threading.Event()
    backend = SolidBackend(hold)
    service, ledger, engine = await _service(tmp_path, backend)
    req = ImageRequest(task="generate", prompt="x", size="256x256", stream=True, partial_images=1)
    ctx = RequestContext(request_id="req_gone", endpoint="images.generations", base_url="")
    events = service.run(req, ctx)
    assert isinstance(await anext(events), Accepted)
    assert isinstance(await anext(events), PartialImage)
    await events.aclose()  # the client went away mid-stream
    hold.set()
    worker = engine.worker("solid")
    for _ in range(200):
        if worker.waiting == 0:
            break
        await asyncio.sleep(0.01)
    row = await ledger.get("req_gone")
    assert row is not None and (row.status, row.http_status) == ("cancelled", 499)
    assert worker.waiting == 0
    engine.shutdown()
    await ledger.close()
