"""`imagegate serve --engine ray` end to end, on this machine's CPUs: a Ray head started here
(`ray start --head`, joined through RAY_ADDRESS as a cluster would be), the built-in model in
two replicas, the ledger on PostgreSQL, images in an S3 bucket (moto's server), and the openai
SDK as the client.

One Ray application serves the whole module (Ray and two model replicas take ~1 minute to
start on 2 cores); the tests run in order and the last ones kill replicas. Marked slow: it
runs in CI, and is kept to this one module."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from pg_support import _admin
from PIL import Image

from conftest import free_port

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'imagegate[ray]')")
from ray import serve  # noqa: E402

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
MODEL = "imagegate-mini"
DEPLOYMENT = "model-imagegate-mini"


@pytest.fixture(scope="module")
def pg_database(pg_server: str) -> Iterator[str]:
    """One database for the module (the pg_url fixture is per test)."""
    from sqlalchemy.engine import make_url

    name = f"ray_{os.urandom(5).hex()}"

    async def create(conn: Any) -> None:
        await conn.execute(f"CREATE DATABASE {name}")

    async def drop(conn: Any) -> None:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    _admin(pg_server, create)
    base = make_url(pg_server)
    host = base.query.get("host")
    url = base.set(database=name, query={}).render_as_string(hide_password=False)
    try:
        yield f"{url}?host={host}" if host else url
    finally:
        _admin(pg_server, drop)


@pytest.fixture(scope="module")
def ray_auth() -> Iterator[dict[str, str]]:
    """Ray's token authentication (on by default for new clusters since Ray 2.5x), with a
    token of our own in the environment of the head, the server and this process."""
    import secrets

    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # Ray reads them once per process and caches them: its own tests reset that cache so.
    from ray._private.authentication_test_utils import reset_auth_token_state

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_auth_token_state()
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_auth_token_state()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory, ray_auth: dict[str, str]) -> Iterator[str]:
    """A Ray head node of our own (ray_support.py), stopped at the end; yields its address."""
    from ray_support import ray_head as start_head

    with start_head(tmp_path_factory.mktemp("ray")) as address:
        yield address


@pytest.fixture(scope="module")
def bucket(s3_server: str) -> tuple[Any, str, dict[str, str]]:
    """A bucket for the module: (boto3 client, name, the AWS_* variables that reach it)."""
    import boto3
    from s3_support import ENV

    client = boto3.client("s3", endpoint_url=s3_server, region_name=ENV["AWS_REGION"],
                          aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])
    name = f"ray-{os.urandom(5).hex()}"
    client.create_bucket(Bucket=name)
    return client, name, {**ENV, "AWS_ENDPOINT_URL": s3_server}


@pytest.fixture(scope="module")
def server(ray_head: str, pg_database: str, bucket: tuple[Any, str, dict[str, str]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`imagegate serve --engine ray` joined to the head, the built-in model in 2 replicas."""
    work = tmp_path_factory.mktemp("imagegate-ray")
    models = work / "models.toml"
    models.write_text(f'[[models]]\nname = "{MODEL}"\nsource = "builtin"\nreplicas = 2\n')
    port = free_port()
    env = {**os.environ, **bucket[2], "RAY_ADDRESS": ray_head, "IMAGEGATE_DATABASE_URL": pg_database,
           "IMAGEGATE_STORAGE_URL": f"s3://{bucket[1]}/images",
           "IMAGEGATE_DATA_DIR": str(work / "data"), "IMAGEGATE_MODELS_FILE": str(models),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = work / "serve.log"
    proc = subprocess.Popen([str(BIN / "imagegate"), "serve", "--engine", "ray", "--port", str(port)],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, "serve exited:\n" + log.read_text()[-4000:]
            try:
                if httpx2.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, "not healthy:\n" + log.read_text()[-4000:]
            time.sleep(1)
        ray.init(address=ray_head, logging_level="ERROR")  # this test process joins, to kill replicas
        yield base
    finally:
        ray.shutdown()
        # SIGTERM: serve stops Serve, which it started on the head. After the replicas killed
        # above, Serve's controller took 30 s to give up on them (its own timeout); the head and
        # every Ray process go with the ray_head fixture anyway, so wait 10 s at most.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(base: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=120, **kw)


def generate(c: openai.OpenAI, **kw: Any) -> tuple[Any, httpx2.Headers]:
    params = {"model": MODEL, "prompt": "a red circle on a blue background", "size": "256x256", "quality": "low",
              **kw}
    raw = c.images.with_raw_response.generate(**params)
    return raw.parse(), raw.headers


def replica_stats() -> dict[str, dict[str, Any]]:
    """Each model replica's counters, by replica id (calls land on replicas at random: ask
    until both answered)."""
    handle = serve.get_deployment_handle(DEPLOYMENT, app_name="imagegate")
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(40):
        s = handle.stats.remote().result(timeout_s=60)
        seen[s["replica"]] = s
        if len(seen) == 2:
            break
    return seen


def test_concurrent_sdk_requests_spread_over_both_replicas(server: str) -> None:
    c = client(server)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: generate(c), range(16)))
    replicas = {h["x-imagegate-replica"] for _, h in results}
    assert len(replicas) == 2, replicas
    for img, headers in results:
        assert Image.open(io.BytesIO(base64.b64decode(img.data[0].b64_json))).size == (256, 256)
        assert headers["x-request-id"] and headers["x-imagegate-request-id"].startswith("req_")
        assert "," not in headers["x-request-id"]  # one id, not ours and the proxy's joined
    assert set(replica_stats()) == replicas


