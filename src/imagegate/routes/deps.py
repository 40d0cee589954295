"""Shared route plumbing: authentication, the request context, and the two thin consumers
of the flow's events: the JSON response and the SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..accounts import Accounts, Principal
from ..core.events import Accepted, Completed, Event, Failed, PartialImage
from ..core.request import ImageRequest, RequestContext, hash_key
from ..core.service import ImageService
from ..errors import AuthenticationFailed, Cancelled, Forbidden, ImagegateError, InvalidRequest
from ..protocol import CompletedEvent, ImagesResponse, PartialImageEvent

T = TypeVar("T")


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def accounts(request: Request) -> Accounts:
    acc: Accounts = request.app.state.accounts
    return acc


async def require_api_key(request: Request) -> Principal | None:
    """The caller's key (a database key or a static one), or None while no key exists at
    all; 401 otherwise. The admin key alone does not make image requests."""
    token = bearer(request)
    ctx: RequestContext | None = getattr(request.state, "ctx", None)
    if ctx is None:
        principal = await accounts(request).keys.authenticate(token)
    else:
        with ctx.timed("accounts"):
            principal = await accounts(request).keys.authenticate(token)
        ctx.principal = principal
    request.state.principal = principal
    return principal


@dataclass(frozen=True)
class Viewer:
    """Who reads usage: the admin (everything) or a key (its own)."""

    admin: bool
    principal: Principal | None


async def require_viewer(request: Request) -> Viewer:
    """The admin key, or any valid key (which then sees only its own usage)."""
    acc = accounts(request)
    token = bearer(request)
    if acc.is_admin(token):
        return Viewer(admin=True, principal=None)
    principal = await acc.keys.authenticate(token)
    if principal is None:  # an open server (no keys at all): everyone sees everything
        return Viewer(admin=True, principal=None)
    return Viewer(admin=False, principal=principal)


async def require_admin(request: Request) -> None:
    """The admin API takes the admin key only (IMAGEGATE_ADMIN_KEY); with none set it is off."""
    acc = accounts(request)
    token = bearer(request)
    if not request.app.state.settings.admin_key:
        raise Forbidden("The admin API is off: set IMAGEGATE_ADMIN_KEY to use it.", code="admin_disabled")
    if token is None:
        raise AuthenticationFailed("You didn't provide the admin key. Send it as 'Authorization: Bearer KEY'.")
    if not acc.is_admin(token):
        raise AuthenticationFailed("Incorrect admin key provided.")


async def open_context(request: Request) -> None:
    """The request's context, opened before authentication so that every outcome of an
    image route (401s included) is recorded under the route's name (`images.edits`)."""
    route = request.scope.get("route")
    request.state.ctx = RequestContext(
        request_id=request.state.request_id,
        endpoint=getattr(route, "name", None) or request.url.path,
        base_url=str(request.base_url),
        api_key=hash_key(bearer(request)),
    )


def context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    priority = request.headers.get("x-imagegate-priority", "interactive")
    if priority not in ("interactive", "bulk"):
        raise InvalidRequest("x-imagegate-priority must be 'interactive' or 'bulk'.", param="x-imagegate-priority")
    ctx.priority = priority
    return ctx


def service(request: Request) -> ImageService:
    svc: ImageService = request.app.state.service
    return svc


async def answer(request: Request, req: ImageRequest, ctx: RequestContext) -> Any:
    """Run the flow and answer with its events: a JSON body, or an SSE stream that starts
    once the request is accepted (so a bad request or a full queue is a plain error)."""
    gateway = request.app.state.gateway
    if request.query_params.get("dry_run", "").lower() in ("true", "1"):
        return JSONResponse(await until_disconnect(request, gateway.dry_run(req, ctx)))
    ctx.idempotency_key = request.headers.get("idempotency-key") or None
    events = gateway.run(req, ctx)
    try:
        first = await until_disconnect(request, anext(events))
    except BaseException:
        await events.aclose()
        raise
    assert isinstance(first, Accepted)
    if req.stream:
        return StreamingResponse(_sse(events, first, req), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
    body = await until_disconnect(request, _json(events))
    return JSONResponse(body.model_dump(exclude_none=True))


async def _json(events: AsyncGenerator[Event, None]) -> ImagesResponse:
    async with contextlib.aclosing(events):
        async for ev in events:
            if isinstance(ev, Failed):
                raise ev.error
            if isinstance(ev, Completed):
                s = ev.spec
                return ImagesResponse(created=int(time.time()), data=list(ev.data), background=s.background,
                                      output_format=s.output_format,
                                      size=s.size, quality=s.quality, usage=ev.usage)
    raise AssertionError("the flow ended without a result")


async def _sse(events: AsyncGenerator[Event, None], accepted: Accepted, req: ImageRequest) -> AsyncIterator[str]:
    """OpenAI's stream: partial images, then one completed event per image, echoing the
    *requested* values; a failure is sent in-band as `data: {"error": ...}`."""
    prefix = "image_edit" if req.task == "edit" else "image_generation"
    r = accepted.spec.requested
    common = dict(size=r.size, quality=r.quality, background=r.background, output_format=r.output_format)
    async with contextlib.aclosing(events):
        async for ev in events:
            if isinstance(ev, PartialImage):
                part = PartialImageEvent(type=f"{prefix}.partial_image", b64_json=ev.b64_json,
                                         created_at=int(time.time()), partial_image_index=ev.partial_index, **common)
                yield _event(part.type, part.model_dump())
            elif isinstance(ev, Completed):
                for image in ev.data:  # streams always carry the image itself (the service sees to it)
                    done = CompletedEvent(type=f"{prefix}.completed", b64_json=image.b64_json or "",
                                          created_at=int(time.time()), usage=ev.usage_per_image, **common)
                    yield _event(done.type, done.model_dump(exclude_none=True))
            elif isinstance(ev, Failed):
                yield _event(None, ev.error.body())


def _event(name: str | None, payload: dict[str, Any]) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n"


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
    with contextlib.suppress(asyncio.CancelledError, ImagegateError, Exception):
        await task
    raise Cancelled("The client closed the connection.")
