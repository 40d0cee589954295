"""Robustness under hostile input, through the public HTTP surface (issue #19).

Properties, for whatever a client sends:
- a bad request gets a 4xx in OpenAI's envelope {"error": {message, type, param, code}},
  with `param` naming the parameter at fault where one is, and a readable message (no
  Python object reprs, no `'None'` standing in for a parameter name, no echo of a huge
  input);
- never a 5xx, and nothing logged as an unhandled error; the server is healthy afterwards
  (`GET /health` is 200 and a small generation succeeds);
- a bad request batched with good ones does not affect them.

How it is wired, and why:
- One app per module (built like conftest's `app` fixture), served by a real uvicorn on
  127.0.0.1 in a child process (why: see SERVER below), driven by a plain synchronous
  httpx2 client: Hypothesis runs each example inside a
  sync test, so there is no event loop or async fixture to share with it, and malformed
  bodies (raw JSON escapes, hand-built multipart) go over a real socket exactly as sent.
  The concurrency properties open their own AsyncClient inside `asyncio.run`.
- The app's `max_input_pixels` is set to LIMIT, not the 40M default, so a message that
  reports some other limit (Pillow's own bomb guard, say) is caught.
- Cost: every request that can succeed asks for 256x256 (the smallest size) at quality
  low (2 steps of the tiny model); Hypothesis example counts are modest. Images are made
  with Pillow here; decompression bombs are a few KB (one colour compresses away, or only
  the header claims the size)."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import free_port

LIMIT = 4_000_000  # the app's configured max_input_pixels (default 40M): 2000x2000 is exactly at it
PROMPT_LIMIT = 32_000
GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
VAR = "/v1/images/variations"
CHEAP = {"size": "256x256", "quality": "low"}

# On CI the examples are derived from each test's source, so a run that landed lands again;
# here they are drawn afresh each run and keep finding new inputs.
PROFILE = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True,
               derandomize=bool(os.environ.get("CI")))


def examples(n: int) -> Any:
    return settings(max_examples=n, **PROFILE)


# -- the server, and what it logs ---------------------------------------------------------
# The server runs in a child process, not in a thread of this one: under CPython 3.11 the
# `ast` module's recursion counter is per interpreter, so a server thread formatting a
# traceback (3.11's carets parse source with `ast`) while pytest renders a failure raises
# "SystemError: AST constructor recursion depth mismatch" and aborts the whole session
# (seen here against the defects this file is for). A process also keeps a server that
# crashes from taking the tests with it, and its log is read from its output.
SERVER = r"""
import logging, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import uvicorn
from conftest import make_settings, tiny_config
from imagegate.app import create_app
app = create_app(make_settings(Path(sys.argv[3]), max_input_pixels=int(sys.argv[4])), [tiny_config(Path(sys.argv[2]))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[5]), log_level="warning")
"""


class ServerLog:
    """The child's output; `take()` returns the lines that report errors since the last call."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen = 0

    def read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def take(self) -> list[str]:
        new, self.seen = self.lines[self.seen:], len(self.lines)
        return [line for line in new if line.startswith(("ERROR", "CRITICAL", "Traceback"))]


LOG = ServerLog()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-c", SERVER, str(Path(__file__).parent), str(tiny_sd_path),
            str(tmp_path_factory.mktemp("robustness")), str(LIMIT), str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    threading.Thread(target=LOG.read, args=(proc.stdout,), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "server exited:\n" + "\n".join(LOG.lines[-40:])
            try:
                if httpx2.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy:\n" + "\n".join(LOG.lines[-40:])
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server, timeout=120) as c:
        yield c


def assert_healthy(http: httpx2.Client) -> None:
    resp = http.get("/health")
    assert resp.status_code == 200, f"/health after the test: {resp.status_code} {resp.text[:300]}"
    resp = http.post(GEN, json={"prompt": "a red circle on a white background", **CHEAP})
    assert_ok(resp, size=(256, 256))


@pytest.fixture(autouse=True)
def healthy_afterwards(http: httpx2.Client) -> Iterator[None]:
    LOG.take()
    yield
    assert_healthy(http)
    time.sleep(0.05)  # let the child's last lines arrive
    logged = LOG.take()
    assert not logged, "the server logged errors during the test:\n" + "\n".join(logged[:12])


# -- what a response must look like --------------------------------------------------------
_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|\bobject at 0x[0-9a-fA-F]+")
ANY = object()


def _describe(resp: httpx2.Response) -> str:
    try:
        sent = resp.request.content
    except httpx2.RequestNotRead:
        sent = b"<streamed>"
    shown = sent[:300] + (b"...(%d bytes)" % len(sent) if len(sent) > 300 else b"")
    return f"{resp.request.method} {resp.request.url.path} {shown!r} -> {resp.status_code} {resp.text[:600]!r}"


def show(**values: Any) -> None:
    """Hypothesis notes of the drawn values (schemathesis' pytest plugin blanks the values
    in Hypothesis' own "Failing test case" line)."""
    for k, v in values.items():
        r = repr(v)
        note(f"{k} = {r[:400]}" + (f"... ({len(r)} chars)" if len(r) > 400 else ""))


