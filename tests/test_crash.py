"""A real `kill -9` under load, then a restart on the same data directory: the database is
intact, every accepted request has a final ledger row (those cut off are `interrupted`),
stored images decode and the links issued before the crash still work."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

import procserver


def _rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT id, status, http_status, endpoint FROM requests")]


@pytest.mark.slow
def test_kill_9_under_load_loses_no_record(tmp_path: Path, tiny_sd_path: Path) -> None:
    models = procserver.tiny_models_file(tmp_path, tiny_sd_path)
    data = tmp_path / "data"
    db = data / "imagegate.db"
    env = {"IMAGEGATE_MAX_INFERENCE_STEPS": "200"}
    server = procserver.start(data, models, **env)
    try:
        # Links issued before the crash.
        done = httpx2.post(server.base + "/v1/images/generations", timeout=120, json={
            "prompt": "a red circle", "size": "256x256", "n": 2, "response_format": "url"})
        assert done.status_code == 200
        urls = [d["url"] for d in done.json()["data"]]

        # In flight at the crash: a stream and three n=10 requests, long enough to be running.
        outcomes: list[str] = []

        def stream() -> None:
            try:
                with httpx2.stream("POST", server.base + "/v1/images/generations", timeout=120, json={
                        "prompt": "a blue square", "size": "256x256", "stream": True, "partial_images": 3,
                        "num_inference_steps": 200}) as r:
                    for _ in r.iter_bytes():
                        pass
                outcomes.append("stream ended")
            except httpx2.HTTPError as exc:
                outcomes.append(type(exc).__name__)

        def batch() -> None:
            try:
                httpx2.post(server.base + "/v1/images/generations", timeout=120, json={
                    "prompt": "a green star", "size": "256x256", "n": 10, "num_inference_steps": 200})
                outcomes.append("answered")
            except httpx2.HTTPError as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=f) for f in (stream, batch, batch, batch)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(r["status"] == "running" for r in _rows(db)) < 4:
            assert time.monotonic() < deadline, _rows(db)
            time.sleep(0.05)
        server.kill9()
        for t in threads:
            t.join(30)
        assert "answered" not in outcomes  # they really were cut off by the crash
    finally:
        server.stop()

    restarted = procserver.start(data, models, **env)
    try:
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = _rows(db)
        assert len(rows) == 5
        assert not [r for r in rows if r["status"] == "running"]
        assert sorted(r["status"] for r in rows) == ["interrupted"] * 4 + ["ok"]
        for url in urls:  # the restarted server listens on another port here: same path and signature
            got = httpx2.get(url.replace(server.base, restarted.base), timeout=30)
            assert got.status_code == 200
            assert Image.open(io.BytesIO(got.content)).size == (256, 256)
        for stored in (data / "images").iterdir():
            if not stored.name.startswith("."):
                Image.open(stored).load()  # every stored file decodes: no half-written image
        again = httpx2.post(restarted.base + "/v1/images/generations", timeout=120,
                            json={"prompt": "a red circle", "size": "256x256"})
        assert again.status_code == 200
    finally:
        restarted.stop()
