"""The engine seam: a backend that is not diffusers plugs into the engine and the flow by
implementing engine.base.Backend and nothing else; jobs pickle as plain data (their
runtime hooks stay in this process, beside them); the flow
yields Accepted, partial images, then Completed; a consumer that stops early cancels the
job and leaves a `cancelled` row.

The backend here is a fake at the GPU edge (solid images, previews on request), standing
in for an upstream provider or another process."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import pickle
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from imagegate.core.events import Accepted, Completed, PartialImage
from imagegate.core.request import ImageRequest, RequestContext, Upload
from imagegate.core.service import ImageService
from imagegate.db import Ledger
from imagegate.engine.base import Capabilities, Job, JobRuntime, RunCancelled
from imagegate.engine.local import LocalEngine, ModelWorker
from imagegate.errors import InvalidRequest
from imagegate.normalize import ImageSpec, build_spec
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

    def plan(self, spec: ImageSpec, mode: str, images: Sequence[Image.Image], mask: Image.Image | None) -> Job:
        """Generates at a quarter of the output size, with the first input as its init image."""
        spec = dataclasses.replace(spec, gen_width=spec.width // 4, gen_height=spec.height // 4)
        init = images[0].convert("RGB").resize((spec.gen_width, spec.gen_height)) if images else None
        return Job(spec=spec, mode=mode, init_image=init)

    def batch_key(self, job: Job) -> tuple[object, ...]:
        return (job.mode, job.spec.gen_width, job.spec.gen_height)

    def run_batch(self, jobs: list[Job], runtimes: list[JobRuntime]) -> list[list[Image.Image]]:
        self.calls += 1
        out = []
        for job, runtime in zip(jobs, runtimes, strict=True):
            size = (job.spec.gen_width, job.spec.gen_height)
            for k in range(job.spec.partial_images):
                if runtime.on_preview is not None:
                    runtime.on_preview(0, k, Image.new("RGB", size, (k * 40, 0, 0)))
            if self.hold is not None:
                self.hold.wait(10)
            if runtime.cancel.is_set():
                raise RunCancelled()
            runtime.seed_used = 7
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


def test_a_job_round_trips_through_pickle_as_plain_data() -> None:
    """Every input a backend needs, images included, survives the trip to another process
    and compares equal; the hooks are not the Job's (a runtime holds a lock: never sent)."""
    spec = build_spec(task="edit", model=CONFIG, requested_model=None, prompt="x", n=2, size="256x256", quality=None,
                      background=None, output_format="png", output_compression=None, response_format=None,
                      stream=False, partial_images=None)
    noise = Image.effect_noise((64, 48), 40)  # 'L', distinct pixels
    mask = noise.point(lambda v: 255 if v > 128 else 0)
    jobs = [
        Job(spec=spec, mode="inpaint", init_image=Image.merge("RGB", [noise] * 3), edit_mask=mask),
        Job(spec=spec, mode="edit", references=(Image.new("RGB", (32, 64), (1, 2, 3)), noise.convert("RGB"))),
    ]
    assert {f.name for f in dataclasses.fields(Job)} == {"spec", "mode", "references", "init_image", "edit_mask"}
    for job in jobs:
        back = pickle.loads(pickle.dumps(job))
        assert back == job and back is not job
    assert jobs[0] != dataclasses.replace(jobs[0], edit_mask=noise)  # pixels are compared, not identities
    with pytest.raises(TypeError):
        pickle.dumps(JobRuntime(on_preview=lambda i, k, im: None))


def test_the_backend_plans_its_generation_size() -> None:
    """The spec leaves normalisation at the output size; the backend's plan picks the size
    its model generates at and lays out the inputs for it."""
    spec = build_spec(task="edit", model=CONFIG, requested_model=None, prompt="x", n=1, size="256x256", quality=None,
                      background=None, output_format="png", output_compression=None, response_format=None,
                      stream=False, partial_images=None)
    assert (spec.gen_width, spec.gen_height) == (256, 256)
    job = SolidBackend().plan(spec, "img2img", [Image.new("RGBA", (100, 100))], None)
    assert (job.spec.gen_width, job.spec.gen_height) == (64, 64) and job.init_image is not None
    assert job.init_image.size == (64, 64) and job.spec.width == 256


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
