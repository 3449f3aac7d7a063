"""Metrics with the real SDK (in-memory reader): counts that match ``stats()`` after a mixed
run, duration histograms, gauges from the coordinator, the operation-label cap."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from otel_support import WAIT, Otel

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenTimeoutError,
    task_token_guard,
)
from tokengate.otel import TokenGateInstrumentor

TERMINAL = ("completed", "failed", "killed", "timeout")


def tokens_by(otel: Otel, *keys: str) -> Counter[tuple[Any, ...]]:
    """The ``tokengate.tokens`` counter summed by the given attributes."""
    totals: Counter[tuple[Any, ...]] = Counter()
    for point in otel.points("tokengate.tokens"):
        attributes = dict(point.attributes)
        totals[tuple(attributes[k] for k in keys)] += int(point.value)
    return totals


def test_counts_match_stats_after_a_mixed_run(otel: Otel, coordinator_factory: Any) -> None:
    # enough workers for the four bodies that stay blocked (killed and timed-out bodies keep
    # their worker until they return)
    coordinator: OperationsCoordinator = coordinator_factory(cores=2, workers_per_core=6)
    release = threading.Event()
    running = threading.Semaphore(0)

    @task_token_guard("mixed_ok")
    def ok(i: int) -> int:
        return i

    @task_token_guard("mixed_fail")
    def fail(i: int) -> int:
        raise ValueError(i)

    @task_token_guard("mixed_block")
    def block() -> None:
        running.release()
        release.wait(WAIT)

    @task_token_guard("mixed_slow", tags={"timeout": 1.0})
    def slow() -> None:
        running.release()
        release.wait(WAIT)

    oks = [ok(i) for i in range(40)]
    fails = [fail(i) for i in range(7)]
    for token in oks:
        token.get(timeout=WAIT)
    for failing in fails:
        with pytest.raises(ValueError):
            failing.get(timeout=WAIT)
    # two bodies running (killed while running), then time-outs while running
    blocked = []
    for _ in range(2):
        blocked.append(block())
        assert running.acquire(timeout=WAIT)
    for blocked_token in blocked:
        assert blocked_token.kill("stop it")
    slows = []
    for _ in range(2):
        slows.append(slow())
        assert running.acquire(timeout=WAIT)
    for slow_token in slows:
        with pytest.raises(TokenTimeoutError):
            slow_token.get(timeout=WAIT)
    # queued and killed before they ran
    coordinator.pause()
    never: list[TaskToken[int]] = [ok(100 + i) for i in range(5)]
    for token in never:
        assert token.kill("drained")
    coordinator.resume()
    release.set()
    for blocked_token in blocked:
        with pytest.raises(TaskKilledError):
            blocked_token.get(timeout=WAIT)

    stats = coordinator.stats()
    by_state = tokens_by(otel, "state")
    for state in TERMINAL:
        assert by_state[(state,)] == stats.by_state[state], state
    assert by_state == Counter(
        {("completed",): 40, ("failed",): 7, ("killed",): 7, ("timeout",): 2}
    )
    by_operation = tokens_by(otel, "operation", "state")
    assert by_operation[("mixed_ok", "completed")] == 40
    assert by_operation[("mixed_ok", "killed")] == 5
    assert by_operation[("mixed_fail", "failed")] == 7
    assert by_operation[("mixed_block", "killed")] == 2
    assert by_operation[("mixed_slow", "timeout")] == 2
    for point in otel.points("tokengate.tokens"):
        attributes = dict(point.attributes)
        assert set(attributes) == {"operation", "state", "core", "executor"}
        assert attributes["executor"] == "thread"
        assert attributes["core"] in {"1", "2", "none"}
        assert not any("#" in str(v) for v in attributes.values()), "a token id leaked"

    # histograms: one observation per token that ran (the 5 drained tokens never did)
    ran = 40 + 7 + 2 + 2
    for name in ("tokengate.token.queue.duration", "tokengate.token.run.duration"):
        points = otel.points(name)
        assert sum(p.count for p in points) == ran, name
        assert {dict(p.attributes)["operation"] for p in points} == {
            "mixed_ok",
            "mixed_fail",
            "mixed_block",
            "mixed_slow",
        }
        assert all(p.sum >= 0 for p in points)
    run = {dict(p.attributes)["operation"]: p for p in otel.points("tokengate.token.run.duration")}
    # the timed-out bodies ran until their 1 s deadline
    assert run["mixed_slow"].min >= 0.9
    assert otel.metrics()["tokengate.token.run.duration"].unit == "s"

    in_flight = otel.points("tokengate.tokens.in_flight")
    assert [(dict(p.attributes)["coordinator"], p.value) for p in in_flight] == [
        (coordinator.name, 0)
    ]


def test_domain_gauges_follow_stats(otel: Otel, coordinator_factory: Any) -> None:
    coordinator: OperationsCoordinator = coordinator_factory(cores=1, workers_per_core=1)
    release = threading.Event()
    started = threading.Event()

    @task_token_guard("gauge_block", tags={"hash_policy": "none"})
    def block(i: int) -> int:
        started.set()
        release.wait(WAIT)
        return i

    tokens = [block(i) for i in range(5)]
    assert started.wait(WAIT)
    try:
        stats = coordinator.stats()
        depth = {
            dict(p.attributes)["core"]: p.value for p in otel.points("tokengate.domain.queue_depth")
        }
        busy = {
            dict(p.attributes)["core"]: p.value
            for p in otel.points("tokengate.domain.busy_workers")
        }
        assert busy == {"1": 1}
        assert depth == {"1": stats.cores[0].depth}
        assert depth["1"] == 4
        (flight,) = otel.points("tokengate.tokens.in_flight")
        assert flight.value == 5
        (pins,) = otel.points("tokengate.sticky.pins")
        assert dict(pins.attributes) == {"coordinator": coordinator.name}
        assert pins.value == stats.sticky_pins
    finally:
        release.set()
    assert [t.get(timeout=WAIT) for t in tokens] == list(range(5))


def test_sticky_pins_gauge_counts_live_pins(otel: Otel, coordinator_factory: Any) -> None:
    coordinator: OperationsCoordinator = coordinator_factory(cores=2, workers_per_core=1)
    release = threading.Event()

    @task_token_guard("gauge_sticky")
    def keyed(key: str) -> str:
        release.wait(WAIT)
        return key

    tokens = [keyed(k) for k in ("a", "b", "c")]
    try:
        # the gauges reuse one stats() snapshot per collection for half a second: wait for the
        # pins to be taken, then collect
        live = len(coordinator.sticky_snapshot())
        assert live == coordinator.stats().sticky_pins
        (pins,) = otel.points("tokengate.sticky.pins")
        assert pins.value == live
        assert pins.value >= 1
    finally:
        release.set()
    for token in tokens:
        token.get(timeout=WAIT)


def test_label_cap_reports_later_operations_as_other(
    otel_sdk: Otel, coordinator: OperationsCoordinator
) -> None:
    TokenGateInstrumentor().instrument(
        meter_provider=otel_sdk.meter_provider,
        traces=False,
        max_operations=2,
        skip_dep_check=True,
    )
    ops = [task_token_guard(f"cap_{n}")(lambda i: i) for n in "abcd"]
    tokens = [op(i) for i, op in enumerate(ops * 3)]
    for token in tokens:
        token.get(timeout=WAIT)
    counts = tokens_by(otel_sdk, "operation")
    assert counts == Counter({("cap_a",): 3, ("cap_b",): 3, ("other",): 6})
    labels = {
        dict(p.attributes)["operation"] for p in otel_sdk.points("tokengate.token.run.duration")
    }
    assert labels == {"cap_a", "cap_b", "other"}
    assert otel_sdk.token_spans() == []  # traces=False: no span at all


def test_metrics_off_traces_only(otel_sdk: Otel, coordinator: OperationsCoordinator) -> None:
    TokenGateInstrumentor().instrument(
        tracer_provider=otel_sdk.tracer_provider, metrics=False, skip_dep_check=True
    )

    @task_token_guard("traces_only")
    def body() -> int:
        return 1

    assert body().get(timeout=WAIT) == 1
    assert otel_sdk.metrics() == {}
    assert len(otel_sdk.token_spans()) == 1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_operations": 0}, ValueError, "at least 1"),
        ({"max_operations": "10"}, TypeError, "takes an int"),
        ({"traces": "yes"}, TypeError, "True or False"),
        ({"traces": False, "metrics": False}, ValueError, "would record nothing"),
        ({"tracer": None}, TypeError, "unknown option(s) tracer"),
        ({"max_histogram_rate": 0}, ValueError, "positive rate"),
        ({"max_histogram_rate": "fast"}, TypeError, "a number or None"),
    ],
)
def test_bad_options_are_rejected_and_nothing_is_instrumented(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    instrumentor = TokenGateInstrumentor()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        instrumentor.instrument(skip_dep_check=True, **options)
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_histograms_sample_fast_operations_and_the_counter_stays_exact(
    otel_sdk: Otel, coordinator: OperationsCoordinator
) -> None:
    TokenGateInstrumentor().instrument(
        meter_provider=otel_sdk.meter_provider,
        traces=False,
        max_histogram_rate=20,
        skip_dep_check=True,
    )

    @task_token_guard("sampled_fast")
    def fast(i: int) -> int:
        return i

    total = 3000
    tokens = [fast(i) for i in range(total)]
    for token in tokens:
        token.get(timeout=WAIT)
    assert tokens_by(otel_sdk, "operation") == Counter({("sampled_fast",): total})
    (run,) = otel_sdk.points("tokengate.token.run.duration")
    (queue,) = otel_sdk.points("tokengate.token.queue.duration")
    # the tokens before the first rate estimate (every 128 tokens) are recorded whole; far
    # fewer of the rest: a sample, not a cut-off
    assert 100 <= run.count < total // 2
    assert queue.count == run.count
    assert run.sum > 0


def test_histograms_record_every_token_without_a_rate_limit(
    otel_sdk: Otel, coordinator: OperationsCoordinator
) -> None:
    TokenGateInstrumentor().instrument(
        meter_provider=otel_sdk.meter_provider,
        traces=False,
        max_histogram_rate=None,
        skip_dep_check=True,
    )

    @task_token_guard("sampled_never")
    def fast(i: int) -> int:
        return i

    for token in [fast(i) for i in range(1000)]:
        token.get(timeout=WAIT)
    (run,) = otel_sdk.points("tokengate.token.run.duration")
    assert run.count == 1000


def test_conductor_domains_gauge_counts_open_domains(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    from tokengate.conductor import conductor_snapshot

    release = threading.Event()
    started = threading.Semaphore(0)

    @task_token_guard("gauge_lead", tags={"external_calls": ["gauge_member"]})
    def lead(i: int) -> int:
        started.release()
        release.wait(WAIT)
        return i

    leads = [lead(i) for i in range(2)]
    try:
        for _ in leads:
            assert started.acquire(timeout=WAIT)
        assert len(conductor_snapshot(coordinator)) == 2
        (domains,) = otel.points("tokengate.conductor.domains")
        assert dict(domains.attributes) == {"coordinator": coordinator.name}
        assert domains.value == 2
    finally:
        release.set()
    assert [t.get(timeout=WAIT) for t in leads] == [0, 1]
