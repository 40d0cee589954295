"""A real `kill -9` of the server in the middle of a batch and of queued requests, then a
restart on the same data directory: every accepted job finishes exactly once (each
custom_id once in the output, one ledger row per job, none billed twice), and the jobs that
were running when the process died ran again. Also: a job interrupted too often is failed
with a clear error, not retried forever."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

import procserver
from conftest import make_settings, running, tiny_config
from imagegate.app import create_app
from imagegate.db.tables import JobRow

LINES = 16
QUEUED = 4


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _jobs(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT id, kind, status, attempts FROM jobs")]


@pytest.mark.slow
def test_kill_9_mid_batch_and_mid_queue_then_exactly_once(tmp_path: Path, tiny_sd_path: Path) -> None:
    models = procserver.tiny_models_file(tmp_path, tiny_sd_path)
    data = tmp_path / "data"
    db = data / "imagegate.db"
    env = {"IMAGEGATE_JOB_WORKERS": "2", "IMAGEGATE_MAX_INFERENCE_STEPS": "200"}
    server = procserver.start(data, models, **env)
    try:
        h = httpx2.Client(base_url=server.base, timeout=60)
        text = "".join(json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/images/generations",
                                   "body": {"prompt": f"shape {i}", "size": "256x256", "num_inference_steps": 40}})
                       + "\n" for i in range(LINES))
        f = h.post("/v1/files", files={"file": ("in.jsonl", text.encode())}, data={"purpose": "batch"}).json()
        batch = h.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/images/generations",
                                            "completion_window": "24h"}).json()
        queued = [h.post("/v1/queue/images/generations", json={
            "prompt": f"queued {i}", "size": "256x256", "num_inference_steps": 40}).json()["id"] for i in range(QUEUED)]
        # Kill once some batch lines are done and two jobs are running.
        _wait(lambda: h.get(f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] >= 2
              and sum(j["status"] == "in_progress" for j in _jobs(db)) == 2, 180, "jobs did not start")
        running_before = {j["id"] for j in _jobs(db) if j["status"] == "in_progress"}
        server.kill9()
        h.close()
    finally:
        server.stop()

    restarted = procserver.start(data, models, **env)
    try:
        h = httpx2.Client(base_url=restarted.base, timeout=60)
        done = _wait(lambda: (b := h.get(f"/v1/batches/{batch['id']}").json())["status"] == "completed" and b,
                     300, "the batch did not complete after the restart")
        for qid in queued:
            st = _wait(lambda qid=qid: (s := h.get(f"/v1/queue/requests/{qid}").json())["status"]
                       not in ("queued", "in_progress") and s, 300, "a queued request did not end")
            assert st["status"] == "completed", st
            assert h.get(f"/v1/queue/requests/{qid}/response").status_code == 200
        assert done["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        out = [json.loads(x) for x in h.get(f"/v1/files/{done['output_file_id']}/content").text.splitlines()]
        assert sorted(x["custom_id"] for x in out) == sorted(f"line-{i}" for i in range(LINES))  # each exactly once
        assert done["error_file_id"] is None
        # One ledger row per job, each billed (images counted) once; those cut off ran again.
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT id, status, images FROM requests WHERE id LIKE 'batch_req_%' "
                             "OR id LIKE 'req_%'").fetchall()
        ids = [r[0] for r in rows if r[0].startswith("batch_req_") or r[0] in queued]
        assert len(ids) == len(set(ids)) == LINES + QUEUED
        assert all(r[1] == "ok" and r[2] == 1 for r in rows if r[0] in ids)
        assert len(running_before) == 2
        assert "2 job(s) were running when the server stopped: 2 re-queued" in restarted.log.read_text()
        h.close()
    finally:
        restarted.stop()


async def test_a_job_interrupted_too_often_fails_clearly(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, job_max_attempts=2)
    app = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(app):
        jobs = app.state.jobs
        now = time.time()
        # As a process that died twice mid-run leaves it: in progress, two attempts started.
        await jobs.queue.add([JobRow(
            id="req_dead", kind="queue", owner="anonymous", principal=None, endpoint="images.generations",
            body={"prompt": "x"}, base_url="http://t/", order_key="0", status="in_progress", attempts=2,
            cancel_requested=False, claimed_by="gone", lease_until=now - 1, request_id="req_dead", created_at=now)])
        await jobs.runner.stop()
        await jobs.runner.start()  # start-up recovery
        row = await jobs.queue.get("anonymous", "req_dead")
        assert row.status == "failed" and row.http_status == 500
        assert row.result["error"]["code"] == "job_interrupted"
        assert "2 time(s)" in row.result["error"]["message"]


@pytest.mark.slow
def test_sigterm_requeues_running_work_and_exits_in_bounded_time(tmp_path: Path, tiny_sd_path: Path) -> None:
    import signal

    models = procserver.tiny_models_file(tmp_path, tiny_sd_path)
    data = tmp_path / "data"
    env = {"IMAGEGATE_JOB_WORKERS": "1", "IMAGEGATE_SHUTDOWN_GRACE_S": "1", "IMAGEGATE_MAX_INFERENCE_STEPS": "200"}
    server = procserver.start(data, models, **env)
    try:
        with httpx2.Client(base_url=server.base, timeout=60) as h:
            qid = h.post("/v1/queue/images/generations", json={
                "prompt": "slow", "size": "512x512", "n": 4, "num_inference_steps": 200}).json()["id"]
            _wait(lambda: h.get(f"/v1/queue/requests/{qid}").json()["status"] == "in_progress", 60, "not started")
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        assert time.monotonic() - t0 < 15
        assert server.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        assert "Traceback" not in server.log.read_text()
        job = next(j for j in _jobs(data / "imagegate.db") if j["id"] == qid)
        assert job["status"] == "queued" and job["attempts"] == 0  # back in the queue, the attempt not counted
    finally:
        server.stop()