def assert_ok(resp: httpx2.Response, size: tuple[int, int] | None = None) -> dict[str, Any]:
    assert resp.status_code == 200, "expected 200: " + _describe(resp)
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        # A failure after the stream started is a 200 carrying `data: {"error": ...}`.
        events = [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:")]
        assert events and not any("error" in e for e in events), "stream failed: " + _describe(resp)
        assert events[-1].get("type", "").endswith(".completed"), "stream did not complete: " + _describe(resp)
        return events[-1]
    body = resp.json()
    assert body["data"] and all(d.get("b64_json") or d.get("url") for d in body["data"]), _describe(resp)
    if size is not None and body["data"][0].get("b64_json"):
        assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == size
    return body


def assert_error(resp: httpx2.Response, *, status: int | tuple[int, ...] | None = None, param: Any = ANY,
                 code: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """A 4xx in OpenAI's envelope with a readable message. `param`: ANY, an exact value
    (None included), a tuple of acceptable values, or a predicate."""
    assert resp.status_code < 500, "server error: " + _describe(resp)
    assert 400 <= resp.status_code < 500, "expected a 4xx: " + _describe(resp)
    if status is not None:
        assert resp.status_code in (status if isinstance(status, tuple) else (status,)), _describe(resp)
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError("error body is not JSON: " + _describe(resp)) from None
    assert isinstance(body, dict) and set(body) == {"error"}, "not OpenAI's envelope: " + _describe(resp)
    err = body["error"]
    assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err), _describe(resp)
    msg = err["message"]
    assert isinstance(msg, str) and msg.strip(), _describe(resp)
    assert isinstance(err["type"], str) and err["type"], _describe(resp)
    assert err["param"] is None or isinstance(err["param"], str), _describe(resp)
    assert err["code"] is None or isinstance(err["code"], str), _describe(resp)
    # Readable: no object reprs, no 'None' where a parameter name belongs, no traceback,
    # and not an echo of a huge input.
    assert not _REPR.search(msg), "object repr in the message: " + _describe(resp)
    assert "'None'" not in msg and '"None"' not in msg and err["param"] != "None", \
        "'None' as a parameter name: " + _describe(resp)
    assert "Traceback" not in msg, _describe(resp)
    assert len(msg) <= 2000, f"a {len(msg)}-character message: " + _describe(resp)
    if param is not ANY:
        p = err["param"]
        if callable(param):
            ok = param(p)
        elif isinstance(param, tuple):
            ok = p in param
        else:
            ok = p == param
        assert ok, f"param {p!r}, expected {param!r}: " + _describe(resp)
    if code is not None:
        assert err["code"] in (code if isinstance(code, tuple) else (code,)), \
            f"code {err['code']!r}, expected {code!r}: " + _describe(resp)
    return err


def assert_limit_in_message(err: dict[str, Any]) -> None:
    digits = re.sub(r"(?<=\d)[,_ '\u202f\u00a0](?=\d)", "", err["message"])
    assert str(LIMIT) in digits, f"the configured limit {LIMIT} is not in the message: {err['message']!r}"


def post_json(http: httpx2.Client, path: str, body: Any, **headers: str) -> httpx2.Response:
    """`body` as JSON text exactly as json.dumps writes it (ensure_ascii: a lone surrogate is
    the six characters \\ud800 on the wire), or raw bytes/str as given."""
    if isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = json.dumps(body).encode("ascii")
    return http.post(path, content=raw, headers={"content-type": "application/json", **headers})


# -- images ---------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    return Image.fromarray(arr[:, :, 0] if bands == 1 else arr, mode)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=16)
def solid_png(w: int, h: int) -> bytes:
    """A valid 1-bit greyscale PNG of one colour: 20000x20000 is 400M pixels in ~60 KB."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)
    rows_per = max(1, (1 << 20) // len(row))
    parts = [comp.compress(row * min(rows_per, h - y)) for y in range(0, h, rows_per)]
    raw = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")


def header_png(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (RGB) and whose pixel data is a few bytes: only a
    header-first check can answer it correctly."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def png16(w: int, h: int, alpha: bool) -> bytes:
    """A 16-bit-per-channel RGB(A) PNG (Pillow cannot write one)."""
    ch = 4 if alpha else 3
    rng = np.random.default_rng(1)
    px = rng.integers(0, 65536, (h, w * ch), dtype=np.uint16).astype(">u2")
    if alpha:
        px.reshape(h, w, 4)[: h // 2, : w // 2, 3] = 0
    raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6 if alpha else 2, 0, 0, 0)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def patched_jpeg(w: int, h: int) -> bytes:
    """A small baseline JPEG whose SOF0 header is rewritten to claim w x h."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def patched_gif(w: int, h: int) -> bytes:
    data = bytearray(encode(noise(16, 16).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", w, h)  # logical screen
    i = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[i + 5:i + 9] = struct.pack("<HH", w, h)
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGBA", (32, 32), c) for c in ((255, 0, 0, 255), (0, 255, 0, 128), (0, 0, 255, 0))]
    kw: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "GIF":
        frames = [f.convert("RGB") for f in frames]
        kw["append_images"] = frames[1:]
    return encode(frames[0], fmt, **kw)


def exif_jpeg(orientation: int, w: int = 48, h: int = 32) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(noise(w, h), "JPEG", exif=exif)


def png_mode(mode: str, w: int = 64, h: int = 64, **kw: Any) -> bytes:
    base = noise(w, h, "RGBA")
    if mode == "RGBA":
        img = rgba_mask(w, h)
    elif mode == "LA":
        img = base.convert("LA")
        img.putalpha(rgba_mask(w, h).getchannel("A"))
    elif mode == "P+tRNS":
        img = base.convert("RGB").quantize(16)
        img.paste(0, (0, 0, w // 2, h // 2))
        return encode(img, "PNG", transparency=0)
    elif mode == "RGB+tRNS":
        img = Image.new("RGB", (w, h), (1, 2, 3))
        img.paste((200, 10, 10), (w // 2, h // 2, w, h))
        return encode(img, "PNG", transparency=(1, 2, 3))
    elif mode == "I;16":
        px = np.random.default_rng(2).integers(0, 65536, (h, w), dtype=np.uint16)
        img = Image.frombytes("I;16", (w, h), px.astype("<u2").tobytes())
    else:
        img = base.convert("RGB").convert(mode)  # (RGBA straight to P would carry transparency)
    return encode(img, "PNG", **kw)


def rgba_mask(w: int, h: int) -> Image.Image:
    m = Image.new("RGBA", (w, h), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, w // 2, h // 2))
    return m


def cmyk_jpeg() -> bytes:
    return encode(noise(48, 48).convert("CMYK"), "JPEG")


@dataclass(frozen=True)
class Upload:
    """A hostile (or not) file and what the server must make of it."""

    name: str  # what it is, for the report
    filename: str
    data: bytes
    ctype: str
    outcome: str  # "ok": 200; "either": 200 or 400 naming it; "bad": 400 naming it; "too_large": image_too_large
    codes: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"Upload({self.name!r}, {self.filename!r}, {len(self.data)} bytes, {self.outcome})"


PNG, JPG, WEBP, GIF = "image/png", "image/jpeg", "image/webp", "image/gif"
BAD_IMAGE = ("invalid_image", "invalid_image_format")


def _still_images() -> dict[str, Callable[[], Upload]]:
    """Uploads by name: still images of every kind and mode OpenAI accepts (each must be
    accepted), then files that must be refused naming the image, then images over LIMIT."""
    def u(name: str, data: Callable[[], bytes], fn: str = "image.png", ct: str = PNG, outcome: str = "ok",
          codes: tuple[str, ...] | None = None) -> tuple[str, Callable[[], Upload]]:
        return name, lambda: Upload(name, fn, data(), ct, outcome, codes)

    return dict([
        u("png RGB", lambda: encode(noise(64, 64), "PNG")),
        u("png RGBA", lambda: encode(noise(64, 64, "RGBA"), "PNG")),
        u("png L", lambda: png_mode("L")),
        u("png LA", lambda: png_mode("LA")),
        u("png 1-bit", lambda: png_mode("1")),
        u("png P", lambda: png_mode("P")),
        u("png P+tRNS", lambda: png_mode("P+tRNS")),
        u("png RGB+tRNS", lambda: png_mode("RGB+tRNS")),
        u("png I;16 (16-bit grey)", lambda: png_mode("I;16")),
        u("png 16-bit RGB", lambda: png16(40, 24, alpha=False)),
        u("png 16-bit RGBA", lambda: png16(40, 24, alpha=True)),
        u("jpeg RGB", lambda: encode(noise(64, 48), "JPEG"), "image.jpg", JPG),
        u("jpeg L", lambda: encode(noise(64, 48, "L"), "JPEG"), "image.jpg", JPG),
        u("jpeg CMYK", cmyk_jpeg, "image.jpg", JPG),
        u("jpeg progressive", lambda: encode(noise(64, 48), "JPEG", progressive=True), "image.jpg", JPG),
        u("jpeg EXIF orientation 6", lambda: exif_jpeg(6), "image.jpg", JPG),
        u("jpeg EXIF orientation 8", lambda: exif_jpeg(8), "image.jpg", JPG),
        u("jpeg EXIF orientation 3", lambda: exif_jpeg(3), "image.jpg", JPG),
        u("webp RGB", lambda: encode(noise(64, 48), "WEBP"), "image.webp", WEBP),
        u("webp RGBA lossless", lambda: encode(noise(64, 48, "RGBA"), "WEBP", lossless=True), "image.webp", WEBP),
        u("gif still", lambda: encode(noise(64, 48).convert("P"), "GIF"), "image.gif", GIF),
        u("gif still transparent", lambda: encode(noise(64, 48).convert("P"), "GIF", transparency=0), "image.gif", GIF),
        u("jpeg named .png", lambda: encode(noise(64, 48), "JPEG"), "image.png", PNG),
        u("png named .jpg", lambda: encode(noise(64, 48), "PNG"), "photo.jpg", JPG),
        u("webp named .gif, octet-stream", lambda: encode(noise(64, 48), "WEBP"), "x.gif", "application/octet-stream"),
        u("extreme aspect 1x4000", lambda: encode(noise(1, 4000), "PNG")),
        u("extreme aspect 4000x1", lambda: encode(noise(4000, 1), "PNG")),
        u("extreme aspect 3x2999 jpeg", lambda: encode(noise(3, 2999), "JPEG"), "tall.jpg", JPG),
        u("1x1", lambda: encode(noise(1, 1), "PNG")),
        u("exactly at the pixel limit (2000x2000)", lambda: solid_png(2000, 2000)),
        # Not acceptable.
        u("animated gif", lambda: animated("GIF"), "anim.gif", GIF, "bad", ("invalid_image",)),
        u("animated png (APNG)", lambda: animated("PNG"), "anim.png", PNG, "bad", ("invalid_image",)),
        u("animated webp", lambda: animated("WEBP"), "anim.webp", WEBP, "bad", ("invalid_image",)),
        u("text named .png", lambda: b"hello, this is not an image\n" * 4, "image.png", PNG, "bad", BAD_IMAGE),
        u("empty file", lambda: b"", "image.png", PNG, "bad", BAD_IMAGE),
        u("png signature only", lambda: PNG_SIG, "image.png", PNG, "bad", BAD_IMAGE),
        u("bmp", lambda: encode(noise(16, 16), "BMP"), "image.bmp", "image/bmp", "bad", BAD_IMAGE),
        u("tiff named .png", lambda: encode(noise(16, 16), "TIFF"), "image.png", PNG, "bad", BAD_IMAGE),
        u("ico", lambda: encode(noise(16, 16), "ICO"), "favicon.ico", "image/x-icon", "bad", BAD_IMAGE),
        u("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "i.svg", "image/svg+xml",
          "bad", BAD_IMAGE),
        u("zero-size png header", lambda: header_png(0, 0), "image.png", PNG, "bad"),
        # Over the configured limit.
        u("just over the pixel limit (2001x2000)", lambda: solid_png(2001, 2000), outcome="too_large"),
        u("bomb 8000x8000 (64M, under Pillow's guard)", lambda: solid_png(8000, 8000), outcome="too_large"),
        u("bomb 20000x20000 (400M, over Pillow's guard)", lambda: solid_png(20000, 20000), outcome="too_large"),
        u("jpeg header 65535x65535", lambda: patched_jpeg(65535, 65535), "image.jpg", JPG, "too_large"),
        u("gif header 30000x30000", lambda: patched_gif(30000, 30000), "image.gif", GIF, "too_large"),
        u("png header 2^31-1 square", lambda: header_png(2**31 - 1, 2**31 - 1), outcome="too_large"),
    ])


IMAGES = _still_images()


def truncated(data: bytes, keep: float) -> bytes:
    return data[: max(1, int(len(data) * keep))]


@st.composite
def hostile_images(draw: st.DrawFn) -> Upload:
    kind = draw(st.sampled_from(["catalogue"] * 5 + ["header bomb", "jpeg bomb", "truncated"]))
    if kind == "catalogue":
        return IMAGES[draw(st.sampled_from(sorted(IMAGES)))]()
    if kind == "header bomb":
        w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        if w == 0 or h == 0:
            return Upload(f"png header {w}x{h}", "image.png", header_png(w, h), PNG, "bad")
        outcome = "too_large" if w * h > LIMIT else "either"  # under the limit: claimed size, pixels missing
        return Upload(f"png header {w}x{h}", "image.png", header_png(w, h), PNG, outcome)
    if kind == "jpeg bomb":
        w, h = draw(st.integers(1, 65535)), draw(st.integers(1, 65535))
        outcome = "too_large" if w * h > LIMIT else "either"
        return Upload(f"jpeg header {w}x{h}", "image.jpg", patched_jpeg(w, h), JPG, outcome)
    base = IMAGES[draw(st.sampled_from(["png RGB", "jpeg RGB", "webp RGB", "gif still", "png 16-bit RGBA"]))]()
    keep = draw(st.floats(0.0, 0.99))
    return Upload(f"{base.name} truncated to {keep:.2f}", base.filename, truncated(base.data, keep), base.ctype,
                  "either")


def check_upload_outcome(resp: httpx2.Response, up: Upload, param: Any) -> None:
    if up.outcome == "ok":
        assert_ok(resp)
    elif up.outcome == "either":
        if resp.status_code != 200:
            assert_error(resp, status=400, param=param)
    elif up.outcome == "bad":
        assert_error(resp, status=400, param=param, code=up.codes)
    elif up.outcome == "too_large":
        assert_limit_in_message(assert_error(resp, status=400, param=param, code="image_too_large"))
    else:
        raise AssertionError(up.outcome)


def data_url(data: bytes, ctype: str = PNG) -> str:
    """An image as a base64 data URL (a non-image media type is sent as image/png, whatever
    the bytes are: the data URL's own type is not what is under test)."""
    ctype = ctype if ctype.startswith("image/") else PNG
    return f"data:{ctype};base64," + base64.b64encode(data).decode("ascii")


SMALL_PNG = encode(noise(64, 64), "PNG")
SMALL_IMAGE = ("image.png", SMALL_PNG, PNG)


def edit_body(**kw: Any) -> dict[str, Any]:
    return {"images": [{"image_url": data_url(SMALL_PNG)}], "prompt": "a blue square", **CHEAP, **kw}


# == 1. full-Unicode text ==========================================================================
HOSTILE_CHUNKS = [
    "\x00", "\x01", "\x08", "\x1b[31m", "\x7f", "\x85", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a",
    "\u202e", "\u2066", "\u2069", "\u061c", "\u0301", "\u0336" * 20, "\u034f", "e\u0301\u0302\u0303\u0304",
    "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0001F600", "\U0001F1FA\U0001F1F8", "\U0001F469\u200d\U0001F4BB",
    "\U0010FFFF", "\U000E0001", "\u2028", "\u2029", "\u00a0", "\u3000", "\U0001D54F", "שלום", "مرحبا", "字",
    "\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800", "\\", '"', "'", "</script>", "%s%n", "{0}", "\r\n", "\t",
]
_chunk_text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=6), st.sampled_from(HOSTILE_CHUNKS))
hostile_text = st.lists(_chunk_text, max_size=10).map("".join)


@st.composite
def long_text(draw: st.DrawFn) -> str:
    fill = draw(st.sampled_from(["a", "é", "字", "\u0301", "\U0001F600", "\u200f", "\x00"]))
    n = draw(st.integers(PROMPT_LIMIT - 8, PROMPT_LIMIT + 8))
    text = (fill * n)[:n]
    if draw(st.booleans()):  # a lone surrogate somewhere in it
        i = draw(st.integers(0, n - 1))
        text = text[:i] + "\ud800" + text[i + 1:]
    return text


def escaped(text: str) -> str:
    """How a name that cannot be encoded is quoted back: backslash escapes (`\\ud800`)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def has_surrogate(s: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def utf16_len(s: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in s)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def expected_text(field: str, value: str) -> str:
    """ok / bad / either for a free-text field of a generation."""
    if has_surrogate(value):
        return "bad"
    limit = {"prompt": PROMPT_LIMIT, "negative_prompt": PROMPT_LIMIT}.get(field)
    if limit is not None and len(value) > limit:
        return "bad"
    if limit is not None and utf16_len(value) > limit:
        return "either"  # the limit may be counted in code points or UTF-16 units
    if field == "prompt":
        if value.strip(" \t\n\r\x0b\x0c") == "":
            return "bad"
        if value.strip() == "" or _CONTROL.search(value):
            return "either"  # Unicode-only whitespace, control characters: a 400 naming prompt is fine
    if field == "negative_prompt" and not value.strip():
        return "either"
    if field in ("user", "safety_identifier") and len(value) > 256:
        return "either"
    return "ok"


def check_text_outcome(resp: httpx2.Response, field: str, value: str) -> None:
    want = expected_text(field, value)
    if field == "prompt" and want != "bad" and resp.status_code == 400 \
            and resp.json().get("error", {}).get("code") == "moderation_blocked":
        # The input word lists read through obfuscation: "X\bX:X" is "xxx". A block is
        # OpenAI's shape: param null, the stage and the categories named.
        err = assert_error(resp, status=400, param=None, code="moderation_blocked")
        assert err["moderation_details"]["moderation_stage"] == "input", _describe(resp)
        return
    if want == "ok":
        assert_ok(resp)
    elif want == "bad" or resp.status_code != 200:
        assert_error(resp, status=400, param=field)


def test_json_dumps_writes_a_lone_surrogate_as_a_raw_escape() -> None:
    # What post_json sends is what a hand-written body would carry.
    assert json.dumps({"prompt": "a\ud800b"}).encode() == b'{"prompt": "a\\ud800b"}'


TEXT_FIELDS = ["prompt", "negative_prompt", "user", "safety_identifier"]


@examples(90)
@given(field=st.sampled_from(TEXT_FIELDS), value=hostile_text, stream=st.sampled_from([False, False, True]))
@example(field="prompt", value="\ud800\udc00", stream=False)  # an escaped pair: U+10000, a valid prompt
@example(field="prompt", value="a\ud800", stream=False)  # a lone surrogate: 400
@example(field="prompt", value="X\x08X:X", stream=False)  # read as "xxx": moderation_blocked (CI, stop 30)
def test_unicode_text_fields(http: httpx2.Client, field: str, value: str, stream: bool) -> None:
    """Streamed too: a text the pipeline chokes on must be refused before the stream starts."""
    show(field=field, value=value, stream=stream)
    body = {"prompt": "a green triangle", **CHEAP, field: value, **({"stream": True} if stream else {})}
    # What the server reads: JSON joins an escaped high + low surrogate into one character
    # ("\\ud800\\udc00" is U+10000), so only a lone one is a bad text.
    check_text_outcome(post_json(http, GEN, body), field, json.loads(json.dumps(value)))


@examples(18)
@given(field=st.sampled_from(["prompt", "negative_prompt"]), value=long_text())
def test_text_near_and_over_the_limit(http: httpx2.Client, field: str, value: str) -> None:
    show(field=field, value=value)
    body = {"prompt": "a green triangle", **CHEAP, field: value}
    check_text_outcome(post_json(http, GEN, body), field, value)


@pytest.mark.parametrize("raw", [
    b'{"prompt": "\\ud800", "size": "256x256", "quality": "low"}',
    b'{"prompt": "a\\udc00b", "size": "256x256", "quality": "low"}',
    b'{"prompt": "x", "negative_prompt": "\\udfff", "size": "256x256", "quality": "low"}',
    b'{"prompt": "x", "user": "\\ud83d", "size": "256x256", "quality": "low"}',
])
def test_lone_surrogate_escapes_are_a_400_naming_the_field(http: httpx2.Client, raw: bytes) -> None:
    field = next(k for k, v in json.loads(raw).items() if has_surrogate(v))
    assert_error(post_json(http, GEN, raw), status=400, param=field)


@pytest.mark.parametrize("raw", [
    b'{"prompt": "\xff\xfe", "size": "256x256"}',            # not UTF-8
    b'{"prompt": "\xed\xa0\x80", "size": "256x256"}',         # a surrogate encoded as UTF-8 (invalid)
    b'{"prompt": "\xc0\xaf", "size": "256x256"}',             # overlong encoding
    b'{"prompt": "a\x00b", "size": "256x256"}',               # a raw control character in a JSON string
])
def test_invalid_utf8_or_raw_controls_in_the_body(http: httpx2.Client, raw: bytes) -> None:
    assert_error(post_json(http, GEN, raw), status=400, param=(None, "prompt"))


@examples(60)
@given(field=st.sampled_from(["model", "size", "quality", "response_format", "output_format", "background",
                              "moderation", "style", "aspect_ratio", "resolution", "lora", "<key>"]),
       value=hostile_text.filter(lambda s: s not in ("", "auto")))
def test_unicode_in_other_fields_and_keys(http: httpx2.Client, field: str, value: str) -> None:
    """Hostile text in enum-like fields, or as an unknown parameter's name: a 4xx naming it."""
    show(field=field, value=value)
    if field == "<key>":
        assume(value not in GEN_FIELDS)
        body = {"prompt": "x", **CHEAP, value: 1}
        resp = post_json(http, GEN, body)
        # A name that cannot be echoed (a lone surrogate) may be reported without param.
        unechoable = has_surrogate(value) or not value.strip()
        assert_error(resp, status=400, param=(value, None, escaped(value)) if unechoable else value)
        return
    body = {"prompt": "x", **CHEAP, field: value}
    if field in ("aspect_ratio", "resolution"):
        del body["size"]  # `size` wins over them
    resp = post_json(http, GEN, body)
    if resp.status_code == 200 and not has_surrogate(value):
        return  # happened to be a valid value (e.g. an aspect ratio)
    assert_error(resp, status=(400, 404) if field == "model" else 400, param=field)


# == 2. wrong types: OpenAI's schema types are enforced in JSON bodies ============================
INT, FLOAT, BOOL, STR = "integer", "number", "boolean", "string"
GEN_FIELDS = {
    "prompt": STR, "model": STR, "n": INT, "quality": STR, "response_format": STR, "output_format": STR,
    "output_compression": INT, "stream": BOOL, "partial_images": INT, "size": STR, "background": STR,
    "moderation": STR, "style": STR, "user": STR, "safety_identifier": STR,
    # extensions
    "seed": INT, "negative_prompt": STR, "num_inference_steps": INT, "guidance_scale": FLOAT,
    "aspect_ratio": STR, "resolution": STR, "lora": STR, "lora_scale": FLOAT,
}
EDIT_FIELDS = {**{k: v for k, v in GEN_FIELDS.items() if k != "style"}, "input_fidelity": STR}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)


def type_ok(kind: str, v: Any) -> bool:
    if v is None:
        return True  # absent/null is the default for every optional field (OpenAI marks them nullable)
    if kind == INT:
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if kind == FLOAT:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == BOOL:
        return isinstance(v, bool)
    return isinstance(v, str)


CLASSIC_WRONG = {
    INT: ["3", "1", "", " 1", "0x1", "1e0", True, False, 2.5, [1], {"value": 1}],
    FLOAT: ["5", "5.0", "", True, [1.0], {"v": 1}],
    BOOL: ["true", "false", "", 1, 0, [True], {}],
    STR: [1, 0, 1.5, True, False, ["x"], {"x": "y"}, []],
}


def wrong_value(kind: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(CLASSIC_WRONG[kind]), json_values.filter(lambda v: not type_ok(kind, v)))


@examples(120)
@given(data=st.data())
def test_wrong_types_in_a_generation_are_a_400_naming_the_field(http: httpx2.Client, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(GEN_FIELDS)), label="field")
    value = data.draw(wrong_value(GEN_FIELDS[field]), label="value")
    show(field=field, value=value)
    body = {"prompt": "a red circle", **CHEAP, field: value}
    assert_error(post_json(http, GEN, body), status=400, param=field)


@examples(75)
@given(data=st.data())
def test_wrong_types_in_a_json_edit_are_a_400_naming_the_field(http: httpx2.Client, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from([*sorted(EDIT_FIELDS), "images", "mask"]), label="field")
    if field == "images":
        value = data.draw(st.sampled_from(["x", data_url(SMALL_PNG), {"image_url": data_url(SMALL_PNG)}, None, 1,
                                           [data_url(SMALL_PNG)], [1], [None], [[]], [{"image_url": 1}],
                                           [{"image_url": None}], [{"image_url": ["x"]}], [{"file_id": 7}]]),
                          label="value")
        param: Any = lambda p: isinstance(p, str) and p.startswith("images")  # noqa: E731
    elif field == "mask":
        value = data.draw(st.sampled_from(["x", 1, [], [{"image_url": "x"}], {"image_url": 5}, True]), label="value")
        param = lambda p: isinstance(p, str) and p.startswith("mask")  # noqa: E731
    else:
        value = data.draw(wrong_value(EDIT_FIELDS[field]), label="value")
        param = field
    show(field=field, value=value)
    assert_error(post_json(http, EDIT, edit_body(**{field: value})), status=400, param=param)


def test_null_prompt_is_a_400(http: httpx2.Client) -> None:
    assert_error(post_json(http, GEN, {"prompt": None, **CHEAP}), status=400, param="prompt")
    assert_error(post_json(http, EDIT, edit_body(prompt=None)), status=400, param="prompt")


@pytest.mark.parametrize(("field", "value"), [
    ("model", ""), ("model", " "), ("model", "gpt-image-1\n"), ("model", "\x00"), ("model", "gpt-image-1\x00"),
    ("size", ""), ("size", "1024x1024\n"), ("size", " 256x256"), ("size", "256x256 "), ("size", "256x256\x00"),
    ("size", "\uff12\uff15\uff16x\uff12\uff15\uff16"),  # full-width digits: int() reads them
    ("size", "25_6x25_6"), ("size", "+256x+256"), ("size", "256\u00d7256"), ("size", "256x256x"),
    ("size", "256.0x256.0"), ("size", "-256x-256"),
    ("quality", ""), ("quality", "LOW"), ("quality", "low "), ("output_format", "png\n"), ("output_format", ".png"),
    ("response_format", "URL"), ("background", ""), ("moderation", "high"), ("style", "VIVID"),
    ("resolution", "1k"), ("aspect_ratio", "16:0"), ("aspect_ratio", "0:0"), ("aspect_ratio", "-1:1"),
    ("aspect_ratio", "1e9:1"), ("aspect_ratio", "\uff11\uff16:\uff19"),
])
def test_bad_string_values_are_a_400_naming_the_field(http: httpx2.Client, field: str, value: str) -> None:
    body = {"prompt": "a red circle", **CHEAP, field: value}
    if field in ("aspect_ratio", "resolution"):
        del body["size"]  # `size` wins over them
    assert_error(post_json(http, GEN, body), status=(400, 404) if field == "model" else 400, param=field)


@pytest.mark.parametrize(("field", "literal"), [
    ("n", "NaN"), ("n", "Infinity"), ("guidance_scale", "NaN"), ("guidance_scale", "Infinity"),
    ("guidance_scale", "-Infinity"), ("lora_scale", "NaN"), ("seed", "1e400"), ("seed", "18446744073709551616"),
    ("n", "1" + "0" * 5000),  # over Python's int-parsing digit limit
    ("output_compression", "-0"),
])
def test_non_standard_numbers(http: httpx2.Client, field: str, literal: str) -> None:
    raw = f'{{"prompt": "x", "size": "256x256", "quality": "low", "{field}": {literal}}}'
    resp = post_json(http, GEN, raw)
    if literal in ("-0",):  # valid JSON integer 0
        assert_ok(resp)
        return
    assert_error(resp, status=400, param=(field, None))


# == 3. huge, deep, empty, non-object and mistyped bodies ========================================
def deep(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + ("1" if opener != "[" else "") + closer * depth


@examples(45)
@given(path=st.sampled_from([GEN, EDIT]), depth=st.sampled_from([2, 50, 900, 1000, 1100, 5000, 100_000])
       | st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":']),
       where=st.sampled_from(["top", "prompt", "images", "n", "unknown"]), balanced=st.booleans())
def test_deeply_nested_json(http: httpx2.Client, path: str, depth: int, opener: str, where: str,
                            balanced: bool) -> None:
    show(path=path, depth=depth, opener=opener, where=where, balanced=balanced)
    value = deep(depth, opener) if balanced else opener * depth
    field = {"top": "a", "unknown": "zzz"}.get(where, where)
    if where == "top":
        raw = value
    else:
        base = edit_body() if path == EDIT else {"prompt": "x", **CHEAP}
        base.pop(field, None)
        raw = json.dumps(base)[:-1] + f', "{field}": {value}}}'

    def names_it(p: str | None) -> bool:  # the field at fault, or none for a body that does not parse
        if where == "top" and p in ("prompt", "images"):
            return True  # a top-level object of just {"a": ...}: missing prompt is as true as unknown 'a'
        return p is None or p == field or p.startswith((field + "[", field + "."))
    assert_error(post_json(http, path, raw), status=400, param=names_it)


def test_very_deep_json_parsed_off_the_event_loop(http: httpx2.Client) -> None:
    # Over 1 MB, the body is parsed in a worker thread (smaller stack): 2M levels.
    for path in (GEN, EDIT):
        assert_error(post_json(http, path, "[" * 2_000_000), status=400, param=None)
        assert_error(post_json(http, path, "[" * 1_000_000 + "]" * 1_000_000), status=400, param=None)


@examples(30)
@given(path=st.sampled_from([GEN, EDIT]), value=json_values.filter(lambda v: not isinstance(v, dict)))
def test_json_that_is_not_an_object(http: httpx2.Client, path: str, value: Any) -> None:
    show(path=path, value=value)
    assert_error(post_json(http, path, value), status=400, param=None)


@pytest.mark.parametrize("path", [GEN, EDIT])
@pytest.mark.parametrize(("ctype", "body"), [
    ("application/json", b""),
    ("application/json", b"   \n"),
    (None, b""),
    (None, b'{"prompt": "x", "size": "256x256", "quality": "low"}'),
    ("text/plain", b""),
    ("text/plain", b'{"prompt": "x", "size": "256x256", "quality": "low"}'),
    ("text/plain", b"a red circle"),
    ("application/x-www-form-urlencoded", b"prompt=x&size=256x256"),
    ("application/xml", b"<prompt>x</prompt>"),
    ("application/octet-stream", b"\x00\x01\x02"),
    ("multipart/form-data", b"--x\r\n"),  # no boundary parameter
    ("multipart/form-data; boundary=x", b"garbage"),
    ("application/json; charset=utf-16", b'{"prompt": "x", "size": "256x256", "quality": "low"}'),
    ("application/json", b"\xef\xbb\xbf"),  # a BOM and nothing else
    ("application/json", b"null"),
    ("application/json", b"{"),
    ("application/json", b"}"),
    ("application/json", b'{"prompt": "x"} trailing'),
    ("application/json", b'{"prompt": "x"}{"prompt": "y"}'),
])
def test_empty_and_mistyped_bodies(http: httpx2.Client, path: str, ctype: str | None, body: bytes) -> None:
    headers = {"content-type": ctype} if ctype else {}
    resp = http.post(path, content=body, headers=headers)
    if path == GEN and b'"quality": "low"}' in body and resp.status_code == 200:
        return  # a JSON object with no, or a loose, content type: reading it is lenient, not wrong
    assert_error(resp, status=(400, 415))


def _starts(prefix: str) -> Callable[[str | None], bool]:
    return lambda p: p is not None and p.startswith(prefix)


HUGE_CASES: dict[str, tuple[Callable[[], dict[str, Any]], Any, str | None]] = {
    "10 MB prompt": (lambda: {"prompt": "a" * 10_000_000}, "prompt", "string_above_max_length"),
    "100,000 unknown keys": (lambda: {f"k{i}": i for i in range(100_000)}, _starts("k"), None),
    "a 100 KB unknown key": (lambda: {"k" * 100_000: 1}, _starts("k"), None),
    "a 5 MB size": (lambda: {"size": "9" * 5_000_000}, "size", None),
    "a 4 MB aspect_ratio": (lambda: {"aspect_ratio": "1:" * 2_000_000}, "aspect_ratio", None),
    "a 1 MB user": (lambda: {"user": "u" * 1_000_000}, ("user", None), None),
    "200,000 images": (lambda: {"images": [{"image_url": "x"}] * 200_000}, _starts("images"), None),
    "17 images": (lambda: {"images": [{"image_url": data_url(SMALL_PNG)}] * 17}, "images", "too_many_images"),
}


@pytest.mark.parametrize("path", [GEN, EDIT])
@pytest.mark.parametrize("case", sorted(HUGE_CASES))
def test_huge_json_bodies(http: httpx2.Client, path: str, case: str) -> None:
    make, param, code = HUGE_CASES[case]
    base = edit_body() if path == EDIT else {"prompt": "x", **CHEAP}
    extra = make()
    if "images" in extra and path == GEN:
        param, code = "images", "unknown_parameter"
    resp = post_json(http, path, {**base, **extra})
    if case == "a 1 MB user" and resp.status_code == 200:
        return  # OpenAI documents no limit on `user`; the ledger keeps a bounded copy
    assert_error(resp, status=400, param=param, code=code)


# == 4. multipart edge cases ====================================================================
def multipart(http: httpx2.Client, path: str, parts: list[tuple[str, Any]]) -> httpx2.Response:
    """parts: (name, str) for a field, (name, (filename, bytes, ctype)) for a file."""
    files = [(k, (None, v) if isinstance(v, (str, bytes)) else v) for k, v in parts]
    return http.post(path, files=files)


EDIT_FIELDS_OK = [("prompt", "a blue square"), ("size", "256x256"), ("quality", "low")]
MASK = ("mask.png", encode(rgba_mask(64, 64), "PNG"), PNG)
JPEG_AS_PNG = ("image.png", encode(noise(64, 64), "JPEG"), PNG)


@pytest.mark.parametrize(("name", "parts", "param", "code"), [
    ("no image", EDIT_FIELDS_OK, "image", "missing_required_parameter"),
    ("image sent as a field", [("image", "abc"), *EDIT_FIELDS_OK], "image", None),
    ("image[] sent as a field", [("image[]", "abc"), *EDIT_FIELDS_OK], "image", None),
    ("mask sent as a field", [("image", SMALL_IMAGE), ("mask", "abc"), *EDIT_FIELDS_OK], "mask", None),
    ("prompt sent as a file", [("image", SMALL_IMAGE), ("prompt", ("p.txt", b"x", "text/plain")),
                               ("size", "256x256")], "prompt", None),
    ("duplicate prompt", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("prompt", "again")], "prompt", None),
    ("duplicate size", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("size", "512x512")], "size", None),
    ("duplicate mask", [("image", SMALL_IMAGE), ("mask", MASK), ("mask", MASK), *EDIT_FIELDS_OK], "mask", None),
    ("mask without image", [("mask", MASK), *EDIT_FIELDS_OK], "image", "missing_required_parameter"),
    ("17 images", [*[("image[]", ("i.png", encode(noise(8, 8, seed=i), "PNG"), PNG)) for i in range(17)],
                   *EDIT_FIELDS_OK], "image", "too_many_images"),
    ("text bytes named .png", [("image", ("image.png", b"not an image", PNG)), *EDIT_FIELDS_OK], "image", BAD_IMAGE),
    ("empty image file", [("image", ("image.png", b"", PNG)), *EDIT_FIELDS_OK], "image", BAD_IMAGE),
    ("empty mask file", [("image", SMALL_IMAGE), ("mask", ("mask.png", b"", PNG)), *EDIT_FIELDS_OK], "mask", None),
    ("no prompt", [("image", SMALL_IMAGE), ("size", "256x256")], "prompt", "missing_required_parameter"),
    ("empty prompt", [("image", SMALL_IMAGE), ("prompt", ""), ("size", "256x256")], "prompt", None),
    ("prompt over the limit", [("image", SMALL_IMAGE), ("prompt", "a" * 40_000), ("size", "256x256")], "prompt",
     "string_above_max_length"),
    ("2 MB prompt", [("image", SMALL_IMAGE), ("prompt", "a" * 2_000_000), ("size", "256x256")], "prompt", None),
    ("2 MB size", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK[:1], ("size", "9" * 2_000_000)], "size", None),
    ("2 MB unknown field", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("zzz", "z" * 2_000_000)], "zzz", None),
    ("unknown file field", [("image", SMALL_IMAGE), ("other", ("a.txt", b"x", "text/plain")), *EDIT_FIELDS_OK],
     "other", None),
    ("non-ASCII unknown field", [("image", SMALL_IMAGE), ("pr\u00f6mpt", "x"), *EDIT_FIELDS_OK], "pr\u00f6mpt", None),
    ("n not a number", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("n", "three")], "n", None),
    ("n a fraction", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("n", "2.5")], "n", None),
    ("n out of range", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("n", "11")], "n", None),
    ("stream not a boolean", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("stream", "maybe")], "stream", None),
    ("size with a newline", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK[:1], ("size", "256x256\n")], "size", None),
    ("model empty", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("model", "")], "model", None),
    ("too many fields", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, *[(f"f{i}", "x") for i in range(100)]], ANY, None),
])
def test_multipart_edit_edge_cases(http: httpx2.Client, name: str, parts: list[Any], param: Any, code: Any) -> None:
    assert_error(multipart(http, EDIT, parts), status=400, param=param, code=code)


