"""Execution records and the typed statistics snapshot."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._enums import TokenState
from ._executors import ExecutorStats
from ._threads_policy import OperationDecision

__all__ = (
    "CoordinatorStats",
    "CoreStats",
    "ExecutionRecord",
    "OperationMetrics",
    "OperationStats",
    "error_text",
)

#: Characters of an exception's ``repr`` kept in an execution record: the history is bounded
#: by size, not only by count (a 100 kB error message must not be kept whole).
ERROR_TEXT_LIMIT = 500


def error_text(exc: BaseException) -> str:
    """``repr(exc)`` cut to ``ERROR_TEXT_LIMIT`` characters (the cut is marked with the full
    length). Never raises: an exception whose ``repr`` fails is named by its type."""
    try:
        text = repr(exc)
    except Exception:
        return f"<{type(exc).__qualname__}: repr() failed>"
    if len(text) > ERROR_TEXT_LIMIT:
        return f"{text[: ERROR_TEXT_LIMIT - 40]}… [{len(text):,} chars, cut]"
    return text


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """What is written on a token's terminal move.

    Attributes:
        token_id: the token.
        operation_type: its operation.
        state: its terminal state (``completed``, ``failed``, ``killed``, ``timeout``).
        success: True for ``completed``.
        duration: seconds the body ran (None if it never started).
        latency: seconds from submission to the terminal move.
        core_id: the core domain it was routed to (None if never routed).
        worker_id: the local worker that ran it (None if it never started).
        error: ``repr`` of the exception for unsuccessful tokens (cut to 500 characters),
            else None.
    """

    token_id: str
    operation_type: str
    state: str
    success: bool
    duration: float | None
    latency: float
    core_id: int | None
    worker_id: int | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CoreStats:
    """One core domain at the time of the snapshot.

    Attributes:
        core_id: the domain (1..N).
        workers: its worker threads.
        busy_workers: workers running a body now (killed bodies still running count).
        depth: tokens handed to its executors and not started yet.
        backlog: tokens an executor holds back beyond its own queue (its stats detail
            ``backlog``; 0 for the built-in thread executor, whose domain queue is shared by
            its workers).
        process_alive: whether its worker process runs (None: never started).
        executors: the snapshot of each executor backend of the domain, by executor name
            (the figures above add them up; backends are made on a domain's first token).
    """

    core_id: int
    workers: int
    busy_workers: int
    depth: int
    backlog: int
    process_alive: bool | None
    executors: Mapping[str, ExecutorStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OperationStats:
    """Terminal counts and body durations of one operation (since the coordinator started)."""

    operation_type: str
    completed: int
    failed: int
    killed: int
    timeout: int
    total_duration: float
    max_duration: float

    @property
    def finished(self) -> int:
        """Tokens of this operation that reached a terminal state."""
        return self.completed + self.failed + self.killed + self.timeout

    @property
    def mean_duration(self) -> float:
        """Mean body duration of the tokens that ran, in seconds."""
        ran = self.completed + self.failed
        return self.total_duration / ran if ran else 0.0


@dataclass(frozen=True, slots=True)
class CoordinatorStats:
    """A typed snapshot returned by ``OperationsCoordinator.stats()``.

    Attributes:
        running: whether the coordinator accepts calls.
        paused: whether admission is paused globally.
        paused_operations: operations whose admission is paused.
        cores: per-core depth and busy workers.
        in_flight: tokens not yet terminal.
        submitted: tokens created since start.
        by_state: counts by state (in-flight states are live, terminal ones cumulative).
        operations: per-operation counts and durations (bounded: the most recent operations).
        sticky_pins: live sticky pins.
        scheduler: what the thread executor decided per operation and why (CPU-bound or
            blocking, the measured CPU share, the reason); empty until a thread body ran.
    """

    running: bool
    paused: bool
    paused_operations: tuple[str, ...]
    cores: tuple[CoreStats, ...]
    in_flight: int
    submitted: int
    by_state: Mapping[str, int]
    operations: Mapping[str, OperationStats]
    sticky_pins: int
    scheduler: Mapping[str, OperationDecision] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-ready dict."""
        data = asdict(self)
        data["by_state"] = dict(self.by_state)
        data["operations"] = {k: asdict(v) for k, v in self.operations.items()}
        data["scheduler"] = {k: asdict(v) for k, v in self.scheduler.items()}
        return data


_KEYS = {
    TokenState.COMPLETED: 0,
    TokenState.FAILED: 1,
    TokenState.KILLED: 2,
    TokenState.TIMEOUT: 3,
}


class OperationMetrics:
    """Per-operation terminal counters, bounded to the ``limit`` most recent operations."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._ops: OrderedDict[str, list[float]] = OrderedDict()
        self._totals = [0, 0, 0, 0]
        self._lock = threading.Lock()

    def record(self, operation_type: str, state: TokenState, duration: float | None) -> None:
        with self._lock:
            self._count(operation_type, state, duration)

    def record_many(self, rows: list[tuple[str, TokenState, float | None]]) -> None:
        """:meth:`record` for a batch of ``(operation_type, state, duration)`` rows, under
        one lock."""
        count = self._count
        with self._lock:
            for operation_type, state, duration in rows:
                count(operation_type, state, duration)

    def _count(self, operation_type: str, state: TokenState, duration: float | None) -> None:
        """One terminal move (with the lock held)."""
        index = _KEYS[state]
        row = self._ops.get(operation_type)
        if row is None:
            row = self._ops[operation_type] = [0, 0, 0, 0, 0.0, 0.0]
            if len(self._ops) > self._limit:
                self._ops.popitem(last=False)
        row[index] += 1
        self._totals[index] += 1
        if duration is not None:
            row[4] += duration
            if duration > row[5]:
                row[5] = duration

    def totals(self) -> dict[TokenState, int]:
        with self._lock:
            return {state: self._totals[i] for state, i in _KEYS.items()}

    def snapshot(self) -> dict[str, OperationStats]:
        with self._lock:
            rows = list(self._ops.items())
        return {
            op: OperationStats(op, int(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5])
            for op, r in rows
        }
