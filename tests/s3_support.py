"""A throwaway S3-compatible server for the tests: a pytest plugin (conftest.py's `pytest_plugins`).

Fixtures:
  s3_server  session: moto in server mode (ThreadedMotoServer, a real HTTP S3 API on a free port
             of 127.0.0.1), started the first time a test asks for it, stopped at the end of the
             session; yields its endpoint URL.
  s3_url     a fresh, empty bucket per test, with the standard AWS_* variables pointing at the
             server (as an operator sets them); yields `s3://<bucket>/imgs`.
  s3_bucket  what s3_url made: (boto3 S3 client, bucket name), to look at the bucket directly.

Where moto's server extra is not installed the tests that ask for it skip with the reason.
"""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    for module in ("moto.server", "flask", "obstore"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"S3 tests skipped: {module} is not installed (pip install -e '.[test]')")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    import boto3

    for name, value in {**ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client("s3", endpoint_url=s3_server, region_name=ENV["AWS_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"imagegate-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture
def s3_url(s3_bucket: tuple[Any, str]) -> str:
    return f"s3://{s3_bucket[1]}/imgs"
