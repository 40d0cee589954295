"""Apps are built from Settings(tmp_path, ...) around a tiny real diffusers pipeline; the
official openai SDK is the client (in-process over httpx2's ASGI transport, or against a
real uvicorn on 127.0.0.1 where streaming and disconnects matter)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))

import torch

# 2 shared cores: one intra-op thread (2 threads measured 5-10x noisier here).
torch.set_num_threads(1)

from imagegate.app import create_app  # noqa: E402
from imagegate.registry import ModelConfig  # noqa: E402
from imagegate.settings import Settings  # noqa: E402
from tiny import build_tiny_sd  # noqa: E402

TINY_QUALITY = {"low": (2, 5.0), "medium": (3, 5.0), "high": (4, 5.0)}
pytest_plugins = ["pg_support", "redis_support", "s3_support"]  # throwaway PostgreSQL, Redis, S3 (moto)


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models"))


def tiny_config(path: Path, name: str = "tiny-sd", **kw: Any) -> ModelConfig:
    """The tiny model; keyword arguments that are not ModelConfig fields are backend options."""
    fields = set(ModelConfig.__dataclass_fields__)
    # fp32 explicitly: "auto" picks bf16 on CPUs with native bf16, and tests compare pixels.
    options = {"dtype": "float32", **{k: v for k, v in kw.items() if k not in fields}}
    return ModelConfig(name=name, source=str(path), family="sd", native_size=64, size_multiple=16,
                       quality=dict(TINY_QUALITY), options=options, **{k: v for k, v in kw.items() if k in fields})


def with_options(config: ModelConfig, **options: Any) -> ModelConfig:
    """`config` with some backend options changed."""
    return dataclasses.replace(config, options={**config.options, **options})


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", torch_threads=1, encode_workers=2, **kw)


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Run the app's lifespan and wait until /health says every model is ready."""
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 300  # compile warm-ups on a loaded 2-core machine take a while
        while not app.state.scheduler.ready:
            if any(w.load_error for w in app.state.scheduler.workers.values()):
                raise RuntimeError("model failed to load")
            if time.monotonic() > deadline:
                raise TimeoutError("models did not load")
            await asyncio.sleep(0.02)
        yield app


def sdk_client(app: Any, api_key: str = "test-key", **kw: Any) -> Any:
    import httpx2
    from openai import AsyncOpenAI

    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")
    return AsyncOpenAI(api_key=api_key, base_url="http://testserver/v1", http_client=http, max_retries=0, **kw)


@pytest.fixture
async def app(tmp_path: Path, tiny_sd_path: Path) -> AsyncIterator[Any]:
    application = create_app(make_settings(tmp_path), [tiny_config(tiny_sd_path)])
    async with running(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    c = sdk_client(app)
    yield c
    await c.close()


# -- a real uvicorn on 127.0.0.1 -----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    import httpx2

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx2.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("server did not become healthy")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
