"""``serve_prometheus``: a real scrape over HTTP on 127.0.0.1, parsed with prometheus_client."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
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

        # every series the Grafana dashboard of the docs queries is really exported
        exported = {sample.name for family in families.values() for sample in family.samples}
        queried = dashboard_series()
        assert queried, "the dashboard queries nothing"
        assert queried <= exported, (
            f"the dashboard queries series nobody exports: {queried - exported}"
        )
    # stopping the endpoint uninstruments and closes the port
    assert not TokenGateInstrumentor().is_instrumented_by_opentelemetry
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint.url, timeout=5)


DASHBOARD = Path(__file__).resolve().parents[3] / "docs/assets/grafana/tokengate-dashboard.json"


def dashboard_series() -> set[str]:
    """The TokenGate series named in the PromQL of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(re.findall(r"tokengate_[a-z_]+", target["expr"]))
    return names


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] == "TokenGate"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert "gridPos" in panel


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
