"""``serve_prometheus``: a real scrape over HTTP on 127.0.0.1, parsed with prometheus_client."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from otel_support import WAIT
from prometheus_client.parser import text_string_to_metric_families

from tokengate.core import OperationsCoordinator, task_token_guard
from tokengate.otel import TokenGateInstrumentor, serve_prometheus


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_scrape_the_endpoint(coordinator: OperationsCoordinator) -> None:
    with serve_prometheus(port=0) as endpoint:
        assert endpoint.host == "127.0.0.1"
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
        assert endpoint.port > 0
        assert TokenGateInstrumentor().is_instrumented_by_opentelemetry

        @task_token_guard("prom_ok")
        def ok(i: int) -> int:
            return i

        @task_token_guard("prom_fail")
        def fail() -> None:
            raise RuntimeError("boom")

        for token in [ok(i) for i in range(6)]:
            token.get(timeout=WAIT)
        with pytest.raises(RuntimeError):
            fail().get(timeout=WAIT)

        families = scrape(endpoint.url)
        tokens = families["tokengate_tokens"]
        assert tokens.type == "counter"
        totals: dict[tuple[str, str], float] = {}
        for sample in tokens.samples:
            assert sample.name == "tokengate_tokens_total"
            assert {"operation", "state", "core", "executor"} <= set(sample.labels)
            key = (sample.labels["operation"], sample.labels["state"])
            totals[key] = totals.get(key, 0.0) + sample.value
        assert totals == {("prom_ok", "completed"): 6.0, ("prom_fail", "failed"): 1.0}

        run = families["tokengate_token_run_duration_seconds"]
        assert run.type == "histogram"
        counts = {
            s.labels["operation"]: s.value
            for s in run.samples
            if s.name == "tokengate_token_run_duration_seconds_count"
        }
        assert counts == {"prom_ok": 6.0, "prom_fail": 1.0}
        buckets = [s for s in run.samples if s.name.endswith("_bucket")]
        assert any(s.labels["le"] == "+Inf" for s in buckets)
        assert families["tokengate_token_queue_duration_seconds"].type == "histogram"

        depth = families["tokengate_domain_queue_depth"]
        assert depth.type == "gauge"
        assert {s.labels["core"] for s in depth.samples} == {"1", "2"}
        assert {s.labels["coordinator"] for s in depth.samples} == {coordinator.name}
        assert "tokengate_domain_busy_workers" in families
        assert "tokengate_sticky_pins" in families
        assert "tokengate_tokens_in_flight" in families
    # stopping the endpoint uninstruments and closes the port
    assert not TokenGateInstrumentor().is_instrumented_by_opentelemetry
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint.url, timeout=5)


def test_serve_prometheus_refuses_when_already_instrumented() -> None:
    instrumentor = TokenGateInstrumentor()
    instrumentor.instrument(skip_dep_check=True, traces=False)
    try:
        with pytest.raises(RuntimeError, match="already instrumented"):
            serve_prometheus(port=0)
    finally:
        instrumentor.uninstrument()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"port": -1}, "0..65535"), ({"port": "80"}, "0..65535"), ({"addr": ""}, "address")],
)
def test_serve_prometheus_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serve_prometheus(**kwargs)
    assert not TokenGateInstrumentor().is_instrumented_by_opentelemetry