@pytest.mark.parametrize(("name", "parts"), [
    ("a .png holding JPEG bytes", [("image", JPEG_AS_PNG), *EDIT_FIELDS_OK]),
    ("n=2 as form text (legitimately accepted)", [("image", SMALL_IMAGE), *EDIT_FIELDS_OK, ("n", "2")]),
    ("image[] once", [("image[]", SMALL_IMAGE), *EDIT_FIELDS_OK]),
    ("images twice", [("images", SMALL_IMAGE), ("images", JPEG_AS_PNG), *EDIT_FIELDS_OK]),
    ("a 1,000-character filename", [("image", ("x" * 1_000 + ".png", SMALL_PNG, PNG)), *EDIT_FIELDS_OK]),
    ("a filename with NUL, RTL and emoji", [("image", ("a\x00\u202e\U0001F600.png", SMALL_PNG, PNG)),
                                            *EDIT_FIELDS_OK]),
    ("no content type on the file", [("image", ("image.png", SMALL_PNG, "application/octet-stream")),
                                     *EDIT_FIELDS_OK]),
    ("invalid UTF-8 in the prompt", [("image", SMALL_IMAGE), ("prompt", b"a \xff\xfe square"), ("size", "256x256"),
                                     ("quality", "low")]),
    ("a mask with alpha", [("image", SMALL_IMAGE), ("mask", MASK), *EDIT_FIELDS_OK]),
])
def test_multipart_edit_that_must_succeed(http: httpx2.Client, name: str, parts: list[Any]) -> None:
    assert_ok(multipart(http, EDIT, parts), size=(256, 256))


