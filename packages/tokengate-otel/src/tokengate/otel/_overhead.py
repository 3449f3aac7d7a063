"""``measure_overhead``: what the instrumentation costs on the seed workload.

Three sides run in one process on one coordinator, in rounds, the order rotating every
round so that drift in machine load spreads over all sides: uninstrumented, metrics only,
and metrics with traces (real OpenTelemetry SDK providers: an in-memory metric reader and a
batch span processor). Each side decorates the four seed operations afresh under its own
instrumentation, submits the same calls and waits for all of them; the ratios compare total
throughput. The recorded telemetry is checked afterwards, so a side that measured nothing
is an error, not a flattering figure.
"""

from __future__ import annotations

import hashlib
import os
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard

from ._instrumentor import DEFAULT_MAX_HISTOGRAM_RATE, TokenGateInstrumentor
from ._names import METRIC_TOKENS

__all__ = ("SIDES", "OverheadReport", "measure_overhead")

#: The three sides, in their first-round order.
SIDES = ("uninstrumented", "metrics", "metrics+traces")

_LEET = str.maketrans({"A": "4", "E": "3", "I": "1"})


def _cpu_crunch(n: int) -> int:
    total = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            total += k
    return total


def _string_transform(seed: int) -> str:
    letters = random.Random(seed).choices(string.ascii_letters, k=300)
    return "".join(reversed(letters)).upper().translate(_LEET)


def _data_sort(size: int) -> list[int]:
    rng = random.Random(size)
    return sorted([rng.randint(0, 100_000) for _ in range(size)])


def _hash_chain(seed: str, iterations: int) -> str:
    value = seed.encode()
    for _ in range(iterations):
        value = hashlib.sha256(value).digest()
    return value.hex()


def _seed_args(i: int) -> tuple[Any, ...]:
    kind = i % 4
    if kind == 0:
        return (60 + i % 25,)
    if kind == 1:
        return (31 * i,)
    if kind == 2:
        return (400 + i % 300,)
    return (f"wave_seed_{i}", 120 + i % 80)


def _decorate() -> list[Callable[..., TaskToken[Any]]]:
    """The four seed operations, decorated now (under the current instrumentation)."""
    return [
        task_token_guard("cpu_crunch", tags={"weight": "light"})(_cpu_crunch),
        task_token_guard("string_transform", tags={"weight": "light"})(_string_transform),
        task_token_guard("data_sort", tags={"weight": "medium"})(_data_sort),
        task_token_guard("hash_chain", tags={"weight": "heavy"})(_hash_chain),
    ]


