"""The IO and open-loop latency workloads run every side and report consistent figures."""

from __future__ import annotations

import pytest

from tokengate.bench._io_workload import IO_SIDES, run_io_workload
from tokengate.bench._latency_workload import (
    LATENCY_SIDES,
    calibrate_body,
    latency_body,
    run_latency_workload,
)


@pytest.mark.parametrize("mixed", [False, True])
def test_the_io_workload_measures_every_side(mixed: bool) -> None:
    result = run_io_workload(calls=60, sleep=0.002, rounds=2, mixed=mixed)
    assert set(result.sides) == set(IO_SIDES)
    for side in result.sides.values():
        assert len(side.seconds) == 2
        assert all(seconds > 0 for seconds in side.seconds)
        assert side.throughput > 0
    assert set(result.ratios) == {"vs_anyio", "vs_run_in_executor"}
    tokengate = result.sides["tokengate"].throughput
    assert result.ratios["vs_anyio"] == pytest.approx(tokengate / result.sides["anyio"].throughput)
    assert result.mixed is mixed


def test_the_io_workload_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="calls and rounds"):
        run_io_workload(calls=0)
    with pytest.raises(ValueError, match="sleep"):
        run_io_workload(sleep=-1)
    with pytest.raises(ValueError, match="unknown side"):
        run_io_workload(sides=("tokengate", "celery"))


def test_the_latency_workload_measures_each_side_at_each_rate() -> None:
    result = run_latency_workload(rates=(100.0, 300.0), duration=0.2)
    assert len(result.points) == 2 * len(LATENCY_SIDES)
    for rate, requests in ((100.0, 20), (300.0, 60)):
        for side in LATENCY_SIDES:
            point = result.point(side, rate)
            assert point.requests == requests
            assert 0 < point.p50_ms <= point.p99_ms
    assert set(result.ratios) == {"100/p50", "100/p99", "300/p50", "300/p99"}
    with pytest.raises(KeyError, match="no point"):
        result.point("tokengate", 5.0)


def test_the_latency_body_is_calibrated_and_bad_settings_are_refused() -> None:
    loops = calibrate_body(50e-6)
    assert loops >= 1
    assert latency_body(4) == 6
    with pytest.raises(ValueError, match="positive"):
        run_latency_workload(rates=(0.0,))
    with pytest.raises(ValueError, match="unknown side"):
        run_latency_workload(sides=("celery",))
