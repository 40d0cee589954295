"""The HTTP server around the app: uvicorn's options built from Settings (`imagegate serve`
and the tests share them), and the connection timeouts uvicorn lacks.

What bounds a connection, from accept to close:

- the request head (request line and headers): `header_timeout_seconds`, from the
  connection's opening, or from the first byte of a later request on a kept-alive one, to
  the end of its headers; on expiry the connection is closed. uvicorn has no such timer (a
  client that connects and sends nothing, or half a header line, is held forever), so the
  two protocol classes below add one.
- the request body: `body_timeout_seconds` between chunks and `body_total_timeout_seconds`
  in all, while the app reads it (`BodyTimeoutMiddleware`: 408 in OpenAI's envelope).
  A body the app never read (an early 413) is drained for at most `body_timeout_seconds`
  after the response, then the connection is closed: uvicorn cancels its keep-alive timer
  on *any* incoming byte, so a trickled rest of a refused body held the connection forever.
- idle between requests: `keep_alive_timeout_seconds` (uvicorn's `timeout_keep_alive`).
- how many: `max_connections` (uvicorn's `limit_concurrency`), answered with 503 +
  Retry-After in OpenAI's envelope rather than uvicorn's plain-text 503.

The protocol classes hook uvicorn internals (`on_message_begin`, `on_headers_complete`,
`handle_events`, `on_response_complete`, `cycle`), stable since uvicorn 0.2x; the tests
run every timeout against both implementations on a real socket.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.h11_impl import RequestResponseCycle as H11Cycle

from .errors import ImagegateError, Overloaded, RequestTimeout, render
from .logs import apply_format
from .settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as HttpToolsCycle
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger("imagegate")


def uvicorn_options(settings: Settings, *, http: str = "auto") -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run(app, **...)` or `uvicorn.Config(app, **...)`.
    `http`: "auto" (httptools where installed, else h11), "httptools" or "h11"."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": protocol_class(
            header_timeout=settings.header_timeout_seconds, drain_timeout=settings.body_timeout_seconds, kind=http),
        "ws": "none",  # no WebSocket routes: never switch protocols
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "limit_concurrency": settings.max_connections,
        # Our access log (app.RequestContextMiddleware) is written when a response ends, so a
        # cut-off stream reads as such; uvicorn's fires at the status line ("200 OK").
        "access_log": False,
        "log_config": log_config(settings.log_level, settings.log_format),
    }


def log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """uvicorn's logging set-up plus the `imagegate` loggers (service, scheduler, access) on
    the same handler; without this they fall to Python's last-resort handler (warnings only).
    `fmt` "json": one JSON object a line, with the request id (logs.py)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["imagegate"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return apply_format(config, fmt)


def build_config(settings: Settings, app: ASGIApp, *, http: str = "auto", **overrides: Any) -> uvicorn.Config:
    """The `uvicorn.Config` for `app` (overrides: any other uvicorn option, e.g. log_level)."""
    return uvicorn.Config(app, **{**uvicorn_options(settings, http=http), **overrides})


def protocol_class(*, header_timeout: float, drain_timeout: float, kind: str = "auto") -> type[asyncio.Protocol]:
    base: type[asyncio.Protocol]
    if kind == "h11" or (kind == "auto" and HttpToolsProtocol is None):
        base = TimedH11Protocol
    elif kind in ("httptools", "auto"):
        if HttpToolsProtocol is None:  # pragma: no cover
            raise ValueError("http='httptools' needs the httptools package")
        base = TimedHttpToolsProtocol
    else:
        raise ValueError(f"unknown HTTP implementation {kind!r}: use auto, httptools or h11")
    # uvicorn builds one protocol per connection from a class and its own arguments: the
    # timeouts travel as class attributes of a subclass made for these settings.
    return type(base.__name__, (base,), {"header_timeout": header_timeout, "drain_timeout": drain_timeout})


# -- the request-head timer and the drain timer, shared by both protocols ----------------
class _Timers:
    """Two deadlines uvicorn does not keep. Neither is reset by incoming bytes:
    head: armed when a request head is awaited or begins, cancelled when it is complete.
    drain: armed when a response is sent before its request body was read to the end,
    cancelled when the next request head is complete."""

    header_timeout: float = 10.0
    drain_timeout: float = 30.0
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _head_timer: asyncio.TimerHandle | None = None
    _drain_timer: asyncio.TimerHandle | None = None

    # What both protocols share: uvicorn's concurrency cap answered by _limited, and the
    # head timer armed for the first request of a connection.
    limit_concurrency: int | None
    connections: set[Any]
    tasks: set[Any]
    app: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit, self.limit_concurrency = self.limit_concurrency, None
        self.app = _limited(self.app, limit, self.connections, self.tasks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # the protocol class after us in the MRO
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_complete()
        super().connection_lost(exc)  # type: ignore[misc]  # the protocol class after us in the MRO

    def _arm_head(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _arm_drain(self) -> None:
        if self._drain_timer is None and not self.transport.is_closing():
            self._drain_timer = self.loop.call_later(self.drain_timeout, self._expire)

    def _head_complete(self) -> None:
        for timer in (self._head_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._drain_timer = None

    def _expire(self) -> None:
        self._head_timer = self._drain_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _limited(app: Any, limit: int | None, connections: set[Any], tasks: set[Any]) -> Any:
    """uvicorn's `limit_concurrency` check, answered in OpenAI's envelope with Retry-After
    (the SDK retries 503 honouring it). Runs inside the request's task, so that task and this
    connection are already counted: more than `limit` of either is one too many."""
    if limit is None:
        return app

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (len(connections) > limit or len(tasks) > limit):
            log.warning("connection limit reached (%d open, %d requests, limit %d): 503", len(connections),
                        len(tasks), limit)
            busy = Overloaded("The server has too many open connections; try again shortly.")
            headers = {"connection": "close"}
            await render(busy, headers)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


class TimedH11Protocol(_Timers, H11Protocol):
    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._head_complete()
        elif self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm_head()  # the next request has begun on a kept-alive connection

    def on_response_complete(self) -> None:
        # uvicorn annotates `cycle` as always set, but it is None until a request arrives.
        cycle: H11Cycle | None = self.cycle
        super().on_response_complete()
        if cycle is not None and cycle.more_body:
            self._arm_drain()


if HttpToolsProtocol is not None:

    class TimedHttpToolsProtocol(_Timers, HttpToolsProtocol):
        _in_head = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            cycle: HttpToolsCycle | None = self.cycle  # None before the first request (see above)
            if cycle is None or cycle.response_complete:
                self._arm_head()
            # else: pipelined behind a running request; timed from that response's end

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_complete()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            cycle: HttpToolsCycle | None = self.cycle  # None before the first request (see above)
            super().on_response_complete()
            if self._in_head:
                self._arm_head()
            if cycle is not None and cycle.more_body:
                self._arm_drain()

else:  # pragma: no cover
    TimedHttpToolsProtocol = None  # type: ignore[assignment,misc]


class ErrorOverride:
    """A `send` for middleware that fails a request while the app reads its body: once
    `error` is set, the client gets that error (if no response has started) whoever turns
    the raised exception into a response (FastAPI makes any failed body read its own 400),
    and the app's own messages after it are dropped."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str] | None = None) -> None:
        self.scope, self.receive, self.send, self.headers = scope, receive, send, headers
        self.error: ImagegateError | None = None
        self.started = self.replaced = False

    async def __call__(self, message: Message) -> None:
        if self.error is not None and not self.started:
            self.started = self.replaced = True
            await render(self.error, self.headers)(self.scope, self.receive, self.send)
            return
        if self.replaced:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


# -- the body timer -------------------------------------------------------------------------
class BodyTimeoutMiddleware:
    """408 `request_timeout` when a request body stalls: no chunk for `gap` seconds, or not
    complete `total` seconds after the app began reading it. Only the body is timed: once a
    message with `more_body: false` (or a disconnect) has arrived, receive() is passed
    through untouched, so waiting for `http.disconnect` during a long generation never times
    out. The 408 carries `connection: close` (the rest of the body is never read)."""

    def __init__(self, app: ASGIApp, gap: float, total: float) -> None:
        self.app = app
        self.gap = gap
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        reading = True
        guarded = ErrorOverride(scope, receive, send, {"connection": "close"})

        async def timed_receive() -> Message:
            nonlocal deadline, reading
            if not reading:
                return await receive()
            now = loop.time()
            if deadline is None:
                deadline = now + self.total
            wait = min(self.gap, deadline - now)
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                reading = False
                if wait < self.gap:
                    error = RequestTimeout(f"The request body was not complete within {self.total:g} seconds.")
                else:
                    error = RequestTimeout(f"The request body stalled: no data for {self.gap:g} seconds.")
                guarded.error = error
                raise error from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                reading = False
            return message

        await self.app(scope, timed_receive, guarded)
