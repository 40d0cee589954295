"""Any server that speaks OpenAI's Images API: another imagegate, LocalAI, vLLM-Omni.
Generations as JSON, edits as multipart (`image[]` parts and `mask`), streams as SSE whose
events are relayed one by one. The idempotency key goes in `Idempotency-Key`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx2

from ...catalogue import Provider
from .base import (
    Call,
    Done,
    Partial,
    UpstreamBroken,
    UpstreamEvent,
    UpstreamUnavailable,
    key_header,
    raise_for_status,
    scrub,
    timeout,
    transport_error,
)


class OpenAICompatible:
    def __init__(self, provider: Provider, http: httpx2.AsyncClient) -> None:
        self.provider = provider
        self.http = http

    # The three things the OpenAI-shaped kinds differ in.
    def url(self, call: Call) -> str:
        return f"{self.provider.base_url}/images/{'edits' if call.task == 'edit' else 'generations'}"

    def headers(self, call: Call) -> dict[str, str]:
        return {**key_header(self.provider), "idempotency-key": call.idempotency_key}

    def body(self, call: Call) -> dict[str, Any]:
        params: dict[str, Any] = {"model": call.model, "prompt": call.prompt, "n": call.n,
                                  "response_format": "b64_json"}
        for k, v in (("size", call.size), ("quality", call.quality), ("output_format", call.output_format),
                     ("output_compression", call.compression), ("background", call.background)):
            if v is not None:
                params[k] = v
        if call.stream:
            params["stream"] = True
            params["partial_images"] = call.partial_images
        params.update(call.extra)
        return params

    async def call(self, call: Call) -> AsyncGenerator[UpstreamEvent, None]:
        body = self.body(call)
        kw: dict[str, Any] = {"headers": self.headers(call), "timeout": timeout(self.provider)}
        if call.task == "edit":
            files = [("image[]", (f"image{i}.png", data, "application/octet-stream"))
                     for i, data in enumerate(call.images)]
            if call.mask is not None:
                files.append(("mask", ("mask.png", call.mask, "image/png")))
            kw["files"] = files
            kw["data"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        else:
            kw["json"] = body
        started = False
        try:
            async with self.http.stream("POST", self.url(call), **kw) as response:
                await raise_for_status(self.provider, response)
                started = True
                if call.stream and response.headers.get("content-type", "").startswith("text/event-stream"):
                    async for ev in self._events(response):
                        yield ev
                    return
                raw = await response.aread()
        except httpx2.HTTPError as exc:
            raise transport_error(self.provider, exc, started=started) from None
        yield self._done(raw)

    def _done(self, raw: bytes) -> Done:
        try:
            data = json.loads(raw)
            images = tuple(_b64(item["b64_json"]) for item in data["data"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamBroken(f"{self.provider.name}: malformed response ({type(exc).__name__})") from None
        if not images:
            raise UpstreamBroken(f"{self.provider.name}: the response has no images")
        return Done(images=images, size=_str(data.get("size")), quality=_str(data.get("quality")),
                    output_format=_str(data.get("output_format")), usage=_dict(data.get("usage")))

    async def _events(self, response: httpx2.Response) -> AsyncGenerator[UpstreamEvent, None]:
        """OpenAI's image stream: partial_image events, then one completed event per image."""
        done: list[bytes] = []
        usage: dict[str, Any] | None = None
        last: dict[str, Any] = {}
        async for payload in sse_data(response):
            try:
                event = json.loads(payload)
            except ValueError:
                raise UpstreamBroken(f"{self.provider.name}: malformed stream event") from None
            if not isinstance(event, dict):
                raise UpstreamBroken(f"{self.provider.name}: malformed stream event")
            if "error" in event:
                err = event["error"] if isinstance(event["error"], dict) else {}
                said = scrub(self.provider, str(err.get("message", ""))[:300])
                message = f"{self.provider.name}: failed mid-stream: {said}"
                if not done:  # an upstream that says it failed before any image made none
                    raise UpstreamUnavailable(message)
                raise UpstreamBroken(message)
            kind = str(event.get("type", ""))
            try:
                if kind.endswith(".partial_image"):
                    yield Partial(b64_json=str(event["b64_json"]), partial_index=int(event["partial_image_index"]),
                                  image_index=len(done))
                elif kind.endswith(".completed"):
                    done.append(_b64(event["b64_json"]))
                    usage = _add_usage(usage, _dict(event.get("usage")))
                    last = event
            except (KeyError, TypeError, ValueError):
                raise UpstreamBroken(f"{self.provider.name}: malformed stream event") from None
        if not done:
            raise UpstreamBroken(f"{self.provider.name}: the stream ended without an image")
        yield Done(images=tuple(done), size=_str(last.get("size")), quality=_str(last.get("quality")),
                   output_format=_str(last.get("output_format")), usage=usage)


async def sse_data(response: httpx2.Response) -> AsyncGenerator[str, None]:
    """The `data:` payloads of a server-sent event stream, one per event."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].lstrip(" "))
    if lines:
        yield "\n".join(lines)


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("b64_json is not base64") from None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v != "auto" else None


def _dict(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def _add_usage(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-image usage of stream events summed into the request's."""
    if b is None:
        return a
    if a is None:
        return json.loads(json.dumps(b))  # type: ignore[no-any-return]
    for k in ("total_tokens", "input_tokens", "output_tokens"):
        if isinstance(b.get(k), int):
            a[k] = int(a.get(k, 0)) + b[k]
    return a
