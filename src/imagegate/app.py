"""create_app(settings): the lifespan builds registry, backends, scheduler, storage and
the ledger into app.state; one handler renders every error in OpenAI's envelope."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admission import Budget
from .backends.diffusers import DiffusersBackend
from .db import Ledger
from .errors import ImagegateError, Overloaded, PayloadTooLarge, validation_error
from .registry import ModelConfig, Registry, builtin_mini_config, load_models_file
from .scheduler import ModelWorker, Scheduler
from .service import ImageService
from .settings import Settings
from .storage import Storage, load_or_create_secret

log = logging.getLogger("imagegate")
access_log = logging.getLogger("imagegate.access")


def model_configs(settings: Settings) -> list[ModelConfig]:
    if settings.models_file is not None:
        return load_models_file(settings.models_file)
    return [builtin_mini_config()]


def create_app(settings: Settings, configs: list[ModelConfig] | None = None) -> FastAPI:
    configs = configs if configs is not None else model_configs(settings)
    registry = Registry(configs, default=settings.default_model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import torch

        cores = os.cpu_count() or 1
        torch.set_num_threads(settings.torch_threads or cores)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(settings.resolved_database_url)
        await ledger.start()
        interrupted = await ledger.mark_interrupted()
        if interrupted:
            log.warning("%d request(s) were still running when the server last stopped: marked interrupted", interrupted)
        storage = Storage(settings.data_dir / "images", load_or_create_secret(settings.data_dir / "url-signing.key"),
                          settings.url_ttl_seconds)
        workers = {c.name: ModelWorker(_backend_for(c), settings.queue_size, c.max_batch_images) for c in configs}
        budget = int(settings.memory_budget_gb * 2**30) if settings.memory_budget_gb else None
        scheduler = Scheduler(workers, budget)
        for w in workers.values():
            # The family detected at load fills the presets the models file left out.
            w.on_loaded = lambda backend: registry.update(backend.config)
        pool = ThreadPoolExecutor(max_workers=settings.encode_workers or cores, thread_name_prefix="encode")
        app.state.settings = settings
        app.state.registry = registry
        app.state.scheduler = scheduler
        app.state.ledger = ledger
        app.state.storage = storage
        app.state.service = ImageService(settings, registry, scheduler, storage, ledger, pool)
        # Load in the background so /health can say "loading" (503) until every model is ready.
        loader = asyncio.create_task(_load(scheduler))
        janitor = asyncio.create_task(_janitor(storage, settings.janitor_interval_seconds))
        app.state.loader = loader
        try:
            yield
        finally:
            janitor.cancel()
            loader.cancel()
            scheduler.shutdown()
            pool.shutdown(wait=False, cancel_futures=True)
            await ledger.close()

    app = FastAPI(
        title="imagegate",
        version="0.1.0",
        description="A self-hosted, drop-in replacement for OpenAI's Images API.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    from .routes import health, images, models

    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(images.content_router)
    app.include_router(models.router)
    app.state.body_budget = Budget("request bodies", settings.max_inflight_body_bytes, "bytes", trim_after=64 * 2**20)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, budget=app.state.body_budget)
    from .server import BodyTimeoutMiddleware

    app.add_middleware(BodyTimeoutMiddleware, gap=settings.body_timeout_seconds, total=settings.body_total_timeout_seconds)
    app.add_middleware(RequestContextMiddleware)
    return app


def _backend_for(config: ModelConfig) -> DiffusersBackend:
    if config.backend != "diffusers":
        raise ValueError(f"model {config.name!r}: unknown backend {config.backend!r}")
    return DiffusersBackend(config)


async def _load(scheduler: Scheduler) -> None:
    try:
        await scheduler.load_all()
    except Exception:  # noqa: BLE001 - /health reports it; `serve` checks it at start-up
        log.exception("model loading failed")
    # Everything alive now (modules, models, pipelines) lives as long as the process: keep
    # it out of the cyclic collector's full passes. Without this a gen-2 collection walked
    # torch's and diffusers' object graphs and stalled the event loop for 30-185 ms under
    # load (measured with bench/bench_overload.py, 2-core Xeon, 2026-12-03).
    gc.collect()
    gc.freeze()


async def _janitor(storage: Storage, interval: float) -> None:
    while True:
        try:
            removed = await asyncio.to_thread(storage.sweep)
            if removed:
                log.info("janitor removed %d expired images", removed)
        except Exception:  # noqa: BLE001 - keep sweeping
            log.exception("janitor failed")
        await asyncio.sleep(interval)


# -- errors --------------------------------------------------------------------------
def _error_response(exc: ImagegateError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _record_rejection(request: Request, exc: ImagegateError) -> None:
    """Every /v1/images request gets a ledger row, also those refused before the service
    saw them (authentication, parsing, validation). Rows the service wrote are not doubled."""
    path = request.url.path
    service = getattr(request.app.state, "service", None)
    if service is None or not path.startswith("/v1/images/") or path.startswith("/v1/images/content"):
        return
    from .routes.deps import _bearer
    from .service import RequestContext, hash_key

    ctx = getattr(request.state, "ctx", None)
    if ctx is None:
        endpoint = "images." + path.rstrip("/").rsplit("/", 1)[-1]
        ctx = RequestContext(request_id=request.state.request_id, endpoint=endpoint, base_url=str(request.base_url),
                             api_key=hash_key(_bearer(request)))
    if not ctx.recorded:
        await service.record_rejection(ctx, exc)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _ours(request: Request, exc: ImagegateError) -> JSONResponse:
        await _record_rejection(request, exc)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(list(exc.errors()))
        await _record_rejection(request, err)
        return _error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: ("not_found", f"Unknown path: {request.method} {request.url.path}"),
                 405: ("method_not_allowed", f"Method {request.method} is not allowed on {request.url.path}")}
        code, msg = kinds.get(exc.status_code, (None, str(exc.detail)))
        body = {"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": code}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        body = {"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                          "param": None, "code": None}}
        return JSONResponse(body, status_code=500)


# -- middleware (plain ASGI: no BaseHTTPMiddleware, so streaming and disconnects pass through) --
class RequestContextMiddleware:
    """x-request-id on every response, Server-Timing (queue, inference, encode, total), and
    the access log, written when the response has *ended* so that a stream the client cut
    off is logged as such (uvicorn's own access log fires at the status line: `200 OK`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"req_{uuid.uuid4().hex}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
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
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"server-timing", st.encode()))
                if ctx is not None and ctx.notes:
                    headers.append((b"x-imagegate-notes", "; ".join(ctx.notes).encode("ascii", "replace")))
                if ctx is not None and ctx.composited:
                    headers.append((b"x-imagegate-composited", str(ctx.composited).encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            outcome = "" if completed else (" (response cut off)" if status else " (no response)")
            access_log.info('%s:%s - "%s %s" %d %.1fms %s%s', client[0], client[1], scope.get("method"),
                            scope.get("path"), status, (time.perf_counter() - started) * 1000, request_id, outcome)


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
                    await _error_response(too_large)(scope, receive, send)
                    return
        if not self.budget.try_acquire(declared):
            busy = Overloaded("The server is holding too many large request bodies; try again shortly.")
            await _error_response(busy)(scope, receive, send)
            return
        held = declared
        seen = 0
        exceeded = started = replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded, held
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise too_large
                if seen > held:  # chunked, or more than declared: count it as it arrives
                    self.budget.acquire(seen - held)
                    held = seen
            return message

        async def guarded_send(message: Message) -> None:
            # Whoever turns the raised error into a response, the client gets the 413:
            # FastAPI answers any failed JSON body read with its own 400 ("There was an
            # error parsing the body"), so a chunked body over the limit was a 400.
            nonlocal started, replaced
            if exceeded and not started:
                started = replaced = True
                await _error_response(too_large)(scope, receive, send)
                return
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            self.budget.release(held)
