"""The gateway through the official openai SDK: routed names, failover, circuit breaking,
client errors passed through, 502 when every route fails, no image made twice, parameter
emulation, dry runs, the cache, idempotent retries, and no upstream key anywhere it should
not be. Upstreams are a real second imagegate on 127.0.0.1 and, at the edge, a fake
provider that misbehaves on purpose (fault_upstream.py)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fault_upstream import FaultServer, fault_server
from PIL import Image

from conftest import live_server, make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEY = "sk-client-key-abcdef"


def _models_file(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "models.toml"
    p.write_text(text)
    return p


def _local(tiny: Path, name: str = "local-tiny") -> str:
    return (f'[[models]]\nname = "{name}"\nsource = "{tiny}"\nfamily = "sd"\ndtype = "float32"\n'
            'native_size = 64\nsize_multiple = 16\nquality = { low = [2, 5.0], medium = [2, 5.0], high = [2, 5.0] }\n')


def _provider(name: str, base: str, **kw: Any) -> str:
    lines = [f'[[providers]]\nname = "{name}"\nkind = "{kw.pop("kind", "openai-compatible")}"\n'
             f'base_url = "{base}"\napi_key_env = "GW_TEST_KEY"\ntimeout_s = {kw.pop("timeout_s", 20)}\n']
    for k, v in kw.items():
        lines.append(f"{k} = {v}\n")
    return "".join(lines)


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, text: str, **settings: Any) -> AsyncIterator[Any]:
    s = make_settings(tmp_path, models_file=_models_file(tmp_path, text), api_keys=[CLIENT_KEY], **settings)
    app = create_app(s)
    async with running(app):
        yield app


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("BACKUP_KEY", UPSTREAM_KEY)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path) -> Iterator[str]:
    """A real imagegate serving the tiny model as `imagegate-mini`, keyed with the upstream key."""
    tmp = tmp_path_factory.mktemp("upstream")
    app = create_app(make_settings(tmp, api_keys=[UPSTREAM_KEY]), [tiny_config(tiny_sd_path, name="imagegate-mini")])
    with live_server(app) as base:
        yield base + "/v1"


async def _raw(client: Any, **kw: Any) -> tuple[Any, Any]:
    """(headers, parsed response) of images.generate."""
    r = await client.images.with_raw_response.generate(**kw)
    return r.headers, r.parse()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# -- the issue's own models file ---------------------------------------------------------------
ISSUE_FILE = '''[[providers]]
name = "backup"
kind = "openai-compatible"          # openai | azure-openai | openai-compatible | fal
base_url = "http://127.0.0.1:9001/v1"
api_key_env = "BACKUP_KEY"          # the key is read from this variable; never in the file
timeout_s = 120
max_concurrency = 8

[[models]]
name = "imagegate-mini"
source = "builtin"                  # the built-in model, served beside anything else

[[models]]
name = "gpt-image-1"
strategy = "priority"               # priority | weighted | least-latency | cheapest
routes = [
  { provider = "backup", model = "imagegate-mini" },
  { model = "imagegate-mini" },     # no provider: a local model served by this process
]
'''


async def test_the_issue_models_file_routes_upstream_then_fails_over_to_the_builtin(
        tmp_path: Path, upstream: str) -> None:
    text = ISSUE_FILE.replace("http://127.0.0.1:9001/v1", upstream)
    async with gateway(tmp_path, text) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        headers, res = await _raw(client, model="gpt-image-1", prompt="a red cube", size="256x256", quality="low")
        # The upstream accepts only its own key: this answer proves that key was sent, not the client's.
        assert headers["x-imagegate-provider"] == "backup"
        assert headers["x-imagegate-model"] == "imagegate-mini"
        assert headers["x-imagegate-attempts"] == "1"
        assert _image(res.data[0].b64_json).size == (256, 256)
        row = await app.state.ledger.get(headers["x-request-id"])
        assert (row.provider, row.attempts, row.model_requested, row.status) == ("backup", 1, "gpt-image-1", "ok")
        models = {m.id: m for m in (await client.models.list()).data}
        assert models["gpt-image-1"].owned_by == "backup"
        assert models["imagegate-mini"].owned_by == "imagegate"
        await client.close()
    # The same file with the upstream gone: the built-in model serves, and says so.
    dead = ISSUE_FILE.replace("9001", str(_closed_port()))
    async with gateway(tmp_path / "b", dead) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        headers, res = await _raw(client, model="gpt-image-1", prompt="a red cube", size="256x256", quality="low")
        assert headers["x-imagegate-provider"] == "local"
        assert headers["x-imagegate-model"] == "imagegate-mini"
        assert headers["x-imagegate-attempts"] == "2"
        assert "failed over from backup/imagegate-mini" in headers["x-imagegate-notes"]
        assert _image(res.data[0].b64_json).size == (256, 256)
        row = await app.state.ledger.get(headers["x-request-id"])
        assert (row.provider, row.attempts, row.model, row.status) == ("local", 2, "imagegate-mini", "ok")
        await client.close()


def _closed_port() -> int:
    from conftest import free_port

    return free_port()


# -- failover, retries, client errors ----------------------------------------------------------
def _two_routes(tiny: Path, fs: FaultServer, **provider: Any) -> str:
    return (_provider("flaky", fs.base + "/v1", **provider) + _local(tiny)
            + '[[models]]\nname = "gpt-image-1"\nroutes = [{ provider = "flaky", model = "up-model" }, '
              '{ model = "local-tiny" }]\n')


async def test_5xx_fails_over_to_the_next_route_and_429_is_retried_after_retry_after(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server(script=["500", "500", "429:0.2"]) as fs:
        async with gateway(tmp_path, _two_routes(tiny_sd_path, fs, retries=1, breaker_failures=5)) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            # 500, retried once (500 again): fails over to the local model
            headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
            assert headers["x-imagegate-provider"] == "local" and headers["x-imagegate-attempts"] == "2"
            assert len(fs.images_calls()) == 2
            # 429 with Retry-After: the same route again after it, and it answers
            headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
            assert headers["x-imagegate-provider"] == "flaky" and headers["x-imagegate-attempts"] == "1"
            assert "retried flaky/up-model after 429" in headers["x-imagegate-notes"]
            calls = fs.images_calls()
            assert len(calls) == 4
            # A retry carries the same idempotency key, so the upstream can tell it is one request.
            assert calls[2].headers["idempotency-key"] == calls[3].headers["idempotency-key"]
            for c in calls:  # the upstream's key, never the client's
                assert c.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
                assert CLIENT_KEY not in json.dumps(c.headers)
            await client.close()


async def test_an_upstream_4xx_is_returned_as_is_without_retry_or_failover(tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server(default="400") as fs:
        async with gateway(tmp_path, _two_routes(tiny_sd_path, fs, retries=2)) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            with pytest.raises(openai.BadRequestError) as e:
                await client.images.generate(model="gpt-image-1", prompt="x", size="256x256")
            assert e.value.status_code == 400
            assert e.value.body["code"] == "invalid_size" and e.value.body["param"] == "size"
            assert e.value.body["message"] == "Invalid size from upstream."
            assert len(fs.images_calls()) == 1
            assert e.value.response.headers["x-imagegate-attempts"] == "1"
            await client.close()


async def test_502_all_providers_failed_names_each_route_and_no_secret(
        tmp_path: Path, tiny_sd_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with fault_server(default="500-echo") as fs:
        text = (_provider("flaky", fs.base + "/v1", retries=0)
                + _provider("gone", f"http://127.0.0.1:{_closed_port()}/v1", retries=0)
                + '[[models]]\nname = "routed"\nroutes = [{ provider = "flaky", model = "m1" }, '
                  '{ provider = "gone", model = "m2" }]\n' + _local(tiny_sd_path))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            with pytest.raises(openai.APIStatusError) as e:
                await client.images.generate(model="routed", prompt="x", size="256x256")
            assert e.value.status_code == 502
            body = e.value.body
            assert body["code"] == "all_providers_failed" and body["type"] == "server_error"
            assert "flaky/m1: flaky: HTTP 500: bad credentials Bearer ***" in body["message"]
            assert "gone/m2: gone: cannot connect" in body["message"]
            rows = await app.state.ledger.recent()
            dumped = json.dumps([{c.key: str(getattr(r, c.key)) for c in r.__table__.columns} for r in rows])
            await client.close()
    for text in (json.dumps(body), caplog.text, dumped):
        assert UPSTREAM_KEY not in text


async def test_hung_upstream_times_out_and_fails_over_but_malformed_json_does_not(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server(script=["hang", "malformed"]) as fs:
        async with gateway(tmp_path, _two_routes(tiny_sd_path, fs, retries=0, timeout_s=1)) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
            assert headers["x-imagegate-provider"] == "local"
            # A 200 with a body that is not JSON may have made (and billed) an image: no failover.
            with pytest.raises(openai.APIStatusError) as e:
                await client.images.generate(model="gpt-image-1", prompt="x", size="256x256")
            assert e.value.status_code == 502 and e.value.body["code"] == "upstream_error"
            assert "malformed response" in e.value.body["message"]
            assert e.value.response.headers["x-imagegate-attempts"] == "1"
            await client.close()


async def test_circuit_opens_after_failures_and_a_half_open_probe_closes_it(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    import asyncio

    with fault_server(default="500") as fs:
        text = _two_routes(tiny_sd_path, fs, retries=0, breaker_failures=2, breaker_cooldown_s=0.5)
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            for _ in range(2):
                headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
                assert headers["x-imagegate-attempts"] == "2"
            assert len(fs.images_calls()) == 2
            # Open: the route is skipped without a call.
            headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
            assert headers["x-imagegate-provider"] == "local" and headers["x-imagegate-attempts"] == "1"
            assert len(fs.images_calls()) == 2
            fs.default = "ok"
            await asyncio.sleep(0.6)
            # Half-open: one probe goes through; it succeeds and closes the circuit.
            for _ in range(2):
                headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="256x256")
                assert headers["x-imagegate-provider"] == "flaky"
            assert len(fs.images_calls()) == 4
            await client.close()


# -- streaming -----------------------------------------------------------------------------
async def test_partial_images_are_relayed_from_a_streaming_upstream(tmp_path: Path, upstream: str,
                                                                    tiny_sd_path: Path) -> None:
    text = (_provider("backup", upstream) + _local(tiny_sd_path)
            + '[[models]]\nname = "gpt-image-1"\nroutes = [{ provider = "backup", model = "imagegate-mini" }]\n')
    s = make_settings(tmp_path, models_file=_models_file(tmp_path, text), api_keys=[CLIENT_KEY])
    s.__dict__["api_keys"] = [CLIENT_KEY]
    with live_server(create_app(s)) as base:
        client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=base + "/v1", max_retries=0)
        stream = await client.images.generate(model="gpt-image-1", prompt="a boat", size="256x256", stream=True,
                                              partial_images=2, quality="low")
        kinds = [ev.type async for ev in stream]
        await client.close()
    assert kinds.count("image_generation.partial_image") >= 1
    assert kinds[-1] == "image_generation.completed"


async def test_reset_mid_stream_ends_in_an_error_event_without_failover(tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server(default="reset") as fs:
        async with gateway(tmp_path, _two_routes(tiny_sd_path, fs, retries=2)) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            stream = await client.images.generate(model="gpt-image-1", prompt="x", size="256x256", stream=True,
                                                  partial_images=1)
            kinds: list[str] = []
            with pytest.raises(openai.APIError, match="cut off"):
                await _consume(stream, kinds)
            assert kinds == ["image_generation.partial_image"]
            assert len(fs.images_calls()) == 1  # no retry, no failover: the upstream may have finished
            await client.close()


async def _consume(stream: Any, kinds: list[str]) -> None:
    async for ev in stream:
        kinds.append(ev.type)
