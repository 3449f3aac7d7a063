"""``measure_overhead`` runs all three sides for real and checks they recorded every token
(it reports ratios; it never asserts a wall-clock figure)."""

from __future__ import annotations

import pytest

from tokengate.otel import OverheadReport, TokenGateInstrumentor, measure_overhead


def test_measure_overhead_small_run() -> None:
    report = measure_overhead(tokens=64, rounds=2, cores=2, workers_per_core=2)
    assert isinstance(report, OverheadReport)
    assert set(report.throughput) == {"uninstrumented", "metrics", "metrics+traces"}
    assert all(rate > 0 for rate in report.throughput.values())
    assert report.metrics_ratio == pytest.approx(
        report.throughput["metrics"] / report.throughput["uninstrumented"]
    )
    assert len(report.round_ratios) == 2
    # warm-up round plus two measured rounds, every traced token exported its span
    assert report.spans == 64 * 3
    assert "metrics only" in report.summary()
    assert not TokenGateInstrumentor().is_instrumented_by_opentelemetry


def test_measure_overhead_refuses_when_instrumented() -> None:
    instrumentor = TokenGateInstrumentor()
    instrumentor.instrument(skip_dep_check=True, traces=False)
    try:
        with pytest.raises(RuntimeError, match="uninstrument"):
            measure_overhead(tokens=8, rounds=1)
    finally:
        instrumentor.uninstrument()


def test_measure_overhead_rejects_empty_runs() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        measure_overhead(tokens=0)
