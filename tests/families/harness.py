"""The live harness the family tests (tests/test_family_*.py) share.

`serve` runs a real uvicorn over the models of one models file; `Live` holds the app, the
official openai SDK pointed at it, a reader of the SQLite ledger (the server's engine lives
on its own event loop, so rows are read straight from the file) and an observer around a
backend's batch call that records which pipeline ran, at which size, on which references
and with which guidance (the real call runs). The helpers build request images and send
requests with a fixed seed."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
from PIL import Image

from conftest import live_server, make_settings
from imagegate.app import create_app
from imagegate.backends.diffusers.planning import generation_bucket
from imagegate.registry import load_models_file


@dataclass
class Call:
    """One batch call of a model, as `Live.observe` saw it."""

    mode: str
    pipeline: str
    sizes: list[tuple[int, int]]  # the pipeline's own output, before resizing to the request
    references: list[tuple[int, int]]
    guidance: float | None  # the pipeline's guidance_scale; None where it keeps none (PixArt-Σ)


class Live:
    def __init__(self, app: Any, base: str, db: Path) -> None:
        self.app, self.base, self.db = app, base, db
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        self.calls: dict[str, list[Call]] = {}

    def backend(self, model: str) -> Any:
        return self.app.state.scheduler.worker(model).backend

    def observe(self, model: str) -> list[Call]:
        """Record each batch call of `model`: the pipeline class that ran, its raw output
        sizes, the references it was given and its guidance. Observer only: the real call runs."""
        if model in self.calls:
            return self.calls[model]
        backend = self.backend(model)
        real = backend.run_batch
        calls: list[Call] = []

        def run_batch(jobs: list[Any], *runtimes: Any) -> list[list[Image.Image]]:
            out = real(jobs, *runtimes)
            pipe = backend.pipes[jobs[0].mode]
            guidance = getattr(pipe, "guidance_scale", None)
            calls.append(Call(jobs[0].mode, type(pipe).__name__, [im.size for ims in out for im in ims],
                              [r.size for r in jobs[0].references], None if guidance is None else float(guidance)))
            return out

        backend.run_batch = run_batch
        self.calls[model] = calls
        return calls

    def row(self, raw: Any) -> dict[str, Any]:
        """The ledger row of a raw SDK response, with `params` and `notes` decoded."""
        with sqlite3.connect(self.db) as c:
            c.row_factory = sqlite3.Row
            row = c.execute("SELECT * FROM requests WHERE id = ?", (raw.headers["x-request-id"],)).fetchone()
        assert row is not None, "no ledger row"
        return {**dict(row), "params": json.loads(row["params"]), "notes": json.loads(row["notes"])}


@contextmanager
def serve(models_file: Path, workdir: Path) -> Iterator[Live]:
    """A live server for the models of `models_file`, its data (and ledger) under `workdir`."""
    configs = load_models_file(models_file)
    # Byte-for-byte seed checks: each C2PA manifest is unique by design (test_safety covers
    # signing), so the families' servers sign nothing.
    settings = make_settings(workdir, c2pa="off")
    app = create_app(settings, configs)
    with live_server(app) as base:
        live = Live(app, base, settings.data_dir / "imagegate.db")
        try:
            yield live
        finally:
            live.sdk.close()


# -- images ---------------------------------------------------------------------------------
def decode(b64: str | None) -> Image.Image:
    assert b64, "expected b64_json"
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png(img: Image.Image, name: str = "image.png") -> tuple[str, bytes, str]:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return (name, buf.getvalue(), "image/png")


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)  # alpha 0 = edit
    return mask


# -- requests -------------------------------------------------------------------------------
def gen(live: Live, model: str, **kw: Any) -> tuple[Any, Any]:
    extra = {"seed": 7, **kw.pop("extra_body", {})}
    raw = live.sdk.images.with_raw_response.generate(model=model, prompt=kw.pop("prompt", "a red circle"),
                                                      extra_body=extra, **kw)
    return raw, raw.parse()


def edit(live: Live, model: str, **kw: Any) -> tuple[Any, Any]:
    extra = {"seed": 7, **kw.pop("extra_body", {})}
    raw = live.sdk.images.with_raw_response.edit(model=model, prompt=kw.pop("prompt", "make it blue"),
                                                  extra_body=extra, **kw)
    return raw, raw.parse()


def bucket(live: Live, model: str, width: int, height: int) -> tuple[int, int]:
    """The size `model` generates at for a `width` x `height` request."""
    return generation_bucket(live.backend(model).config, width, height)
