"""create_app(settings): the lifespan builds the object graph (container.py) into
app.state; one handler renders every error in OpenAI's envelope."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .accounts import headers as rate_headers
from .admission import Budget
from .catalogue import Catalogue
from .container import Container, EngineFactory, catalogue_for, janitor, model_configs
from .errors import (
    ImagegateError,
    InternalError,
    Overloaded,
    PayloadTooLarge,
    from_http_status,
    render,
    validation_error,
)
from .logs import request_id as request_id_var
from .registry import ModelConfig, Registry
from .server import BodyTimeoutMiddleware, ErrorOverride
from .settings import Settings

log = logging.getLogger("imagegate")
access_log = logging.getLogger("imagegate.access")


def create_app(settings: Settings, configs: list[ModelConfig] | None = None,
               catalogue: Catalogue | None = None, engine: EngineFactory | None = None) -> FastAPI:
    """`engine`: where the models run when not in this process (ray_serve.py's ingress)."""
    configs = configs if configs is not None else model_configs(settings)
    catalogue = catalogue if catalogue is not None else catalogue_for(settings, configs)
    catalogue.check({c.name for c in configs})
    registry = Registry(configs, default=settings.default_model, allow_empty=bool(catalogue),
                        gpu_hour_usd=settings.gpu_hour_usd)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await Container.start(settings, configs, registry, catalogue, engine)
        app.state.container = container
        app.state.settings = settings
        app.state.registry = registry
        app.state.scheduler = app.state.engine = container.engine
        app.state.ledger = container.ledger
        app.state.storage = container.storage
        app.state.service = container.service
        app.state.accounts = container.accounts
        app.state.jobs, app.state.files = container.jobs, container.jobs.files
        await container.jobs.start()
        app.state.gateway = container.gateway
        # Load in the background so /health can say "loading" (503) until every model is ready.
        loader = asyncio.create_task(_load(container))
        sweeper = asyncio.create_task(janitor(container.storage, settings.janitor_interval_seconds,
                                              container.accounts, container.heartbeat))
        app.state.loader = loader
        try:
            yield
        finally:
            await container.jobs.stop()  # stop claiming; running jobs finish or go back to the queue
            sweeper.cancel()
            loader.cancel()
            # Wait for both to end before the database closes: a janitor cut off mid-query
            # left its connection behind (and once hung shutdown).
            await asyncio.gather(sweeper, loader, return_exceptions=True)
            await container.close()

    app = FastAPI(
        title="imagegate",
        version="0.1.0",
        description="A self-hosted, drop-in replacement for OpenAI's Images API.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    from .routes import admin, batches, files, health, images, metrics, models, moderations, playground, queue, usage

    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(images.router)
    app.include_router(images.content_router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(moderations.router)
    app.include_router(files.router)
    app.include_router(queue.router)
    app.include_router(batches.router)
    app.include_router(metrics.router)
    app.include_router(playground.router)
    app.state.body_budget = Budget("request bodies", settings.max_inflight_body_bytes, "bytes", trim_after=64 * 2**20)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, budget=app.state.body_budget)

    app.add_middleware(BodyTimeoutMiddleware, gap=settings.body_timeout_seconds,
                       total=settings.body_total_timeout_seconds)
    app.add_middleware(RequestContextMiddleware, behind_ray=engine is not None)
    return app


async def _load(container: Container) -> None:
    try:
        await container.load()
    except Exception:
        log.exception("model loading failed")
    # Everything alive now (modules, models, pipelines) lives as long as the process: keep
    # it out of the cyclic collector's full passes. Without this a gen-2 collection walked
    # torch's and diffusers' object graphs and stalled the event loop for 30-185 ms under
    # load (measured with bench/bench_overload.py, 2-core AMD EPYC, 2026-12-03).
    gc.collect()
    gc.freeze()


# -- errors --------------------------------------------------------------------------
async def _record_rejection(request: Request, exc: ImagegateError) -> None:
    """Every image request gets a ledger row, also those refused before the flow saw them
    (authentication, parsing, validation): the image routes open their context before
    anything else runs (routes.deps.open_context). Rows the flow wrote are not doubled."""
    ctx = getattr(request.state, "ctx", None)
    service = getattr(request.app.state, "service", None)
    if ctx is not None and service is not None and not ctx.recorded:
        await service.record_rejection(ctx, exc)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _ours(request: Request, exc: ImagegateError) -> JSONResponse:
        await _record_rejection(request, exc)
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(list(exc.errors()))
        await _record_rejection(request, err)
        return render(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = from_http_status(exc.status_code, request.method, request.url.path, str(exc.detail),
                               getattr(exc, "headers", None))
        await _record_rejection(request, err)
        return render(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "unknown")
        log.error("unhandled error on %s (%s)", request.url.path, request_id, exc_info=exc)
        err = InternalError(f"The server had an error while processing your request ({request_id}).")
        await _record_rejection(request, err)
        return render(err)


# -- middleware (plain ASGI: no BaseHTTPMiddleware, so streaming and disconnects pass through) --
class RequestContextMiddleware:
    """x-request-id on every response, Server-Timing (queue, inference, encode, total), and
    the access log, written when the response has *ended* so that a stream the client cut
    off is logged as such (uvicorn's own access log fires at the status line: `200 OK`)."""

    def __init__(self, app: ASGIApp, behind_ray: bool = False) -> None:
        self.app = app
        # Ray Serve's proxy puts its own X-Request-ID on every response (it cannot be turned
        # off, and a second header of that name would reach the SDK as "a, b"): behind it,
        # ours goes out as x-imagegate-request-id and the access log names both.
        self.id_header = b"x-imagegate-request-id" if behind_ray else b"x-request-id"
        self.behind_ray = behind_ray

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"req_{uuid.uuid4().hex}"
        proxy_id = ""
        if self.behind_ray:
            proxy_id = " " + dict(scope.get("headers") or []).get(b"x-request-id", b"-").decode("latin-1")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)  # every log line of this request carries it (logs.py)
        status = 0
        completed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, completed
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                ctx = state.get("ctx")
                timings = dict(getattr(ctx, "timings", {}) or {})
                timings["total"] = time.perf_counter() - started
                st = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in timings.items())
                headers.append((self.id_header, request_id.encode()))
                headers.append((b"server-timing", st.encode()))
                if ctx is not None and ctx.notes:
                    headers.append((b"x-imagegate-notes", "; ".join(ctx.notes).encode("ascii", "replace")))
                if ctx is not None and ctx.model:  # who served it (the gateway: core/gateway.py)
                    headers.append((b"x-imagegate-provider", (ctx.provider or "local").encode()))
                    served = ctx.served_model or ctx.model
                    headers.append((b"x-imagegate-model", served.encode("ascii", "replace")))
                    # 0 for a replay (cache hit, Idempotency-Key): no route was tried
                    tried = ctx.attempts if ctx.attempts or ctx.provider else 1
                    headers.append((b"x-imagegate-attempts", str(tried).encode()))
                    if ctx.cache:
                        headers.append((b"x-imagegate-cache", ctx.cache.encode()))
                    if ctx.replica:  # the Ray model replica that ran it (ray_serve.py)
                        headers.append((b"x-imagegate-replica", ctx.replica.encode("ascii", "replace")))
                if ctx is not None and ctx.composited:
                    headers.append((b"x-imagegate-composited", str(ctx.composited).encode()))
                if ctx is not None:  # an image route: its cost (0 for a failure) and the key's windows
                    headers.append((b"x-imagegate-cost-usd", _usd(ctx.cost_usd if status < 400 else 0.0).encode()))
                    present = {k for k, _ in headers}
                    headers += [(k.encode(), v.encode()) for k, v in rate_headers(ctx.rate_windows).items()
                                if k.encode() not in present]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            outcome = "" if completed else (" (response cut off)" if status else " (no response)")
            access_log.info('%s:%s - "%s %s" %d %.1fms %s%s', client[0], client[1], scope.get("method"),
                            scope.get("path"), status, (time.perf_counter() - started) * 1000, request_id + proxy_id,
                            outcome)
            request_id_var.reset(token)


def _usd(value: float | None) -> str:
    return f"{value or 0.0:.8f}".rstrip("0").rstrip(".") or "0"


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or by counting chunks; and
    503 + Retry-After when the bodies of requests in flight would exceed the server-wide
    budget (a body stays in memory, compressed, until its request ends)."""

    def __init__(self, app: ASGIApp, max_bytes: int, budget: Budget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"The request body exceeds the limit of {self.max_bytes} bytes.")
        declared = 0
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = max(0, int(value))
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await render(too_large)(scope, receive, send)
                    return
        if not self.budget.try_acquire(declared):
            busy = Overloaded("The server is holding too many large request bodies; try again shortly.")
            await render(busy)(scope, receive, send)
            return
        held = declared
        seen = 0
        guarded = ErrorOverride(scope, receive, send)

        async def limited_receive() -> Message:
            nonlocal seen, held
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    guarded.error = too_large
                    raise too_large
                if seen > held:  # chunked, or more than declared: count it as it arrives
                    self.budget.acquire(seen - held)
                    held = seen
            return message

        try:
            await self.app(scope, limited_receive, guarded)
        finally:
            self.budget.release(held)
