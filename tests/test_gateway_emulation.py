"""The gateway's parameter table (docs/gateway.md) row by row, honest cost, dry runs, the
response cache and idempotent retries, and the fal queue, through the openai SDK."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from fault_upstream import fault_server
from PIL import Image
from test_gateway import CLIENT_KEY, UPSTREAM_KEY, _local, _provider, _raw, gateway, upstream  # noqa: F401

from conftest import sdk_client

pytestmark = pytest.mark.usefixtures("_keys")


@pytest.fixture
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", UPSTREAM_KEY)


def _img(b: bytes) -> Image.Image:
    return Image.open(io.BytesIO(b))


def _routed(name: str, *routes: str, **kw: Any) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in kw.items())
    return f'[[models]]\nname = "{name}"\n{extra}routes = [{", ".join(routes)}]\n'


async def test_every_emulation_row_against_a_limited_upstream(tmp_path: Path, upstream: str,  # noqa: F811
                                                              tiny_sd_path: Path) -> None:
    """An upstream that makes only 256x256 PNGs, one at a time, as base64, opaque and not
    streaming: size, n, url, output_format, background and stream are all ours to emulate."""
    caps = ('{ sizes = ["256x256"], max_n = 1, response_formats = ["b64_json"], output_formats = ["png"], '
            "background = false, compression = false, streaming = false }")
    text = (_provider("limited", upstream, capabilities=caps) + _local(tiny_sd_path)
            + _routed("gpt-image-1", '{ provider = "limited", model = "imagegate-mini" }'))
    async with gateway(tmp_path, text) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        headers, res = await _raw(client, model="gpt-image-1", prompt="a lamp", size="512x256", n=2,
                                  response_format="url", output_format="webp", output_compression=80,
                                  background="transparent", quality="low")
        notes = headers["x-imagegate-notes"]
        assert "size 512x256 emulated: limited made 256x256" in notes
        assert "n=2 emulated: 2 parallel calls" in notes
        assert "response_format=url emulated" in notes
        assert "output_format=webp emulated" in notes
        assert "background=transparent emulated" in notes
        assert res.size == "512x256" and res.output_format == "webp" and res.background == "transparent"
        assert len(res.data) == 2
        for item in res.data:
            assert item.url.startswith("http://testserver/v1/images/content/")
            r = await client._client.get(item.url)  # our signed link, served by the gateway
            im = _img(r.content)
            assert (im.format, im.size, im.mode) == ("WEBP", (512, 256), "RGBA")
        row = await app.state.ledger.get(headers["x-request-id"])
        assert any("emulated" in n for n in row.notes) and row.provider == "limited"
        # stream on a non-streaming upstream: one completed event, no partials
        stream = await client.images.generate(model="gpt-image-1", prompt="a lamp", size="256x256", stream=True,
                                              partial_images=2, quality="low")
        kinds = [ev.type async for ev in stream]
        assert kinds == ["image_generation.completed"]
        await client.close()


async def test_unknown_parameters_pass_through_to_upstreams_that_take_them(
        tmp_path: Path, upstream: str, tiny_sd_path: Path) -> None:  # noqa: F811
    with fault_server() as fs:
        text = (_provider("compat", upstream) + _provider("oai", fs.base + "/v1", kind="openai")
                + _local(tiny_sd_path)
                + _routed("compat-model", '{ provider = "compat", model = "imagegate-mini" }')
                + _routed("oai-model", '{ provider = "oai", model = "gpt-image-1" }'))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            # The upstream imagegate gets `frobnicate` as sent, and refuses it: its 400, as is.
            with pytest.raises(openai.BadRequestError) as e:
                await client.images.generate(model="compat-model", prompt="x", size="256x256",
                                             extra_body={"frobnicate": 3})
            assert e.value.body["param"] == "frobnicate" and e.value.body["code"] == "unknown_parameter"
            # Our extensions pass through too: the same seed gives the same image upstream.
            a = await client.images.generate(model="compat-model", prompt="x", size="256x256", quality="low",
                                             extra_body={"seed": 7})
            b = await client.images.generate(model="compat-model", prompt="x", size="256x256", quality="low",
                                             extra_body={"seed": 7})
            # (pixels, not bytes: each file's C2PA manifest is unique by design)
            def pixels(b64: str | None) -> bytes:
                return Image.open(io.BytesIO(base64.b64decode(b64 or ""))).convert("RGB").tobytes()

            assert pixels(a.data[0].b64_json) == pixels(b.data[0].b64_json)
            # OpenAI refuses what it does not know: we say so before calling it.
            with pytest.raises(openai.BadRequestError) as e:
                await client.images.generate(model="oai-model", prompt="x", extra_body={"frobnicate": 3})
            assert e.value.body["param"] == "frobnicate" and e.value.body["code"] == "unsupported_parameter"
            # ... and our extensions are not sent to it, with a note saying so.
            headers, _ = await _raw(client, model="oai-model", prompt="x", size="1024x1024",
                                    extra_body={"seed": 7, "negative_prompt": "blur"})
            assert "seed not sent: oai (openai) does not take it" in headers["x-imagegate-notes"]
            sent = fs.images_calls()[-1].json()
            assert "seed" not in sent and "response_format" not in sent and sent["model"] == "gpt-image-1"
            assert len(fs.images_calls()) == 1
            await client.close()


async def test_cost_follows_the_route_prices_tokens_when_the_upstream_reports_usage(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server() as fs:
        text = (_provider("oai", fs.base + "/v1", kind="openai") + _local(tiny_sd_path)
                + _routed("gpt-image-1", '{ provider = "oai", model = "gpt-image-1" }'))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            # usage 10 text tokens in, 272 image tokens out: $5/M and $40/M
            headers, res = await _raw(client, model="gpt-image-1", prompt="x", size="1024x1024", quality="low")
            assert float(headers["x-imagegate-cost-usd"]) == pytest.approx((10 * 5 + 272 * 40) / 1e6)
            assert res.usage.output_tokens == 272
            # no usage: the published table at the size and quality made ($0.016 at 1536x1024 low)
            fs.usage = False
            headers, _ = await _raw(client, model="gpt-image-1", prompt="x", size="1536x1024", quality="low")
            assert float(headers["x-imagegate-cost-usd"]) == pytest.approx(0.016)
            row = await app.state.ledger.get(headers["x-request-id"])
            assert row.cost_usd == pytest.approx(0.016)
            await client.close()


async def test_dry_run_executes_nothing_and_models_list_routed_names(tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server() as fs:
        price = '{ per_image = { low = { "1024x1024" = 0.01 }, medium = { "1024x1024" = 0.02 }, high = { "1024x1024" = 0.04 } } }'  # noqa: E501
        text = (_provider("a", fs.base + "/v1", pricing=price) + _local(tiny_sd_path)
                + _routed("cheap", '{ provider = "a", model = "m" }', '{ model = "local-tiny" }',
                          strategy='"cheapest"'))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            r = await client.images.with_raw_response.generate(model="cheap", prompt="x", size="1024x1024",
                                                               quality="medium", n=2,
                                                               extra_query={"dry_run": "true"})
            body = json.loads(r.http_response.content)
            assert body["object"] == "image.route" and body["model"] == "cheap"
            # cheapest: the free local model first
            assert body["provider"] == "local" and body["estimated_cost_usd"] == 0
            assert [(x["provider"], x["estimated_cost_usd"]) for x in body["routes"]] == [("local", 0), ("a", 0.04)]
            assert fs.seen == []
            card = await client.models.retrieve("cheap")
            assert card.owned_by == "a" and card.model_extra["pricing"]["per_image"]["medium"]["1024x1024"] == 0.02
            await client.close()


async def test_seeded_requests_are_cached_and_idempotency_keys_replay(tmp_path: Path, tiny_sd_path: Path) -> None:
    price = '{ per_image = { low = { "256x256" = 0.01 }, medium = { "256x256" = 0.02 }, high = { "256x256" = 0.04 } } }'
    with fault_server() as fs:
        text = (_provider("a", fs.base + "/v1", pricing=price) + _local(tiny_sd_path)
                + _routed("cached", '{ provider = "a", model = "m" }', cache_ttl_s=600))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            kw: dict[str, Any] = {"model": "cached", "prompt": "x", "size": "256x256", "quality": "low"}
            h1, r1 = await _raw(client, **kw, extra_body={"seed": 3})
            h2, r2 = await _raw(client, **kw, extra_body={"seed": 3})
            assert (h1["x-imagegate-cache"], h2["x-imagegate-cache"]) == ("miss", "hit")
            assert (h1["x-imagegate-attempts"], h2["x-imagegate-attempts"]) == ("1", "0")
            assert float(h1["x-imagegate-cost-usd"]) == 0.01 and float(h2["x-imagegate-cost-usd"]) == 0
            assert r1.data[0].b64_json == r2.data[0].b64_json
            assert len(fs.images_calls()) == 1
            # no seed: never cached
            h3, _ = await _raw(client, **kw)
            assert "x-imagegate-cache" not in h3 and len(fs.images_calls()) == 2
            # Idempotency-Key: the first result again, at no cost; another request under the key is a 409
            h4, r4 = await _raw(client, **kw, extra_headers={"Idempotency-Key": "k1"})
            h5, r5 = await _raw(client, **kw, extra_headers={"Idempotency-Key": "k1"})
            assert r4.data[0].b64_json == r5.data[0].b64_json and len(fs.images_calls()) == 3
            assert float(h4["x-imagegate-cost-usd"]) == 0.01
            assert float(h5["x-imagegate-cost-usd"]) == 0 and "idempotent replay of" in h5["x-imagegate-notes"]
            with pytest.raises(openai.ConflictError):
                await client.images.generate(**{**kw, "prompt": "y"}, extra_headers={"Idempotency-Key": "k1"})
            await client.close()


async def test_idempotency_key_on_a_local_model(tmp_path: Path, tiny_sd_path: Path) -> None:
    async with gateway(tmp_path, _local(tiny_sd_path)) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        kw: dict[str, Any] = {"model": "local-tiny", "prompt": "x", "size": "256x256", "quality": "low",
                              "extra_headers": {"Idempotency-Key": "local-1"}}
        h1, r1 = await _raw(client, **kw)
        h2, r2 = await _raw(client, **kw)
        assert h1["x-imagegate-provider"] == "local" and r1.data[0].b64_json == r2.data[0].b64_json
        assert "idempotent replay" in h2["x-imagegate-notes"]
        rows = await app.state.ledger.recent()
        assert sorted(r.cost_usd for r in rows) == [0.0, 0.0]  # free model; the replay costs nothing either
        assert any("idempotent replay" in n for r in rows for n in r.notes)
        await client.close()


async def test_fal_queue_submit_poll_fetch(tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server(fal_polls=2) as fs:
        text = (_provider("fal", fs.base + "/fal", kind="fal") + _local(tiny_sd_path)
                + _routed("flux", '{ provider = "fal", model = "fal-ai/flux/dev" }', '{ model = "local-tiny" }'))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            headers, res = await _raw(client, model="flux", prompt="a fox", size="512x256", n=2, quality="low",
                                      extra_body={"seed": 5})
            assert headers["x-imagegate-provider"] == "fal"
            assert [_img(base64.b64decode(d.b64_json)).size for d in res.data] == [(512, 256)] * 2
            submit = next(s for s in fs.seen if s.method == "POST")
            assert submit.path == "/fal/fal-ai/flux/dev"
            assert submit.json() == {"prompt": "a fox", "num_images": 2, "image_size": {"width": 512, "height": 256},
                                     "output_format": "png", "seed": 5}
            assert submit.headers["authorization"] == f"Key {UPSTREAM_KEY}"
            assert "quality not sent: fal has no such argument" in headers["x-imagegate-notes"]
            downloads = [s for s in fs.seen if s.path.startswith("/fal/img/")]
            assert downloads and all("authorization" not in s.headers for s in downloads)  # another host: no key
            # A job that completes with an error made nothing: the next route serves.
            fs.fal_result = "error"
            headers, _ = await _raw(client, model="flux", prompt="a fox", size="256x256", quality="low")
            assert headers["x-imagegate-provider"] == "local" and headers["x-imagegate-attempts"] == "2"
            await client.close()


async def test_edits_go_upstream_as_multipart_with_the_mask(tmp_path: Path, upstream: str,  # noqa: F811
                                                           tiny_sd_path: Path) -> None:
    text = (_provider("backup", upstream) + _local(tiny_sd_path)
            + _routed("gpt-image-1", '{ provider = "backup", model = "imagegate-mini" }'))
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 10)).save(buf, "PNG")
    mask = io.BytesIO()
    Image.new("RGBA", (256, 256), (0, 0, 0, 0)).save(mask, "PNG")
    async with gateway(tmp_path, text) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        r = await client.images.with_raw_response.edit(model="gpt-image-1", prompt="a hat", quality="low",
                                                       image=("in.png", buf.getvalue(), "image/png"),
                                                       mask=("m.png", mask.getvalue(), "image/png"))
        assert r.headers["x-imagegate-provider"] == "backup"
        assert _img(base64.b64decode(r.parse().data[0].b64_json)).size == (256, 256)
        await client.close()



async def test_azure_openai_uses_the_deployment_url_api_version_and_api_key_header(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    with fault_server() as fs:
        text = (_provider("az", fs.base, kind="azure-openai", api_version='"2025-04-01-preview"')
                + _local(tiny_sd_path) + _routed("gpt-image-1", '{ provider = "az", model = "my-deployment" }'))
        async with gateway(tmp_path, text) as app:
            client = sdk_client(app, api_key=CLIENT_KEY)
            headers, res = await _raw(client, model="gpt-image-1", prompt="x", size="1024x1024", quality="low")
            assert res.size == "1024x1024"
            assert headers["x-imagegate-provider"] == "az" and headers["x-imagegate-model"] == "my-deployment"
            call = fs.seen[-1]
            assert call.path == "/openai/deployments/my-deployment/images/generations?api-version=2025-04-01-preview"
            assert call.headers["api-key"] == UPSTREAM_KEY and "authorization" not in call.headers
            assert "model" not in call.json()
            await client.close()


async def test_local_routes_cost_the_global_gpu_hour_rate_times_device_seconds(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    # $3600 an hour is $1 a device-second: the cost is the measured inference time itself.
    text = _local(tiny_sd_path) + _routed("routed", '{ model = "local-tiny" }')
    async with gateway(tmp_path, text, gpu_hour_usd=3600.0) as app:
        client = sdk_client(app, api_key=CLIENT_KEY)
        for model in ("local-tiny", "routed"):
            headers, _ = await _raw(client, model=model, prompt="x", size="256x256", quality="low")
            row = await app.state.ledger.get(headers["x-request-id"])
            assert row.inference_s > 0
            assert float(headers["x-imagegate-cost-usd"]) == pytest.approx(row.inference_s, abs=1e-6)
            assert row.cost_usd == pytest.approx(row.inference_s, abs=1e-6)
        card = await client.models.retrieve("routed")
        assert card.owned_by == "local" and card.model_extra["pricing"]["gpu_hour_usd"] == 3600.0
        await client.close()


async def test_budgets_hold_the_dearest_route_and_pay_the_route_that_served(
        tmp_path: Path, tiny_sd_path: Path) -> None:
    import httpx2

    admin = "admin-" + "g" * 40
    price = '{ per_image = { low = { "256x256" = 0.01 }, medium = { "256x256" = 0.02 }, high = { "256x256" = 0.04 } } }'
    with fault_server() as fs:
        text = (_provider("a", fs.base + "/v1", pricing=price, retries=0, breaker_failures=100) + _local(tiny_sd_path)
                + _routed("routed", '{ provider = "a", model = "m" }', '{ model = "local-tiny" }'))
        async with (gateway(tmp_path, text, admin_key=admin) as app,
                    httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver",
                                       headers={"authorization": f"Bearer {admin}"}) as http):
            key = (await http.post("/admin/v1/keys", json={"name": "k", "budget_usd": 0.025})).json()["key"]
            client = sdk_client(app, api_key=key)
            kw: dict[str, Any] = {"model": "routed", "prompt": "x", "size": "256x256", "quality": "low"}
            for _ in range(2):
                await client.images.generate(**kw)
            with pytest.raises(openai.RateLimitError) as e:  # 0.02 spent + 0.01 held > 0.025
                await client.images.generate(**kw)
            assert e.value.body["code"] == "insufficient_quota" and len(fs.images_calls()) == 2
            # Served by the free local route after the priced one failed: nothing is spent.
            fs.default = "500"
            key2 = (await http.post("/admin/v1/keys", json={"name": "k2", "budget_usd": 0.015})).json()["key"]
            client2 = sdk_client(app, api_key=key2)
            for _ in range(3):
                r = await client2.images.with_raw_response.generate(**kw)
                assert r.headers["x-imagegate-provider"] == "local" and r.headers["x-imagegate-cost-usd"] == "0"
            listed = (await http.get("/admin/v1/keys/k2")).json()
            assert listed["spent_usd_this_month"] == 0
            await client.close()
            await client2.close()