@pytest.mark.parametrize(("name", "parts", "param", "code"), [
    ("no image", [("size", "256x256")], "image", "missing_required_parameter"),
    ("no parts at all", [("n", "1")], "image", "missing_required_parameter"),
    ("image sent as a field", [("image", "abc"), ("size", "256x256")], "image", None),
    ("two images", [("image", SMALL_IMAGE), ("image", SMALL_IMAGE), ("size", "256x256")], "image", "too_many_images"),
    ("a mask", [("image", SMALL_IMAGE), ("mask", MASK), ("size", "256x256")], "mask", None),
    ("mask without image", [("mask", MASK), ("size", "256x256")], ("image", "mask"), None),
    ("text bytes named .png", [("image", ("image.png", b"not an image", PNG))], "image", BAD_IMAGE),
    ("empty image file", [("image", ("image.png", b"", PNG))], "image", BAD_IMAGE),
    ("duplicate n", [("image", SMALL_IMAGE), ("n", "1"), ("n", "2")], "n", None),
    ("a prompt", [("image", SMALL_IMAGE), ("prompt", "x")], "prompt", None),
    ("2 MB unknown field", [("image", SMALL_IMAGE), ("zzz", "z" * 2_000_000)], "zzz", None),
    ("17 images", [("image", ("i.png", encode(noise(8, 8, seed=i), "PNG"), PNG)) for i in range(17)], "image",
     "too_many_images"),
])
def test_multipart_variation_edge_cases(http: httpx2.Client, name: str, parts: list[Any], param: Any,
                                        code: Any) -> None:
    assert_error(multipart(http, VAR, parts), status=400, param=param, code=code)


