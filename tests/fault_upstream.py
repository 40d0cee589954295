"""A fake upstream provider for the gateway's tests — a fake at the edge, named as such.

A raw asyncio HTTP/1.1 server on 127.0.0.1 (so it can misbehave the way real networks do:
hang, reset mid-stream, send malformed JSON). Each request to the Images API takes the next
behaviour from `script` (then `default`), and is recorded with its headers and body.
It also speaks a fal-queue-shaped API (submit, status, result, image download)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from conftest import free_port


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, fmt)
    return buf.getvalue()


USAGE = {"total_tokens": 282, "input_tokens": 10, "output_tokens": 272,
         "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}}


@dataclass
class FaultServer:
    script: list[str] = field(default_factory=list)
    default: str = "ok"
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    fal_polls: int = 1  # IN_QUEUE answers before COMPLETED
    fal_result: str = "ok"  # ok | error
    usage: bool = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def images_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v1/images")]

    # -- the server ---------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, path, headers, body))
                if not await self._answer(method, path, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter) -> bool:
        if path.startswith("/fal"):
            return await self._fal(method, path, body, w)
        what = self.script.pop(0) if self.script else self.default
        params = _params(body)
        size = str(params.get("size") or "256x256")
        width, height = (int(v) for v in size.split("x"))
        if what == "hang":
            await asyncio.sleep(3600)
            return False
        if what.startswith("429"):
            _, _, after = what.partition(":")
            self._send(w, 429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
                       {"retry-after": after or "1"})
            return True
        if what == "500":
            self._send(w, 500, {"error": {"message": "upstream exploded", "type": "server_error", "code": None}})
            return True
        if what == "500-echo":  # a careless upstream that quotes the credentials it was sent
            said = f"bad credentials {self.seen[-1].headers.get('authorization')}"
            self._send(w, 500, {"error": {"message": said, "type": "server_error", "code": None}})
            return True
        if what == "400":
            self._send(w, 400, {"error": {"message": "Invalid size from upstream.", "type": "invalid_request_error",
                                          "param": "size", "code": "invalid_size"}})
            return True
        if what == "malformed":
            raw = b"{not json"
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(raw) + raw)
            await w.drain()
            return True
        n = int(params.get("n") or 1)
        fmt = str(params.get("output_format") or "png")
        image = base64.b64encode(png(width, height, fmt={"jpeg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG"))).decode()
        if what in ("stream", "reset") and params.get("stream"):
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            partial = {"type": "image_generation.partial_image", "b64_json": image, "partial_image_index": 0,
                       "size": size, "quality": "low", "background": "opaque", "output_format": fmt, "created_at": 1}
            _chunk(w, f"event: image_generation.partial_image\ndata: {json.dumps(partial)}\n\n".encode())
            await w.drain()
            if what == "reset":
                await asyncio.sleep(0.05)
                w.transport.abort()
                return False
            for _ in range(n):
                done = {**partial, "type": "image_generation.completed", "usage": USAGE}
                del done["partial_image_index"]
                _chunk(w, f"event: image_generation.completed\ndata: {json.dumps(done)}\n\n".encode())
            _chunk(w, b"")
            await w.drain()
            return True
        answer: dict[str, Any] = {"created": 1, "data": [{"b64_json": image}] * n, "size": size, "quality": "low",
                                  "output_format": fmt}
        if self.usage:
            answer["usage"] = USAGE
        self._send(w, 200, answer)
        return True

    async def _fal(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter) -> bool:
        if path.startswith("/fal/img/"):
            w_, h_ = (int(v) for v in path.rsplit("/", 1)[1].split(".")[0].split("x"))
            raw = png(w_, h_)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: %d\r\n\r\n" % len(raw) + raw)
            await w.drain()
            return True
        if method == "POST":
            what = self.script.pop(0) if self.script else self.default
            if what == "500":
                self._send(w, 500, {"detail": "queue down"})
                return True
            self._submitted = json.loads(body)
            self._polls = 0
            self._send(w, 200, {"request_id": "r1", "status_url": f"{self.base}/fal/requests/r1/status",
                                "response_url": f"{self.base}/fal/requests/r1", "cancel_url": "x"})
            return True
        if path.endswith("/status"):
            self._polls += 1
            state = "IN_QUEUE" if self._polls <= self.fal_polls else "COMPLETED"
            self._send(w, 200, {"status": state, "queue_position": 0})
            return True
        if self.fal_result == "error":
            self._send(w, 422, {"detail": "the model refused the prompt"})
            return True
        size = self._submitted.get("image_size", {"width": 256, "height": 256})
        # The image lives on another host name (a CDN): the key must not go there.
        url = f"http://localhost:{self.port}/fal/img/{size['width']}x{size['height']}.png"
        self._send(w, 200, {"images": [{"url": url, "content_type": "image/png"}] * int(self._submitted["num_images"]),
                            "seed": 1})
        return True

    @staticmethod
    def _send(w: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(raw)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        w.write(head.encode() + b"\r\n" + raw)


def _chunk(w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(b"%x\r\n" % len(data) + data + b"\r\n")


def _params(body: bytes) -> dict[str, Any]:
    try:
        out = json.loads(body)
        return out if isinstance(out, dict) else {}
    except ValueError:  # a multipart edit: the fields we need, crudely
        out = {}
        for part in body.split(b"--"):
            if b'name="' in part and b"filename" not in part:
                name = part.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
                out[name] = part.split(b"\r\n\r\n", 1)[-1].rstrip(b"\r\n").decode(errors="replace")
        return out


@contextlib.contextmanager
def fault_server(**kw: Any) -> Iterator[FaultServer]:
    fs = FaultServer(port=free_port(), **kw)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        server = await asyncio.start_server(fs._handle, "127.0.0.1", fs.port)
        started.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        asyncio.set_event_loop(loop)
        tasks.append(loop.create_task(main()))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(tasks[0])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield fs
    finally:
        loop.call_soon_threadsafe(tasks[0].cancel)
        thread.join(timeout=5)
