"""The state of one instrumentation: per-operation counts, known coordinators, instruments.

Per token only plain Python work happens here (a counter cell under a short lock); the
OpenTelemetry counters and gauges read these counts (and ``stats()``) when a metric reader
collects, so a token pays for OpenTelemetry only in the two duration histograms.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.trace import Tracer

from tokengate.core import CoordinatorStats, OperationsCoordinator, TokenState

from ._names import (
    ATTR_COORDINATOR,
    ATTR_CORE,
    ATTR_EXECUTOR,
    ATTR_OPERATION,
    ATTR_STATE,
    DURATION_BUCKETS,
    METRIC_BUSY_WORKERS,
    METRIC_CONDUCTOR_DOMAINS,
    METRIC_IN_FLIGHT,
    METRIC_QUEUE_DEPTH,
    METRIC_QUEUE_DURATION,
    METRIC_RUN_DURATION,
    METRIC_STICKY_PINS,
    METRIC_TOKENS,
    OTHER_OPERATIONS,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("Instruments", "OperationSeries", "Telemetry")

_log = logging.getLogger("tokengate.otel")

#: A snapshot from ``stats()`` is reused by every gauge of one collection.
_STATS_MAX_AGE = 0.5

CountKey = tuple[TokenState, "int | None", str]


class OperationSeries:
    """The counts of one ``operation`` label, kept as long as the instrumentation lives (so a
    counter never goes back when an operation's plan is rebuilt).

    Attributes:
        label: the ``operation`` attribute value (the operation's name, or ``other``).
        finished: terminal tokens by (state, core, executor).
    """

    __slots__ = ("finished", "label", "lock")

    def __init__(self, label: str) -> None:
        self.label = label
        self.lock = threading.Lock()
        self.finished: dict[CountKey, int] = {}


class Telemetry:
    """Everything one ``instrument()`` call set up; closed by ``uninstrument()``.

    Args:
        tracer: the tracer of token spans, or None for metrics only.
        meter: the meter of the TokenGate metrics, or None for traces only.
        max_operations: distinct ``operation`` values; later operations are ``other``.
        max_histogram_rate: tokens per second of one operation recorded in the duration
            histograms before they are sampled; None records every token.
    """

    def __init__(
        self,
        *,
        tracer: Tracer | None,
        meter: Meter | None,
        max_operations: int,
        max_histogram_rate: float | None = None,
    ) -> None:
        self.enabled = True
        self.tracer = tracer
        self.max_operations = max_operations
        self.max_histogram_rate = max_histogram_rate
        self._lock = threading.Lock()
        self._series: dict[str, OperationSeries] = {}
        self._coordinators: weakref.WeakSet[OperationsCoordinator] = weakref.WeakSet()
        self._stats: dict[int, tuple[float, CoordinatorStats]] = {}
        self.instruments = Instruments.bind(meter, self) if meter is not None else None

    # ------------------------------------------------------------------ operations
    def series_for(self, operation_type: str) -> OperationSeries:
        """The series of an operation: its own until ``max_operations`` names exist, then the
        shared ``other`` series."""
        with self._lock:
            series = self._series.get(operation_type)
            if series is not None:
                return series
            named = sum(1 for label in self._series if label != OTHER_OPERATIONS)
            label = operation_type if named < self.max_operations else OTHER_OPERATIONS
            if label == OTHER_OPERATIONS and operation_type != OTHER_OPERATIONS:
                _log.debug(
                    "operation %r reported as %r: max_operations=%d distinct operations already",
                    operation_type,
                    OTHER_OPERATIONS,
                    self.max_operations,
                )
            series = self._series.get(label)
            if series is None:
                series = self._series[label] = OperationSeries(label)
            return series

    def all_series(self) -> list[OperationSeries]:
        """Every series, in creation order."""
        with self._lock:
            return list(self._series.values())

    # ------------------------------------------------------------------ coordinators
    def see_coordinator(self, coordinator: OperationsCoordinator) -> None:
        """Report ``coordinator``'s domains from now on (until it stops)."""
        self._coordinators.add(coordinator)

    def forget_coordinator(self, coordinator: OperationsCoordinator) -> None:
        """Stop reporting a stopped coordinator."""
        self._coordinators.discard(coordinator)
        self._stats.pop(id(coordinator), None)

    def coordinator_stats(self) -> list[tuple[OperationsCoordinator, CoordinatorStats]]:
        """A recent ``stats()`` snapshot of every known coordinator (one per collection)."""
        now = time.monotonic()
        result = []
        for coordinator in list(self._coordinators):
            cached = self._stats.get(id(coordinator))
            if cached is None or now - cached[0] > _STATS_MAX_AGE:
                try:
                    cached = (now, coordinator.stats())
                except Exception:
                    _log.exception("stats() of %s failed", coordinator.name)
                    continue
                self._stats[id(coordinator)] = cached
            result.append((coordinator, cached[1]))
        return result

    def close(self) -> None:
        """Stop counting and reporting (the instruments stay registered with their meter, as
        OpenTelemetry instruments cannot be removed, but report nothing more)."""
        self.enabled = False
        if self.instruments is not None and self.instruments.source is self:
            self.instruments.source = None
        self._coordinators = weakref.WeakSet()
        self._stats.clear()


def _core_label(core: int | None) -> str:
    return "none" if core is None else str(core)


class Instruments:
    """The OpenTelemetry instruments of one meter, created once per meter.

    OpenTelemetry returns the existing instrument when one of the same name is created again
    (ignoring the new callbacks), so the instruments of a meter are made once and read
    whatever :class:`Telemetry` is current (``source``).
    """

    _by_meter: ClassVar[weakref.WeakKeyDictionary[Meter, Instruments]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def bind(cls, meter: Meter, source: Telemetry) -> Instruments:
        """The instruments of ``meter`` (made on first use), now reporting ``source``."""
        with cls._lock:
            instruments = cls._by_meter.get(meter)
            if instruments is None:
                instruments = cls._by_meter[meter] = cls(meter)
            instruments.source = source
            return instruments

    def __init__(self, meter: Meter) -> None:
        self.source: Telemetry | None = None
        self.queue_duration: Histogram = meter.create_histogram(
            METRIC_QUEUE_DURATION,
            unit="s",
            description="Seconds from a token's creation to the start of its body.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.run_duration: Histogram = meter.create_histogram(
            METRIC_RUN_DURATION,
            unit="s",
            description="Seconds from the start of a token's body to its terminal state.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_counter(
            METRIC_TOKENS,
            callbacks=[self._observe_tokens],
            unit="{token}",
            description="Tokens that reached a terminal state, by operation, state, core and "
            "executor.",
        )
        meter.create_observable_up_down_counter(
            METRIC_IN_FLIGHT,
            callbacks=[self._observe_in_flight],
            unit="{token}",
            description="Tokens created and not yet terminal, by coordinator.",
        )
        meter.create_observable_gauge(
            METRIC_QUEUE_DEPTH,
            callbacks=[self._gauge(lambda core: core.depth)],
            unit="{token}",
            description="Tokens queued in a core domain (mailboxes and backlog).",
        )
        meter.create_observable_gauge(
            METRIC_BUSY_WORKERS,
            callbacks=[self._gauge(lambda core: core.busy_workers)],
            unit="{worker}",
            description="Workers of a core domain running a body now.",
        )
        meter.create_observable_gauge(
            METRIC_STICKY_PINS,
            callbacks=[self._observe_sticky],
            unit="{pin}",
            description="Live sticky pins of a coordinator.",
        )
        meter.create_observable_gauge(
            METRIC_CONDUCTOR_DOMAINS,
            callbacks=[self._observe_conductor],
            unit="{domain}",
            description="Conductor domains open in a coordinator (with tokengate-conductor).",
        )

    # ------------------------------------------------------------------ callbacks
    def _observe_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.source
        if source is None:
            return []
        observations = []
        for series in source.all_series():
            with series.lock:
                counts = list(series.finished.items())
            for (state, core, executor), count in counts:
                attributes = {
                    ATTR_OPERATION: series.label,
                    ATTR_STATE: state.value,
                    ATTR_CORE: _core_label(core),
                    ATTR_EXECUTOR: executor,
                }
                observations.append(Observation(count, attributes))
        return observations

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.source
        if source is None:
            return []
        return [
            Observation(stats.in_flight, {ATTR_COORDINATOR: coordinator.name})
            for coordinator, stats in source.coordinator_stats()
        ]

    def _gauge(
        self, read: Callable[[Any], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            source = self.source
            if source is None:
                return
            for coordinator, stats in source.coordinator_stats():
                for core in stats.cores:
                    yield Observation(
                        read(core),
                        {ATTR_COORDINATOR: coordinator.name, ATTR_CORE: str(core.core_id)},
                    )

        return observe

    def _observe_sticky(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.source
        if source is None:
            return []
        return [
            Observation(stats.sticky_pins, {ATTR_COORDINATOR: coordinator.name})
            for coordinator, stats in source.coordinator_stats()
        ]

    def _observe_conductor(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self.source
        if source is None:
            return []
        snapshot = _conductor_snapshot()
        if snapshot is None:
            return []
        observations = []
        for coordinator, _ in source.coordinator_stats():
            try:
                count = len(snapshot(coordinator))
            except Exception:
                _log.exception("conductor_snapshot of %s failed", coordinator.name)
                continue
            observations.append(Observation(count, {ATTR_COORDINATOR: coordinator.name}))
        return observations


def _conductor_snapshot() -> Callable[[OperationsCoordinator], Mapping[str, object]] | None:
    """``tokengate.conductor.conductor_snapshot`` when that distribution is installed."""
    try:
        from tokengate.conductor import conductor_snapshot
    except ImportError:
        return None
    return conductor_snapshot