@pytest.mark.parametrize("path", [EDIT, VAR])
def test_variations_and_edits_refuse_other_bodies(http: httpx2.Client, path: str) -> None:
    if path == VAR:
        for ctype, body in (("application/json", b'{"image": "x"}'), ("text/plain", b"x"), (None, b"")):
            assert_error(http.post(path, content=body, headers={"content-type": ctype} if ctype else {}),
                         status=(400, 415))
    assert_error(http.post(path, content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
                           headers={"content-type": "multipart/form-data; boundary=b"}), status=400)


_PART_NAMES = ["image", "image[]", "images", "mask", "prompt", "size", "quality", "n", "model", "user", "zzz", "",
               "image[0]", "\u00e9", "response_format", "background", "input_fidelity", "stream"]
_FIELD_VALUES = st.sampled_from(["x", "", "256x256", "low", "1", "2", "0", "-1", "true", "auto", "\x00", "a" * 5000,
                                 "gpt-image-1", "png", "b64_json"]) | st.text(max_size=8)


@st.composite
def multipart_parts(draw: st.DrawFn) -> list[tuple[str, Any]]:
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(_PART_NAMES))
        if draw(st.booleans()):
            up = IMAGES[draw(st.sampled_from(["png RGB", "png RGBA", "jpeg RGB", "text named .png", "empty file",
                                              "png LA", "gif still", "animated gif", "png 1-bit"]))]()
            parts.append((name, (up.filename, up.data, up.ctype)))
        else:
            parts.append((name, draw(_FIELD_VALUES)))
    if draw(st.booleans()):
        parts += [("size", "256x256"), ("quality", "low")]
    return parts


