"""GET /metrics after real traffic (counters and histograms move by the right amounts, the
text parses with prometheus_client's own parser), its admin-key guard, and the traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.app import create_app
from imagegate.core.request import RequestContext
from imagegate.db import RequestRow
from imagegate.observability import Metrics, Tracer

ADMIN = "admin-key-for-metrics-tests"
GPT_LOW_1024 = 0.011  # OpenAI's published gpt-image-1 price, low quality, 1024x1024


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx2.AsyncClient, key: str | None = None) -> dict[Any, float]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = await http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def http_client(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver")


async def test_metrics_follow_real_traffic(app: Any, client: Any) -> None:
    async with http_client(app) as http:
        before = await scrape(http)
        await client.images.generate(model="gpt-image-1", prompt="a red circle", n=2, quality="low",
                                     size="1024x1024")
        with pytest.raises(openai.BadRequestError):
            await client.images.generate(prompt="x", size="7x7")
        stream = await client.images.generate(prompt="a blue square", size="256x256", stream=True, partial_images=1)
        async for _ in stream:
            pass
        after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    gen = {"endpoint": "images.generations", "model": "tiny-sd"}
    assert delta("imagegate_requests_total", **gen, status="200") == 2
    assert delta("imagegate_requests_total", **gen, status="400") == 1
    assert delta("imagegate_images_total", model="tiny-sd", quality="low") == 2
    assert delta("imagegate_cost_usd_total", model="tiny-sd") == pytest.approx(2 * GPT_LOW_1024)
    assert delta("imagegate_request_duration_seconds_count") == 3
    assert delta("imagegate_request_duration_seconds_sum") > 0
    for stage in ("queue", "inference", "encode"):
        assert delta("imagegate_stage_duration_seconds_count", stage=stage) == 2, stage
    assert delta("imagegate_batch_images_count") == 2  # two pipeline calls
    assert delta("imagegate_batch_images_sum") == 3  # of 2 images and 1 image
    assert delta("imagegate_batch_images_bucket", le="1.0") == 1
    assert value(after, "imagegate_queue_depth", model="tiny-sd") == 0
    assert value(after, "imagegate_model_loaded", model="tiny-sd") == 1
    assert value(after, "imagegate_ledger_write_failures_total") == 0


async def test_metrics_take_the_admin_key_when_one_is_set(tmp_path: Path, tiny_sd_path: Path) -> None:
    application = create_app(make_settings(tmp_path, admin_key=ADMIN, api_keys=["image-key"]),
                             [tiny_config(tiny_sd_path)])
    async with running(application), http_client(application) as http:
        assert (await http.get("/metrics")).status_code == 401
        r = await http.get("/metrics", headers={"authorization": "Bearer image-key"})
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "invalid_request_error"
        # A refused image request is counted too, under no model.
        with pytest.raises(openai.AuthenticationError):
            await sdk_client(application, api_key="wrong").images.generate(prompt="x")
        after = await scrape(http, ADMIN)
        assert value(after, "imagegate_requests_total", endpoint="images.generations", model="",
                     status="401") == 1


def _row(**kw: Any) -> RequestRow:
    base = dict(id="req_x", endpoint="images.generations", model="m", status="ok", http_status=200, images=1,
                quality="low", cost_usd=0.0, total_s=0.5, batch_id=7, batch_images=2)
    return RequestRow(**{**base, **kw})


def test_a_batch_shared_by_requests_is_observed_once() -> None:
    m = Metrics()
    ctx = RequestContext(request_id="req_x", endpoint="images.generations", base_url="http://x/")
    m.finished(ctx, _row(id="a"))
    m.finished(ctx, _row(id="b"))  # the same pipeline call
    m.finished(ctx, _row(id="c", batch_id=8, batch_images=1))
    got = samples(m.text().decode())
    assert value(got, "imagegate_batch_images_count") == 2
    assert value(got, "imagegate_batch_images_sum") == 3


def test_tracing_is_off_without_the_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert Tracer.from_env() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    tracer = Tracer.from_env()
    assert tracer is not None
    tracer.close()


async def test_traces_carry_the_request_stages(app: Any, client: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()  # the OTLP exporter's stand-in: the collector is the edge
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.state.container.observer.tracer = Tracer(provider.get_tracer("test"), provider)
    raw = await client.images.with_raw_response.generate(prompt="x", size="256x256")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["imagegate images.generations"]
    assert root.attributes["imagegate.request_id"] == raw.headers["x-request-id"]
    for stage in ("queue", "inference", "encode"):
        assert spans[stage].parent.span_id == root.context.span_id
        assert root.start_time <= spans[stage].start_time <= spans[stage].end_time <= root.end_time


def test_the_grafana_dashboard_reads_only_series_the_server_exports() -> None:
    import json
    import re

    import imagegate.observability as obs

    dashboard = json.loads((Path(__file__).parents[1] / "deploy/grafana/imagegate.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count|total)$", "", m) for e in exprs for m in re.findall(r"imagegate_\w+", e)}

    class Worker:
        waiting, ready = 0, True
        backend = type("B", (), {"loaded": True})()

    engine = type("E", (), {"workers": {"m": Worker()}})()  # the engine's stand-in: only its gauges are read
    exported = {f.name for f in text_string_to_metric_families(Metrics(engine).text().decode())}
    gpu_only = {"imagegate_device_memory_bytes", "imagegate_device_memory_reserved_bytes"}
    assert gpu_only <= set(re.findall(r'"(imagegate_device_memory\w*)"', Path(obs.__file__).read_text()))
    assert used - gpu_only <= exported, used - gpu_only - exported
    assert {"imagegate_requests", "imagegate_images", "imagegate_cost_usd", "imagegate_request_duration_seconds",
            "imagegate_stage_duration_seconds", "imagegate_queue_depth", "imagegate_batch_images",
            "imagegate_model_loaded"} <= used


async def test_a_ledger_outage_is_counted_and_the_requests_still_are(app: Any, client: Any) -> None:
    from sqlalchemy import text

    async with app.state.ledger.engine.begin() as conn:
        await conn.execute(text("DROP TABLE requests"))
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(prompt="x", n=11)
    async with http_client(app) as http:
        after = await scrape(http)
    assert value(after, "imagegate_ledger_write_failures_total") == 1
    # refused by validation, before a model was resolved
    assert value(after, "imagegate_requests_total", endpoint="images.generations", model="", status="400") == 1
