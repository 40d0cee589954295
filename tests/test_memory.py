"""Several models under one memory budget: load on first use, least recently used idle
models unloaded to make room; /health stays 200 for models that are ready to load."""

from __future__ import annotations

import dataclasses

import httpx2

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.backends.diffusers import DiffusersBackend


async def test_lru_unloads_idle_model_to_fit_budget(tmp_path, tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    size = DiffusersBackend(tiny_config(tiny_sd_path)).estimated_bytes()
    assert size > 0
    budget_gb = 1.5 * size / 2**30  # room for one tiny model, not two
    configs = [tiny_config(tiny_sd_path, name="a"),
               dataclasses.replace(tiny_config(tiny_sd_path, name="b"), preload=False)]
    app = create_app(make_settings(tmp_path, memory_budget_gb=budget_gb), configs)
    async with running(app):
        sched = app.state.scheduler
        a, b = sched.worker("a"), sched.worker("b")
        assert a.backend.loaded and not b.backend.loaded  # b loads on first use
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as http:
            health = await http.get("/health")
        assert health.status_code == 200
        assert health.json()["models"] == {"a": "ready", "b": "unloaded"}

        client = sdk_client(app)
        r = await client.images.generate(model="b", prompt="x", size="256x256")
        assert len(r.data) == 1
        assert b.backend.loaded and not a.backend.loaded  # a was idle and least recently used
        r = await client.images.generate(model="a", prompt="y", size="256x256")
        assert a.backend.loaded and not b.backend.loaded
        assert a.memory > 0
        await client.close()


async def test_lazy_model_without_budget_loads_on_first_use(tmp_path, tiny_sd_path) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(tiny_config(tiny_sd_path, name="lazy"), preload=False)
    app = create_app(make_settings(tmp_path), [config])
    async with running(app):
        worker = app.state.scheduler.worker("lazy")
        assert not worker.backend.loaded
        client = sdk_client(app)
        r = await client.images.generate(model="gpt-image-1", prompt="x", size="512x512", quality="low")
        assert r.size == "512x512" and worker.backend.loaded
        await client.close()
