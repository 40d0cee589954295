"""Connection timeouts and the connection cap (server.py), on a real uvicorn built by
`build_config` exactly as `imagegate serve` builds it, driven with raw sockets: a silent
client, half a header line, a slow head on a kept-alive connection, a stalled or
trickling body, the unread rest of a refused body, an idle keep-alive connection, and too
many connections. Every case runs on both of uvicorn's HTTP/1.1 implementations.

No assertion is about speed: the timeouts are short and a test waits (far longer) for the
close or the response that must come; without the timeouts none would ever come."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI

from conftest import free_port, make_settings, tiny_config
from imagegate.app import create_app
from imagegate.server import build_config, uvicorn_options
from imagegate.settings import Settings

IMPLS = ["httptools", "h11"]
WAIT = 30.0  # how long a test waits for what must happen; the timeouts below are ~1-4 s
TIMEOUTS = dict(header_timeout_seconds=1.0, body_timeout_seconds=1.5, body_total_timeout_seconds=4.0,
                keep_alive_timeout_seconds=0.5, max_body_bytes=4096)


@contextlib.contextmanager
def serving(settings: Settings, tiny_sd_path: Path, http: str) -> Iterator[tuple[Any, int]]:
    import uvicorn

    app = create_app(settings, [tiny_config(tiny_sd_path)])
    port = free_port()
    server = uvicorn.Server(build_config(settings.model_copy(update={"port": port}), app, http=http,
                                         log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.05)
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module", params=IMPLS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tiny_sd_path: Path) -> Iterator[tuple[Any, int]]:
    settings = make_settings(tmp_path_factory.mktemp(f"timeouts-{request.param}"), **TIMEOUTS)
    with serving(settings, tiny_sd_path, request.param) as running:
        yield running


# -- raw-socket helpers ---------------------------------------------------------------------
class Conn:
    """A raw client connection that keeps what it received beyond one response (two
    pipelined responses may arrive in one read)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection (a timeout fails the test)."""
        out, self.buf = self.buf, b""
        while True:
            try:
                chunk = self._recv()
            except TimeoutError:
                pytest.fail(f"the server kept the connection open for {WAIT} s; got {out[:200]!r}")
            if not chunk:
                return out
            out += chunk

    def trickle_until_closed(self, byte: bytes = b"a", every: float = 0.3) -> bytes:
        """Send one byte every `every` seconds until the server closes the connection;
        returns what it sent meanwhile. One that never closes fails the test after WAIT s."""
        out, self.buf = self.buf, b""
        deadline = time.monotonic() + WAIT
        self.sock.settimeout(every)
        while time.monotonic() < deadline:
            try:
                chunk = self._recv()
                if not chunk:
                    return out
                out += chunk
                continue
            except TimeoutError:
                pass
            try:
                self.sock.sendall(byte)
            except (BrokenPipeError, ConnectionResetError):
                return out
        pytest.fail(f"the server kept a trickling connection open for {WAIT} s; got {out[:200]!r}")

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next HTTP/1.1 response (with a Content-Length body)."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self._recv()
            assert chunk, f"closed before a response: {self.buf!r}"
            self.buf += chunk
        status, headers, rest = parse_head(self.buf)
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self._recv()
            assert chunk, "closed mid-body"
            rest += chunk
        self.buf = rest[length:]
        return status, headers, rest[:length]


def connect(port: int) -> Conn:
    return Conn(port)


def parse_head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head_, _, rest = data.partition(b"\r\n\r\n")
    lines = head_.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def head(method: str, path: str, **headers: str) -> bytes:
    fields = [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_timeout_envelope(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert status == 408, body
    assert headers["content-type"].startswith("application/json")
    assert headers.get("connection") == "close"
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["param"] is None and err["code"] == "request_timeout"
    return err  # type: ignore[no-any-return]


# -- the request head ---------------------------------------------------------------------------
def test_a_silent_connection_is_closed_after_the_header_timeout(server: tuple[Any, int]) -> None:
    with connect(server[1]) as s:
        assert s.until_closed() == b""


def test_half_a_header_line_is_closed_after_the_header_timeout(server: tuple[Any, int]) -> None:
    with connect(server[1]) as s:
        s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        assert s.until_closed() == b""


def test_a_head_trickled_byte_by_byte_is_closed(server: tuple[Any, int]) -> None:
    """Bytes keep arriving, but the head never ends: the deadline is not reset by them."""
    with connect(server[1]) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        assert s.trickle_until_closed() == b""


def test_a_slow_head_on_a_kept_alive_connection_is_closed(server: tuple[Any, int]) -> None:
    """The first request is answered; the second's head starts and stalls (uvicorn cancels its
    keep-alive timer at that first byte and had nothing else)."""
    with connect(server[1]) as s:
        s.sendall(head("GET", "/health"))
        status, _, _ = s.response()
        assert status == 200
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        assert s.trickle_until_closed() == b""


def test_an_idle_kept_alive_connection_is_closed(server: tuple[Any, int]) -> None:
    with connect(server[1]) as s:
        s.sendall(head("GET", "/health"))
        assert s.response()[0] == 200
        assert s.until_closed() == b""


def test_pipelined_requests_are_answered(server: tuple[Any, int]) -> None:
    """Two heads in one write (the second parsed while the first runs): both answered."""
    with connect(server[1]) as s:
        s.sendall(head("GET", "/health") + head("GET", "/v1/models"))
        assert s.response()[0] == 200
        status, _, body = s.response()
        assert status == 200 and json.loads(body)["object"] == "list"


# -- the request body ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["json", "multipart"])
def test_a_stalled_body_gets_408_in_the_envelope_and_a_close(server: tuple[Any, int], kind: str) -> None:
    if kind == "json":
        path, ctype, first = "/v1/images/generations", "application/json", b'{"prompt": "a red '
    else:
        path, ctype = "/v1/images/edits", "multipart/form-data; boundary=XyZ"
        first = b'--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na red circle\r\n--XyZ\r\nContent-Disp'
    with connect(server[1]) as s:
        s.sendall(head("POST", path, Content_Type=ctype, Content_Length="2000") + first)
        status, headers, body = s.response()
        err = assert_timeout_envelope(status, headers, body)
        assert "no data for 1.5 seconds" in err["message"]
        assert headers["x-request-id"].startswith("req_")
        assert s.until_closed() == b""


def test_a_body_trickled_forever_is_cut_by_the_total(server: tuple[Any, int]) -> None:
    """A byte every 0.3 s never trips the 1.5 s gap; the 4 s total ends it."""
    with connect(server[1]) as s:
        s.sendall(head("POST", "/v1/images/generations", Content_Type="application/json", Content_Length="4000")
                  + b'{"prompt": "')
        reply = s.trickle_until_closed()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    status, headers, body = parse_head(reply)
    err = assert_timeout_envelope(status, headers, body)
    assert "not complete within 4 seconds" in err["message"]


def test_a_slow_but_steady_body_is_read(server: tuple[Any, int]) -> None:
    """Chunks every 0.25 s for longer than the 1.5 s gap: the timeout is between chunks, not
    on the whole body, so the request goes through (here to a 400 about its parameter)."""
    body = json.dumps({"prompt": "a red circle", "size": "7x7", "padding": "." * 200}).encode()
    with connect(server[1]) as s:
        s.sendall(head("POST", "/v1/images/generations", Content_Type="application/json",
                       Content_Length=str(len(body))))
        parts = [body[i:i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
        for part in parts:
            time.sleep(0.25)
            s.sendall(part)
        status, _, reply = s.response()
    assert status == 400, reply
    assert json.loads(reply)["error"]["code"] != "request_timeout"


def test_the_unread_rest_of_a_refused_body_is_not_drained_forever(server: tuple[Any, int]) -> None:
    """413 from Content-Length alone, then the client trickles the body it announced: the
    response is delivered, and the connection closed a drain period later."""
    with connect(server[1]) as s:
        s.sendall(head("POST", "/v1/images/generations", Content_Type="application/json", Content_Length="100000"))
        status, _, body = s.response()
        assert status == 413, body
        assert s.trickle_until_closed() == b""


async def test_a_long_generation_outlives_the_body_timeouts(server: tuple[Any, int]) -> None:
    """The disconnect watcher waits on receive() after the body was read; that wait is not a
    body read: a request running longer than the body's gap and total still succeeds, and the
    SSE stream is delivered as before."""
    app, port = server
    backend = app.state.scheduler.worker("tiny-sd").backend
    real = backend.run_batch

    def slow(jobs: list[Any], runtimes: list[Any]) -> Any:
        time.sleep(TIMEOUTS["body_total_timeout_seconds"] + 1)  # past the gap and the total
        return real(jobs, runtimes)

    backend.run_batch = slow
    try:
        sdk = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        r = await sdk.images.generate(prompt="a red circle", size="256x256", quality="low")
        assert r.data and r.data[0].b64_json
        await sdk.close()
    finally:
        backend.run_batch = real
    sdk = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
    stream = await sdk.images.generate(prompt="a red circle", size="256x256", quality="low", stream=True,
                                       partial_images=1)
    kinds = [event.type async for event in stream]
    await sdk.close()
    assert kinds[-1] == "image_generation.completed"


# -- the connection cap -------------------------------------------------------------------------
@pytest.mark.parametrize("http", IMPLS)
def test_connections_over_the_cap_get_503_in_the_envelope(tmp_path: Path, tiny_sd_path: Path, http: str) -> None:
    settings = make_settings(tmp_path, max_connections=3, header_timeout_seconds=60.0)
    with serving(settings, tiny_sd_path, http) as (_, port):
        holders = [connect(port) for _ in range(3)]  # silent connections, held open
        deadline = time.monotonic() + WAIT
        while True:  # until the server has accepted the three (it does so in its own time)
            with connect(port) as s:
                s.sendall(head("GET", "/health"))
                status, headers, body = s.response()
            if status == 503:
                break
            assert status == 200 and time.monotonic() < deadline, body
            time.sleep(0.05)
        err = json.loads(body)["error"]
        assert (err["type"], err["code"]) == ("server_error", "overloaded")
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        for h in holders:
            h.close()
        deadline = time.monotonic() + WAIT
        while True:  # the freed slots serve again
            with connect(port) as s:
                s.sendall(head("GET", "/health"))
                status, _, _ = s.response()
            if status == 200:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_settings_reach_uvicorn() -> None:
    opts = uvicorn_options(Settings(keep_alive_timeout_seconds=7.5, max_connections=99, header_timeout_seconds=3.0,
                                    body_timeout_seconds=11.0, host="0.0.0.0", port=1234, log_level="debug"))
    assert (opts["host"], opts["port"], opts["log_level"]) == ("0.0.0.0", 1234, "debug")
    assert (opts["timeout_keep_alive"], opts["limit_concurrency"], opts["ws"]) == (7.5, 99, "none")
    assert (opts["http"].header_timeout, opts["http"].drain_timeout) == (3.0, 11.0)