def test_streaming_through_ray_with_the_sdk(server: str) -> None:
    events = list(client(server).images.generate(model=MODEL, prompt="a green star", size="256x256",
                                                 quality="medium", stream=True, partial_images=2))
    kinds = [e.type for e in events]
    assert kinds[-1] == "image_generation.completed" and "image_generation.partial_image" in kinds, kinds
    assert Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json))).size == (256, 256)


def test_errors_cross_the_hop_in_openais_shape(server: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(server).images.generate(model=MODEL, prompt="a red circle", size="7x7")
    assert err.value.body["param"] == "size"  # type: ignore[index]


def test_the_request_queue_runs_through_the_replicas(server: str) -> None:
    """Job workers run in the ingress replica and reach the models over the same hop."""
    body = {"model": MODEL, "prompt": "a yellow heart", "size": "256x256", "quality": "low"}
    submitted = httpx2.post(server + "/v1/queue/images/generations", json=body, timeout=60)
    assert submitted.status_code == 202, submitted.text
    status_url = submitted.json()["status_url"]
    deadline = time.monotonic() + 120
    while (status := httpx2.get(status_url, timeout=30).json()["status"]) in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "the queued request did not finish"
        time.sleep(0.5)
    assert status == "completed"
    result = httpx2.get(submitted.json()["response_url"], timeout=30).json()
    assert Image.open(io.BytesIO(base64.b64decode(result["data"][0]["b64_json"]))).size == (256, 256)


def test_client_disconnect_cancels_the_job_on_the_replica(server: str) -> None:
    before = sum(s["cancelled_runs"] for s in replica_stats().values())
    body = {"model": MODEL, "prompt": "a blue square", "size": "1024x1024", "quality": "high", "stream": True,
            "partial_images": 3}
    with httpx2.stream("POST", server + "/v1/images/generations", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event: image_generation.partial_image"):
                break  # leave after the first preview: the connection closes here
    deadline = time.monotonic() + 60
    while sum(s["cancelled_runs"] for s in replica_stats().values()) <= before:
        assert time.monotonic() < deadline, "the replica's run was not cancelled"
        time.sleep(0.5)


def test_a_link_outlives_the_ingress_replica_that_made_it(server: str, bucket: tuple[Any, str, Any]) -> None:
    img, _ = generate(client(server), response_format="url")
    url = img.data[0].url
    assert httpx2.get(url, timeout=30).status_code == 200
    s3, name, _ = bucket
    assert s3.list_objects_v2(Bucket=name, Prefix="images/")["KeyCount"] >= 1  # the image is in the bucket
    ingress = [a for a in ray.util.list_named_actors(all_namespaces=True)
               if "SERVE_REPLICA" in a["name"] and "#imagegate#" in a["name"]]
    assert len(ingress) == 1, ingress
    ray.kill(ray.get_actor(ingress[0]["name"], namespace=ingress[0]["namespace"]), no_restart=True)
    deadline = time.monotonic() + 180
    while True:  # Serve starts a new ingress replica; the link still works through it
        try:
            r = httpx2.get(url, timeout=30)
            if r.status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        assert time.monotonic() < deadline, "the link did not come back"
        time.sleep(1)
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)


def test_a_model_replica_killed_mid_load(server: str) -> None:
    """Every request succeeds (the SDK retries a 503) or ends in a retryable 503; none hangs;
    the deployment comes back to two replicas."""
    c = client(server, max_retries=2)
    victims = [a for a in ray.util.list_named_actors(all_namespaces=True)
               if "SERVE_REPLICA" in a["name"] and DEPLOYMENT in a["name"]]
    assert len(victims) == 2, victims

    def one(_: int) -> str:
        try:
            generate(c, quality="medium")
            return "ok"
        except openai.InternalServerError as exc:
            return str(exc.status_code)  # only 503 is allowed below

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        time.sleep(2)  # requests are queued and running on both replicas
        ray.kill(ray.get_actor(victims[0]["name"], namespace=victims[0]["namespace"]), no_restart=True)
        outcomes = [f.result(timeout=300) for f in futures]  # none hangs
    assert set(outcomes) <= {"ok", "503"} and "ok" in outcomes, outcomes
    deadline = time.monotonic() + 240
    while len(replica_stats()) < 2:
        assert time.monotonic() < deadline, "the deployment did not get its second replica back"
        time.sleep(2)
    generate(c)
