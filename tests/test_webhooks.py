"""Webhooks: a real HTTP receiver on 127.0.0.1 that fails the first delivery with a 500;
the retry arrives with the same webhook-id, both signatures verify with the secret, and the
deliveries are logged in the database. Targets that would reach private, loopback or
link-local addresses are refused, through the API and by the check itself."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.errors import InvalidRequest
from imagegate.jobs import verify
from imagegate.jobs.webhooks import check_url

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_first = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                code = 500 if outer.fail_first and not outer.got else 200
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    t = threading.Thread(target=r.server.serve_forever, daemon=True)
    t.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
async def wapp(tmp_path: Path, tiny_sd_path: Path) -> Any:
    settings = make_settings(tmp_path, webhook_secret=SECRET, webhook_allow_hosts=["127.0.0.1"],
                             webhook_retry_schedule_s=[0.3, 0.3], janitor_interval_seconds=3600)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        yield application


async def _until(cond: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_queue_webhook_signed_and_retried_after_a_500(wapp: Any, receiver: Receiver) -> None:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=wapp), base_url="http://testserver") as h:
        r = await h.post("/v1/queue/images/generations", params={"webhook_url": receiver.url},
                         json={"prompt": "a cat", "size": "256x256"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        await _until(lambda: len(receiver.got) >= 2)
    (h1, b1, c1), (h2, b2, c2) = receiver.got[:2]
    assert (c1, c2) == (500, 200)
    assert h1["webhook-id"] == h2["webhook-id"]  # the idempotency key stays the same across retries
    for headers, body in ((h1, b1), (h2, b2)):
        event = verify(SECRET, headers, body)
        assert event["type"] == "image.request.completed" and event["data"]["id"] == job_id
        assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, h1, b1.replace(b"completed", b"failed"))
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + base64.b64encode(b"x" * 32).decode(), h1, b1)
    await _until(lambda: _deliveries(wapp)[0][0] == "delivered")
    _status, attempts, log = _deliveries(wapp)[0]
    assert attempts == 2 and [a["status_code"] for a in json.loads(log)] == [500, 200]


def _deliveries(app: Any) -> list[tuple[str, int, str]]:
    with sqlite3.connect(app.state.settings.data_dir / "imagegate.db") as c:
        return c.execute("SELECT status, attempts, attempts_log FROM webhook_deliveries").fetchall()


async def test_batch_webhook(wapp: Any, receiver: Receiver) -> None:
    receiver.fail_first = False
    client = sdk_client(wapp)
    text = json.dumps({"custom_id": "one", "method": "POST", "url": "/v1/images/generations",
                       "body": {"prompt": "x", "size": "256x256"}}) + "\n"
    f = await client.files.create(file=("b.jsonl", text.encode()), purpose="batch")
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h",
                                    metadata={"webhook_url": receiver.url})
    await _until(lambda: len(receiver.got) >= 1)
    event = verify(SECRET, receiver.got[0][0], receiver.got[0][1])
    assert event["type"] == "batch.completed" and event["data"]["id"] == b.id
    assert (await client.batches.retrieve(b.id)).status == "completed"


def test_plain_secrets_sign_too() -> None:
    from imagegate.jobs.webhooks import sign

    for secret in (SECRET, "not base64 at all!", base64.b64encode(b"k" * 24).decode()):
        headers = sign(secret, "msg_1", int(time.time()), '{"a":1}')
        assert verify(secret, headers, b'{"a":1}') == {"a": 1}


@pytest.mark.parametrize("url", [
    "http://localhost/hook", "http://127.0.0.2/hook", "http://10.1.2.3/hook", "http://192.168.0.1/",
    "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://[fe80::1]/hook", "http://0.0.0.0/", "http://100.64.0.1/",
    "ftp://8.8.8.8/hook", "http://user:pw@8.8.8.8/hook", "file:///etc/passwd", "http:///nohost",
])
def test_refused_targets(url: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_url(url, [], "webhook_url")
    assert err.value.param == "webhook_url" and err.value.code == "invalid_webhook_url"


def test_allow_list() -> None:
    check_url("http://8.8.8.8/hook", [], "webhook_url")  # public: allowed while no list is set
    check_url("http://127.0.0.1:9/hook", ["127.0.0.1"], "webhook_url")  # listed: allowed though loopback
    check_url("http://localhost:9/hook", ["LOCALHOST:9"], "webhook_url")  # entries may carry a port
    check_url("http://[::1]:9/hook", ["::1"], "webhook_url")
    with pytest.raises(InvalidRequest):
        check_url("http://8.8.8.8/hook", ["127.0.0.1"], "webhook_url")  # a list admits only its hosts
    with pytest.raises(InvalidRequest):
        check_url("http://10.0.0.1/hook", ["127.0.0.1"], "webhook_url")


async def test_refused_through_the_api(wapp: Any) -> None:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=wapp), base_url="http://testserver") as h:
        r = await h.post("/v1/queue/images/generations", params={"webhook_url": "http://169.254.169.254/x"},
                         json={"prompt": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "webhook_url"
    client = sdk_client(wapp)
    f = await client.files.create(file=("b.jsonl", b'{"custom_id":"a","method":"POST","url":"/v1/images/generations",'
                                                   b'"body":{"prompt":"x"}}\n'), purpose="batch")
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        await client.batches.create(input_file_id=f.id, endpoint="/v1/images/generations", completion_window="24h",
                                    metadata={"webhook_url": "http://10.0.0.5/hook"})
    assert err.value.body["param"] == "metadata.webhook_url"  # type: ignore[index]


def test_cli_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imagegate.cli import app as cli
    from imagegate.jobs.webhooks import sign

    body = '{"id":"evt_1","type":"batch.completed","data":{"id":"batch_1"}}'
    headers = sign(SECRET, "msg_1", int(time.time()), body)
    (tmp_path / "body.json").write_text(body)
    args = ["webhooks", "verify", str(tmp_path / "body.json"), "--secret", SECRET,
            *[x for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
              for x in ("-H", f"{k}: {headers[k]}")]]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == {"valid": True, "type": "batch.completed", "id": "evt_1"}
    (tmp_path / "body.json").write_text(body.replace("completed", "failed"))
    bad = CliRunner().invoke(cli, args)
    assert bad.exit_code == 1
