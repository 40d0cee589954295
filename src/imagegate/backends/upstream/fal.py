"""fal's queue API: submit (POST {base}/{app}) → {request_id, status_url, response_url};
poll the status until COMPLETED (IN_QUEUE / IN_PROGRESS before it); fetch the result, whose
images are URLs we download. fal's argument names: image_size {width, height},
num_images, output_format (png | jpeg), seed, negative_prompt, num_inference_steps,
guidance_scale; edits send image_url / mask_url as data URLs. The key goes as
`Authorization: Key ...`, and only to fal's own host, never to image URLs elsewhere.

Failover: a submit refused (connection, 429, 5xx) or a job that completed with an error
made nothing; once a job is queued, any other failure may have made (and billed) images."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx2

from ...catalogue import Provider
from .base import (
    Call,
    Done,
    UpstreamBroken,
    UpstreamEvent,
    UpstreamUnavailable,
    key_header,
    raise_for_status,
    scrub,
    timeout,
    transport_error,
)

POLL_S = 0.5


class FalQueue:
    def __init__(self, provider: Provider, http: httpx2.AsyncClient) -> None:
        self.provider = provider
        self.http = http
        self.host = urlsplit(provider.base_url).netloc

    def _auth(self, url: str) -> dict[str, str]:
        return key_header(self.provider, scheme="Key") if urlsplit(url).netloc == self.host else {}

    def body(self, call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"prompt": call.prompt, "num_images": call.n}
        if call.size:
            w, _, h = call.size.partition("x")
            args["image_size"] = {"width": int(w), "height": int(h)}
        if call.output_format:
            args["output_format"] = call.output_format
        if call.images:
            args["image_url"] = _data_url(call.images[0])
        if call.mask is not None:
            args["mask_url"] = _data_url(call.mask)
        args.update(call.extra)
        return args

    async def call(self, call: Call) -> AsyncGenerator[UpstreamEvent, None]:
        p = self.provider
        url = f"{p.base_url}/{call.model}"
        try:
            r = await self.http.post(url, json=self.body(call), headers=self._auth(url), timeout=timeout(p))
        except httpx2.HTTPError as exc:
            raise transport_error(p, exc, started=False) from None
        await raise_for_status(p, r)
        try:
            sub = r.json()
            status_url, response_url = str(sub["status_url"]), str(sub["response_url"])
        except (ValueError, KeyError, TypeError):
            raise UpstreamBroken(f"{p.name}: malformed queue submission answer") from None
        # From here the job exists: failures are not proof that it made nothing.
        try:
            while True:
                s = await self.http.get(status_url, headers=self._auth(status_url), timeout=timeout(p))
                if s.status_code >= 400:
                    raise UpstreamBroken(f"{p.name}: status poll failed with HTTP {s.status_code}")
                state = s.json().get("status")
                if state == "COMPLETED":
                    break
                if state not in ("IN_QUEUE", "IN_PROGRESS"):
                    raise UpstreamBroken(f"{p.name}: unknown queue status {str(state)[:40]!r}")
                await asyncio.sleep(POLL_S)
            res = await self.http.get(response_url, headers=self._auth(response_url), timeout=timeout(p))
            result = res.json()
            if res.status_code >= 400 or (isinstance(result, dict) and result.get("error")):
                # fal reports a failed job as COMPLETED with an error: it made no image.
                detail = result.get("detail") or result.get("error") if isinstance(result, dict) else None
                raise UpstreamUnavailable(f"{p.name}: the job failed: {scrub(p, str(detail)[:300])}",
                                          status=res.status_code)
            images = tuple([await self._fetch(str(img["url"])) for img in result["images"]])
        except httpx2.HTTPError as exc:
            raise transport_error(p, exc, started=True) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamBroken(f"{p.name}: malformed queue result") from None
        if not images:
            raise UpstreamBroken(f"{p.name}: the result has no images")
        yield Done(images=images, size=call.size, output_format=call.output_format)

    async def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        r = await self.http.get(url, headers=self._auth(url), timeout=timeout(self.provider))
        if r.status_code >= 400:
            raise UpstreamBroken(f"{self.provider.name}: image download failed with HTTP {r.status_code}")
        return r.content


def _data_url(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")


__all__ = ["FalQueue"]