def _param_names_a_part(parts: list[tuple[str, Any]]) -> Callable[[str | None], bool]:
    sent = {k for k, _ in parts}

    def ok(p: str | None) -> bool:
        if p is None:
            return True
        base = re.split(r"[\[.]", p, maxsplit=1)[0] or p
        return p in sent or base in sent or base in {"image", "images", "prompt", "mask"}
    return ok


@examples(75)
@given(path=st.sampled_from([EDIT, VAR]), parts=multipart_parts())
def test_multipart_fuzz(http: httpx2.Client, path: str, parts: list[tuple[str, Any]]) -> None:
    """Whatever mix of parts: 200, or a 4xx whose param names one of the parts sent (or a
    required one that is missing)."""
    show(path=path, parts=parts)
    if path == VAR:
        parts = [(k, v) for k, v in parts if k != "quality"]
    resp = multipart(http, path, parts)
    if resp.status_code != 200:
        assert_error(resp, param=_param_names_a_part(parts))


@examples(60)
@given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       path=st.sampled_from([EDIT, VAR]))
def test_malformed_multipart_bytes(http: httpx2.Client, cut: int, flips: list[tuple[int, int]], path: str) -> None:
    """A valid multipart body, truncated and with bytes overwritten in its framing."""
    show(cut=cut, flips=flips, path=path)
    b = "b0undary"
    head = (f"--{b}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    body = bytearray(head + SMALL_PNG + f"\r\n--{b}--\r\n".encode())
    for pos, byte in flips:
        body[min(pos, len(head) - 1)] = byte
    if cut:
        body = body[:-cut]
    resp = http.post(path, content=bytes(body), headers={"content-type": f"multipart/form-data; boundary={b}"})
    if resp.status_code != 200:
        assert_error(resp)


# == 5. hostile images, as images, masks, data URLs and variations ===============================
@examples(105)
@given(up=hostile_images(), size=st.sampled_from(["256x256"] * 3 + ["auto"]))
def test_hostile_image_in_a_multipart_edit(http: httpx2.Client, up: Upload, size: str) -> None:
    show(up=up, size=size)
    resp = multipart(http, EDIT, [("image", (up.filename, up.data, up.ctype)), ("prompt", "a blue square"),
                                  ("size", size), ("quality", "low")])
    if size == "auto" and up.outcome == "ok" and resp.status_code != 200:
        # The output size follows the input: an input no output size fits may be refused, naming it.
        assert_error(resp, status=400, param=("image", "size"))
        return
    check_upload_outcome(resp, up, "image")


@examples(60)
@given(up=hostile_images())
def test_hostile_image_in_a_variation(http: httpx2.Client, up: Upload) -> None:
    show(up=up)
    resp = multipart(http, VAR, [("image", (up.filename, up.data, up.ctype)), ("size", "256x256")])
    check_upload_outcome(resp, up, "image")


@examples(45)
@given(up=hostile_images())
def test_hostile_image_in_a_json_edit(http: httpx2.Client, up: Upload) -> None:
    show(up=up)
    body = edit_body(images=[{"image_url": data_url(up.data, up.ctype)}])
    check_upload_outcome(post_json(http, EDIT, body), up, ("images[0]", "images[0].image_url"))


@examples(30)
@given(up=hostile_images(), position=st.integers(0, 3))
def test_hostile_image_among_several_is_named(http: httpx2.Client, up: Upload, position: int) -> None:
    show(up=up, position=position)
    files: list[tuple[str, Any]] = [("image[]", SMALL_IMAGE)] * 4
    files[position] = ("image[]", (up.filename, up.data, up.ctype))
    resp = multipart(http, EDIT, [*files, ("prompt", "a blue square"), *CHEAP.items()])
    check_upload_outcome(resp, up, f"image[{position}]")


def _masks() -> dict[str, Callable[[], Upload]]:
    """Masks for a 64x64 image: ok = a PNG with alpha of the image's size."""
    def m(name: str, data: Callable[[], bytes], outcome: str, fn: str = "mask.png", ct: str = PNG,
          codes: tuple[str, ...] | None = None) -> tuple[str, Callable[[], Upload]]:
        return name, lambda: Upload(name, fn, data(), ct, outcome, codes)

    return dict([
        m("png RGBA", lambda: png_mode("RGBA"), "ok"),
        m("png LA", lambda: png_mode("LA"), "ok"),
        m("png P+tRNS", lambda: png_mode("P+tRNS"), "ok"),
        m("png 16-bit RGBA", lambda: png16(64, 64, alpha=True), "ok"),
        m("png RGB+tRNS", lambda: png_mode("RGB+tRNS"), "either"),
        m("png RGB (no alpha)", lambda: png_mode("RGB"), "bad"),
        m("png L (no alpha)", lambda: png_mode("L"), "bad"),
        m("png 1-bit (no alpha)", lambda: png_mode("1"), "bad"),
        m("png P (no alpha)", lambda: png_mode("P"), "bad"),
        m("png I;16 (no alpha)", lambda: png_mode("I;16"), "bad"),
        m("png RGBA of another size", lambda: encode(rgba_mask(64, 48), "PNG"), "bad", codes=("invalid_mask",)),
        m("png RGBA 1x4000", lambda: encode(rgba_mask(1, 4000), "PNG"), "bad", codes=("invalid_mask",)),
        m("jpeg", lambda: encode(noise(64, 64), "JPEG"), "bad", "mask.jpg", JPG),
        m("jpeg CMYK", cmyk_jpeg, "bad", "mask.jpg", JPG),
        m("jpeg EXIF-rotated", lambda: exif_jpeg(6, 64, 64), "bad", "mask.jpg", JPG),
        m("webp RGBA", lambda: encode(noise(64, 64, "RGBA"), "WEBP", lossless=True), "bad", "mask.webp", WEBP),
        m("gif transparent", lambda: encode(noise(64, 64).convert("P"), "GIF", transparency=0), "bad", "m.gif", GIF),
        m("animated png", lambda: animated("PNG"), "bad"),
        m("animated gif", lambda: animated("GIF"), "bad", "m.gif", GIF),
        m("text named .png", lambda: b"not a mask", "bad"),
        m("empty", lambda: b"", "bad"),
        m("truncated RGBA png", lambda: encode(rgba_mask(64, 64), "PNG")[:60], "bad"),
        m("bomb 20000x20000", lambda: solid_png(20000, 20000), "too_large"),
        m("just over the limit", lambda: solid_png(2001, 2000), "too_large"),
        m("png header 100000x100000", lambda: header_png(100_000, 100_000), "too_large"),
    ])


MASKS = _masks()


@examples(60)
@given(name=st.sampled_from(sorted(MASKS)), how=st.sampled_from(["multipart", "json"]))
def test_masks_of_every_kind(http: httpx2.Client, name: str, how: str) -> None:
    show(name=name, how=how)
    up = MASKS[name]()
    if how == "multipart":
        resp = multipart(http, EDIT, [("image", SMALL_IMAGE), ("mask", (up.filename, up.data, up.ctype)),
                                      ("prompt", "a blue square"), *CHEAP.items()])
        param: Any = "mask"
    else:
        resp = post_json(http, EDIT, edit_body(mask={"image_url": data_url(up.data, up.ctype)}))
        param = ("mask", "mask.image_url")
    check_upload_outcome(resp, up, param)


# -- the same through the official SDK, where it can send the thing: the exception class
# and fields a client of OpenAI would get.
@pytest.fixture(scope="module")
def sdk(server: str) -> Iterator[Any]:
    from openai import OpenAI

    with httpx2.Client(timeout=120) as http_client:
        yield OpenAI(api_key="test-key", base_url=server + "/v1", http_client=http_client, max_retries=0)


def sdk_outcome(call: Callable[[], Any], outcome: str, param: Any, codes: tuple[str, ...] | None = None) -> None:
    import openai

    try:
        result = call()
    except openai.APIStatusError as error:
        exc: openai.APIStatusError | None = error
    else:
        exc = None
    if exc is not None:
        assert exc.status_code < 500, f"server error through the SDK: {exc.status_code} {exc.body}"
        assert outcome != "ok", f"expected success, got {exc.status_code} {exc.body}"
        assert isinstance(exc, openai.BadRequestError), (exc.status_code, exc.body)
        err = assert_error(exc.response, status=400, param=param, code=codes)
        if outcome == "too_large":
            assert_limit_in_message(err)
        assert exc.param == exc.body["param"] and exc.code == exc.body["code"]  # type: ignore[index]
        return
    assert outcome in ("ok", "either"), f"expected a 400 naming {param!r}, got a result: {result!r}"[:300]
    assert result.data and result.data[0].b64_json


@examples(30)  # ~1 s an example (a decode and an edit through the SDK): the suite's slowest test at 45
@given(up=hostile_images())
def test_hostile_image_through_the_sdk(sdk: Any, up: Upload) -> None:
    show(up=up)
    codes = ("image_too_large",) if up.outcome == "too_large" else up.codes
    sdk_outcome(lambda: sdk.images.edit(image=(up.filename, up.data, up.ctype), prompt="a blue square", **CHEAP),
                up.outcome, "image", codes)


@examples(45)
@given(value=hostile_text.filter(lambda v: not has_surrogate(v)))  # the SDK cannot encode a lone surrogate
def test_unicode_prompt_through_the_sdk(sdk: Any, value: str) -> None:
    show(value=value)
    want = expected_text("prompt", value)
    sdk_outcome(lambda: sdk.images.generate(prompt=value, **CHEAP), want, "prompt")


# == 6. a bad request batched with good ones does not affect them ================================
GOOD_BODY = {"prompt": "a yellow star", **CHEAP}

hostile_generation = st.one_of(
    st.builds(lambda f, v: {**GOOD_BODY, f: v}, st.sampled_from(TEXT_FIELDS), hostile_text),
    st.builds(lambda f, v: {**GOOD_BODY, f: v}, st.sampled_from(TEXT_FIELDS),
              st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800", "\x00", "\u202e\u0301\U0001F600"])),
    st.sampled_from(sorted(GEN_FIELDS)).flatmap(
        lambda f: wrong_value(GEN_FIELDS[f]).map(lambda v: {**GOOD_BODY, f: v})),
    st.just({**GOOD_BODY, "\ud800": 1}),
    st.just({**GOOD_BODY, "prompt": "a" * (PROMPT_LIMIT + 1)}),
)


async def _gather(server: str, hostile: Callable[[httpx2.AsyncClient], Any],
                  good: Callable[[httpx2.AsyncClient, int], Any], n_good: int = 3) -> tuple[Any, list[Any]]:
    async with httpx2.AsyncClient(base_url=server, timeout=120) as c:
        # One good request first occupies the worker, so the rest queue up and form a batch.
        results = await asyncio.gather(good(c, 99), hostile(c), *(good(c, i) for i in range(n_good)))
    return results[1], [results[0], *results[2:]]


@examples(22)
@given(body=hostile_generation)
def test_a_hostile_generation_does_not_affect_its_batch(server: str, body: dict[str, Any]) -> None:
    show(body=body)
    raw = json.dumps(body).encode("ascii")

    def hostile(c: httpx2.AsyncClient) -> Any:
        return c.post(GEN, content=raw, headers={"content-type": "application/json"})

    def good(c: httpx2.AsyncClient, i: int) -> Any:
        return c.post(GEN, json={**GOOD_BODY, "seed": i})

    bad, goods = asyncio.run(_gather(server, hostile, good))
    for r in goods:
        assert_ok(r, size=(256, 256))
    if bad.status_code != 200:
        assert_error(bad)


@examples(22)
@given(up=hostile_images(), how=st.sampled_from(["image", "mask", "json"]))
def test_a_hostile_edit_does_not_affect_its_batch(server: str, up: Upload, how: str) -> None:
    show(up=up, how=how)
    fields = [("prompt", "a blue square"), *CHEAP.items()]

    def hostile(c: httpx2.AsyncClient) -> Any:
        if how == "json":
            body = edit_body(images=[{"image_url": data_url(up.data, up.ctype)}])
            return c.post(EDIT, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        parts = [("image", SMALL_IMAGE), ("mask", (up.filename, up.data, up.ctype))] if how == "mask" else \
            [("image", (up.filename, up.data, up.ctype))]
        return c.post(EDIT, files=[*parts, *((k, (None, v)) for k, v in fields)])

    def good(c: httpx2.AsyncClient, i: int) -> Any:
        return c.post(EDIT, files=[("image", SMALL_IMAGE), *((k, (None, v)) for k, v in fields)])

    bad, goods = asyncio.run(_gather(server, hostile, good))
    for r in goods:
        assert_ok(r, size=(256, 256))
    if bad.status_code != 200:
        assert_error(bad)


@pytest.mark.parametrize(("name", "filename"), [
    ("a 10,000-character filename", "x" * 10_000 + ".png"),
    ("a 100,000-character filename", "x" * 100_000 + ".png"),
    ("a filename with CR LF and quotes", 'a\r\nContent-Type: text/html\r\n\r\n"x".png'),
    ("an empty filename", ""),
])
def test_multipart_odd_filenames(http: httpx2.Client, name: str, filename: str) -> None:
    """May be refused (a header-size limit is fair), but as a 4xx in the envelope, never a 5xx."""
    resp = multipart(http, EDIT, [("image", (filename, SMALL_PNG, PNG)), *EDIT_FIELDS_OK])
    if resp.status_code != 200:
        assert_error(resp, status=(400, 413))


# The same property on fixed examples, so a regression reproduces without Hypothesis.
POISON = {
    "lone surrogate prompt": ({**GOOD_BODY, "prompt": "\ud800"}, "prompt"),
    "lone surrogate inside the prompt": ({**GOOD_BODY, "prompt": "a yellow \udc00 star"}, "prompt"),
    "lone surrogate negative_prompt": ({**GOOD_BODY, "negative_prompt": "\ud800"}, "negative_prompt"),
    "lone surrogate user": ({**GOOD_BODY, "user": "\ud83d"}, "user"),
    "lone surrogate model": ({**GOOD_BODY, "model": "\ud800"}, "model"),
    "lone surrogate parameter name": ({**GOOD_BODY, "\ud800": 1}, ANY),
    "n as a string": ({**GOOD_BODY, "n": "3"}, "n"),
    "n as a boolean": ({**GOOD_BODY, "n": True}, "n"),
    "empty model": ({**GOOD_BODY, "model": ""}, "model"),
    "size with a newline": ({**GOOD_BODY, "size": "256x256\n"}, "size"),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_known_poison_does_not_affect_its_batch(server: str, case: str) -> None:
    body, param = POISON[case]
    raw = json.dumps(body).encode("ascii")

    def hostile(c: httpx2.AsyncClient) -> Any:
        return c.post(GEN, content=raw, headers={"content-type": "application/json"})

    def good(c: httpx2.AsyncClient, i: int) -> Any:
        return c.post(GEN, json={**GOOD_BODY, "seed": i})

    bad, goods = asyncio.run(_gather(server, hostile, good))
    for r in goods:
        assert_ok(r, size=(256, 256))
    assert_error(bad, status=(400, 404) if param == "model" else 400, param=param)


@pytest.mark.parametrize("name", ["text named .png", "empty file", "png header 2^31-1 square", "jpeg CMYK",
                                  "png I;16 (16-bit grey)", "png 16-bit RGBA", "extreme aspect 1x4000", "animated gif",
                                  "bomb 20000x20000 (400M, over Pillow's guard)", "jpeg EXIF orientation 6"])
def test_known_hostile_images_do_not_affect_their_batch(server: str, name: str) -> None:
    up = IMAGES[name]()
    fields = [("prompt", "a blue square"), *CHEAP.items()]

    def hostile(c: httpx2.AsyncClient) -> Any:
        return c.post(EDIT, files=[("image", (up.filename, up.data, up.ctype)), *((k, (None, v)) for k, v in fields)])

    def good(c: httpx2.AsyncClient, i: int) -> Any:
        return c.post(EDIT, files=[("image", SMALL_IMAGE), *((k, (None, v)) for k, v in fields)])

    bad, goods = asyncio.run(_gather(server, hostile, good))
    for r in goods:
        assert_ok(r, size=(256, 256))
    check_upload_outcome(bad, up, "image")


@pytest.mark.parametrize("value", [b"", b"BULK", b"urgent", b"bulk\tbulk", "\u00e9".encode(), b"\xff"])
def test_bad_priority_header(http: httpx2.Client, value: bytes) -> None:
    resp = http.post(GEN, json={"prompt": "x", **CHEAP}, headers={b"x-imagegate-priority": value})
    assert_error(resp, status=400, param="x-imagegate-priority")