@dataclass(frozen=True, slots=True)
class OverheadReport:
    """What :func:`measure_overhead` measured.

    Attributes:
        tokens: tokens per side per round.
        max_histogram_rate: the histogram sampling threshold the sides ran with.
        rounds: measured rounds.
        throughput: tokens per second of each side over all rounds.
        metrics_ratio: metrics-only throughput / uninstrumented throughput.
        traces_ratio: metrics-and-traces throughput / uninstrumented throughput.
        round_ratios: per round, (metrics ratio, metrics-and-traces ratio).
        cpu_per_token: CPU seconds of this process (every thread) per token, by side: less
            sensitive than throughput to other programs sharing the machine.
        metrics_cpu_ratio: uninstrumented / metrics-only CPU per token.
        traces_cpu_ratio: uninstrumented / metrics-and-traces CPU per token.
        load_before: the 1-minute load average when the measurement started.
        load_after: the 1-minute load average when it ended.
        spans: spans exported by the traced side (one per token that ran).
    """

    tokens: int
    rounds: int
    max_histogram_rate: float | None
    throughput: dict[str, float]
    metrics_ratio: float
    traces_ratio: float
    round_ratios: tuple[tuple[float, float], ...] = field(default=())
    cpu_per_token: dict[str, float] = field(default_factory=dict)
    metrics_cpu_ratio: float = 0.0
    traces_cpu_ratio: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    spans: int = 0

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"seed workload, {self.tokens} tokens x {self.rounds} rounds per side "
            f"(load {self.load_before:.2f} -> {self.load_after:.2f}; histograms: "
            + (
                "every token"
                if self.max_histogram_rate is None
                else f"sampled above {self.max_histogram_rate:g} tokens/s per operation"
            )
            + ")",
        ]
        for side in SIDES:
            cpu = self.cpu_per_token.get(side, 0.0) * 1e6
            lines.append(
                f"  {side:<15} {self.throughput[side]:>10,.0f} tokens/s {cpu:>8.1f} µs CPU/token"
            )
        lines.append(
            f"  metrics only      {self.metrics_ratio:.3f}x uninstrumented throughput "
            f"({self.metrics_cpu_ratio:.3f}x by CPU per token)"
        )
        lines.append(
            f"  metrics + traces  {self.traces_ratio:.3f}x uninstrumented throughput "
            f"({self.traces_cpu_ratio:.3f}x by CPU per token)"
        )
        per_round = ", ".join(f"{m:.3f}/{t:.3f}" for m, t in self.round_ratios)
        lines.append(f"  per round (metrics/traces): {per_round}")
        return "\n".join(lines)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def measure_overhead(
    tokens: int = 4096,
    rounds: int = 5,
    *,
    cores: int | None = None,
    workers_per_core: int = 4,
    max_histogram_rate: float | None = DEFAULT_MAX_HISTOGRAM_RATE,
) -> OverheadReport:
    """Measure the throughput ratios of metrics only and metrics with traces against no
    instrumentation, on the seed workload, in this process.

    Needs the OpenTelemetry SDK (``pip install 'tokengate-otel[prometheus]'``). TokenGate must
    not be instrumented already (the sides instrument and uninstrument it in turn).

    Args:
        tokens: tokens per side per round (the seed operations round-robin).
        rounds: measured rounds (one more warm-up round runs first).
        cores: core domains of the coordinator (default: the machine's).
        workers_per_core: worker threads per core domain.
        max_histogram_rate: passed to ``instrument()`` (None: every token in the histograms).

    Raises:
        RuntimeError: TokenGate is already instrumented, or a side recorded fewer tokens or
            spans than it ran (the measurement would be meaningless).
        ValueError: ``tokens`` or ``rounds`` below 1.
    """
    if tokens < 1 or rounds < 1:
        raise ValueError(f"measure_overhead(tokens={tokens}, rounds={rounds}): both must be >= 1")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class CountingExporter(SpanExporter):
        """Receives the spans like a real exporter and keeps only their number."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    instrumentor = TokenGateInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        raise RuntimeError(
            "measure_overhead instruments and uninstruments TokenGate itself; call "
            "TokenGateInstrumentor().uninstrument() first"
        )
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = CountingExporter()
    tracer_provider = TracerProvider()
    # a queue deep enough for a whole side: a dropped span would fail the final check
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 17))
    calls = [_seed_args(i) for i in range(tokens)]
    elapsed = dict.fromkeys(SIDES, 0.0)
    cpu = dict.fromkeys(SIDES, 0.0)
    round_ratios: list[tuple[float, float]] = []
    load_before = _load()

    def run_side(side: str) -> tuple[float, float]:
        if side != "uninstrumented":
            instrumentor.instrument(
                meter_provider=meter_provider,
                tracer_provider=tracer_provider,
                traces=side == "metrics+traces",
                max_histogram_rate=max_histogram_rate,
                skip_dep_check=True,
            )
        try:
            ops = _decorate()
            cpu_start = time.process_time()
            start = time.perf_counter()
            pending = [ops[i % 4](*args) for i, args in enumerate(calls)]
            for token in pending:
                token.get(timeout=600)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
            if side != "uninstrumented":
                _check_counted(reader, tokens, side)
            return seconds, cpu_seconds
        finally:
            if side != "uninstrumented":
                instrumentor.uninstrument()

    try:
        with OperationsCoordinator(cores=cores, workers_per_core=workers_per_core):
            for side in SIDES:  # warm-up: imports, thread start-up, first plans
                run_side(side)
            for number in range(rounds):
                order = SIDES[number % 3 :] + SIDES[: number % 3]
                if number % 2:
                    order = tuple(reversed(order))
                measured = {side: run_side(side) for side in order}
                times = {side: wall for side, (wall, _) in measured.items()}
                for side, (seconds, cpu_seconds) in measured.items():
                    elapsed[side] += seconds
                    cpu[side] += cpu_seconds
                base = times["uninstrumented"]
                round_ratios.append((base / times["metrics"], base / times["metrics+traces"]))
        tracer_provider.force_flush()
        expected_spans = tokens * (rounds + 1)
        if exporter.count < expected_spans:
            raise RuntimeError(
                f"the traced side exported {exporter.count} spans for {expected_spans} tokens "
                "that ran"
            )
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
    total = tokens * rounds
    throughput = {side: total / seconds for side, seconds in elapsed.items()}
    cpu_per_token = {side: seconds / total for side, seconds in cpu.items()}
    return OverheadReport(
        tokens=tokens,
        rounds=rounds,
        max_histogram_rate=max_histogram_rate,
        throughput=throughput,
        metrics_ratio=throughput["metrics"] / throughput["uninstrumented"],
        traces_ratio=throughput["metrics+traces"] / throughput["uninstrumented"],
        round_ratios=tuple(round_ratios),
        cpu_per_token=cpu_per_token,
        metrics_cpu_ratio=cpu["uninstrumented"] / cpu["metrics"],
        traces_cpu_ratio=cpu["uninstrumented"] / cpu["metrics+traces"],
        load_before=load_before,
        load_after=_load(),
        spans=exporter.count,
    )


def _check_counted(reader: Any, tokens: int, side: str) -> None:
    """The side's instrumentation (fresh for the side) counted every one of its tokens."""
    counted = 0
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == METRIC_TOKENS:
                    counted += sum(int(point.value) for point in metric.data.data_points)
    if counted != tokens:
        raise RuntimeError(
            f"the {side} side counted {counted} terminal tokens for the {tokens} it ran: "
            "the instrumentation did not take part"
        )
