"""create_app(settings): the lifespan builds registry, backends, scheduler, storage and
the ledger into app.state; one handler renders every error in OpenAI's envelope."""

from __future__ import annotations

import asyncio
import contextlib
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

from .backends.diffusers import DiffusersBackend
from .db import Ledger
from .errors import ImagegateError, InvalidRequest, PayloadTooLarge
from .registry import ModelConfig, Registry, builtin_mini_config, load_models_file
from .scheduler import ModelWorker, Scheduler
from .service import ImageService
from .settings import Settings
from .storage import Storage, load_or_create_secret

log = logging.getLogger("imagegate")


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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
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


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_error(errors: list[dict[str, Any]]) -> InvalidRequest:
    first = errors[0]
    param = _param_from_loc(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if first.get("type") == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request.", param=None, code="invalid_json")
    msg = first.get("msg", "Invalid value")
    return InvalidRequest(f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


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
    """x-request-id on every response, and Server-Timing (queue, inference, encode, total)."""

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

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
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

        await self.app(scope, receive, send_wrapper)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or by counting chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"The request body exceeds the limit of {self.max_bytes} bytes.")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    await _error_response(too_large)(scope, receive, send)
                    return
        seen = 0
        exceeded = started = replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise too_large
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

        await self.app(scope, limited_receive, guarded_send)
