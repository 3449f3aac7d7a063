"""Helpers shared by the tokengate-otel tests (on sys.path through conftest.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

WAIT = 30.0
"""Upper bound of every wait in these tests."""


@dataclass
class Otel:
    """The SDK providers the instrumentation writes to, and what they received."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        """Every finished span so far."""
        return list(self.spans_exporter.get_finished_spans())

    def token_spans(self) -> list[ReadableSpan]:
        """The spans the instrumentation made (one per token that ran)."""
        return [
            s
            for s in self.spans()
            if s.instrumentation_scope is not None
            and s.instrumentation_scope.name == "tokengate.otel"
        ]

    def metrics(self) -> dict[str, Metric]:
        """The metrics collected now, by name."""
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        """The data points of one metric (empty when it has none)."""
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)


def make_otel() -> Otel:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    return Otel(tracer_provider, meter_provider, exporter, reader)


def wait_for_spans(otel: Otel, count: int, name: str | None = None) -> list[ReadableSpan]:
    """The token spans (of ``name``) once at least ``count`` have ended (a killed body ends its
    span when it returns, after the kill)."""
    deadline = time.monotonic() + WAIT
    while True:
        spans = [s for s in otel.token_spans() if name is None or s.name == name]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)
