"""Shared route plumbing: authentication, the request context, disconnect handling,
and turning service results into responses."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import AuthenticationFailed, Cancelled, InvalidRequest
from ..protocol import ImagesResponse
from ..service import ImageService, RequestContext, hash_key

T = TypeVar("T")


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    token = _bearer(request)
    request.state.api_key = token
    if not keys:
        return
    if token is None:
        raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.")
    if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise AuthenticationFailed("Incorrect API key provided.")


def context(request: Request, endpoint: str) -> RequestContext:
    ctx = RequestContext(
        request_id=request.state.request_id,
        endpoint=endpoint,
        base_url=str(request.base_url),
        api_key=hash_key(getattr(request.state, "api_key", None)),
    )
    priority = request.headers.get("x-imagegate-priority", "interactive")
    if priority not in ("interactive", "bulk"):
        raise InvalidRequest("x-imagegate-priority must be 'interactive' or 'bulk'.", param="x-imagegate-priority")
    ctx.priority = priority
    request.state.ctx = ctx
    return ctx


def service(request: Request) -> ImageService:
    svc: ImageService = request.app.state.service
    return svc


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first (the job stops at its next step)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # the server cancelled this handler: the work goes with it
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise Cancelled("The client closed the connection.")


def respond(result: ImagesResponse | AsyncIterator[str]) -> Any:
    if isinstance(result, ImagesResponse):
        return JSONResponse(result.model_dump(exclude_none=True))
    return StreamingResponse(
        result, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
