"""Prometheus metrics and OpenTelemetry tracing, fed from one place: the final ledger row of
each request (ImageService.record calls `Observer.finished`). What a row says, the metrics
say; a request the ledger records (401s and 400s included) is counted once.

Each app has its own CollectorRegistry (not prometheus_client's global one), so tests and
processes that build several apps keep their numbers apart. Gauges that describe the
engine (queue depth, models loaded, device memory) are read when scraped, not pushed."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core.request import RequestContext
from .db import RequestRow

log = logging.getLogger("imagegate.observability")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Requests take from a few milliseconds (a refusal) to minutes (a large image on a CPU).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
_SEEN_BATCHES = 4096  # batch ids remembered so that a batch shared by requests counts once


class Worker(Protocol):
    waiting: int
    ready: bool

    @property
    def backend(self) -> Any: ...


class Engine(Protocol):
    @property
    def workers(self) -> dict[str, Any]: ...


class EngineCollector(Collector):
    """Queue depth and loaded state per model, device memory where torch has a GPU, and the
    ledger's failed writes, read at each scrape."""

    def __init__(self, engine: Engine, ledger: Any = None) -> None:
        self.engine = engine
        self.ledger = ledger

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily("imagegate_queue_depth", "Requests queued or running, per model.", labels=["model"])
        loaded = GaugeMetricFamily("imagegate_model_loaded", "1 while the model's weights are in memory.",
                                   labels=["model"])
        for name, w in self.engine.workers.items():
            depth.add_metric([name], float(getattr(w, "waiting", 0)))
            backend = getattr(w, "backend", None)
            loaded.add_metric([name], 1.0 if backend is not None and backend.loaded else 0.0)
        yield depth
        yield loaded
        if self.ledger is not None:
            failures = CounterMetricFamily("imagegate_ledger_write_failures",
                                           "Ledger rows that could not be written (the requests still answered).")
            failures.add_metric([], float(getattr(self.ledger, "write_failures", 0)))
            yield failures
        yield from _device_memory()


def _device_memory() -> Iterator[Metric]:
    """Memory torch holds on each CUDA device. Only where torch is already imported (a
    server with a local model): the metrics endpoint must not import it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if not torch.cuda.is_available():
            return
        used = GaugeMetricFamily("imagegate_device_memory_bytes", "Device memory allocated by torch.",
                                 labels=["device"])
        reserved = GaugeMetricFamily("imagegate_device_memory_reserved_bytes", "Device memory reserved by torch.",
                                     labels=["device"])
        for i in range(torch.cuda.device_count()):
            used.add_metric([f"cuda:{i}"], float(torch.cuda.memory_allocated(i)))
            reserved.add_metric([f"cuda:{i}"], float(torch.cuda.memory_reserved(i)))
    except Exception:  # a driver hiccup must not fail the scrape of every other series
        log.debug("device memory unavailable", exc_info=True)
        return
    yield used
    yield reserved


class Metrics:
    def __init__(self, engine: Engine | None = None, ledger: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("imagegate_requests", "Image requests by endpoint, served model and HTTP status.",
                                ["endpoint", "model", "status"], registry=r)
        self.images = Counter("imagegate_images", "Images delivered, by served model and quality.",
                              ["model", "quality"], registry=r)
        self.duration = Histogram("imagegate_request_duration_seconds", "Time from request to its ledger record.",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.stages = Histogram("imagegate_stage_duration_seconds",
                                "Time spent in each stage of a request (queue, inference, encode, accounts, ...).",
                                ["stage"], buckets=DURATION_BUCKETS, registry=r)
        self.batch = Histogram("imagegate_batch_images", "Images per pipeline call (one observation per batch).",
                               buckets=BATCH_BUCKETS, registry=r)
        self.cost = Counter("imagegate_cost_usd", "Cost of delivered images in USD, by served model.",
                            ["model"], registry=r)
        self._batches: OrderedDict[tuple[str, int], None] = OrderedDict()
        if engine is not None:
            r.register(EngineCollector(engine, ledger))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def finished(self, ctx: RequestContext, row: RequestRow) -> None:
        """One request's final record."""
        model = row.model or ""
        self.requests.labels(row.endpoint, model, str(row.http_status)).inc()
        if row.status == "ok" and row.images:
            self.images.labels(model, row.quality or "").inc(row.images)
        if row.cost_usd:
            self.cost.labels(model).inc(row.cost_usd)
        if row.total_s is not None:
            self.duration.observe(row.total_s)
        for stage, seconds in ctx.timings.items():
            self.stages.labels(stage).observe(seconds)
        if row.batch_id is not None and row.batch_images:
            key = (model, row.batch_id)
            if key not in self._batches:
                self._batches[key] = None
                if len(self._batches) > _SEEN_BATCHES:
                    self._batches.popitem(last=False)
                self.batch.observe(row.batch_images)


class Tracer:
    """OpenTelemetry spans of each request and its stages, exported over OTLP when
    OTEL_EXPORTER_OTLP_ENDPOINT is set (the standard variable; the SDK reads the rest of
    OTEL_* itself). The stages' spans are laid end to end in the flow's order from their
    measured durations: the flow keeps durations, not start times."""

    def __init__(self, tracer: Any, provider: Any) -> None:
        self.tracer = tracer
        self.provider = provider

    @classmethod
    def from_env(cls) -> Tracer | None:
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                        "(pip install 'imagegate[otel]'): tracing is off")
            return None
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "imagegate")})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider.get_tracer("imagegate"), provider)

    def finished(self, ctx: RequestContext, row: RequestRow) -> None:
        end = time.time_ns()
        start = int(ctx.created_at.timestamp() * 1e9)
        attrs = {"imagegate.request_id": ctx.request_id, "imagegate.endpoint": row.endpoint,
                 "imagegate.model": row.model or "", "http.response.status_code": row.http_status,
                 "imagegate.images": row.images or 0, "imagegate.cost_usd": row.cost_usd or 0.0}
        root = self.tracer.start_span(f"imagegate {row.endpoint}", start_time=start, attributes=attrs)
        from opentelemetry import trace

        parent = trace.set_span_in_context(root)
        at = start
        for stage, seconds in ctx.timings.items():
            span = self.tracer.start_span(stage, context=parent, start_time=at)
            at = min(end, at + int(seconds * 1e9))
            span.end(end_time=at)
        root.end(end_time=end)

    def close(self) -> None:
        self.provider.shutdown()


class Observer:
    """What the service calls with each final ledger row: the metrics, and the tracer when on."""

    def __init__(self, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    def __call__(self, ctx: RequestContext, row: RequestRow) -> None:
        self.metrics.finished(ctx, row)
        if self.tracer is not None:
            self.tracer.finished(ctx, row)

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.close()
