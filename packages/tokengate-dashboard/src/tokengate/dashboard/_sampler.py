"""One sampler per dashboard: reads the coordinator about once a second, keeps a few minutes
of history and hands every viewer the same encoded snapshot.

Everything it reads goes through the coordinator's public API (``stats()``,
``sticky_snapshot()``, ``recent_executions()``, ``in_flight()``) and the conductor's
``conductor_snapshot()`` when that plugin is installed. Every list in a snapshot is bounded,
so a payload stays small whatever the load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokengate.core import OperationsCoordinator

__all__ = ("LIMITS", "MAX_DUTY", "Sampler", "Tick", "bounded")

_log = logging.getLogger("tokengate.dashboard")


@dataclass(frozen=True, slots=True)
class _Limits:
    operations: int = 40
    pins: int = 40
    domains: int = 40
    tokens: int = 25
    recent: int = 15
    errors: int = 15
    latency_sample: int = 2000
    history: int = 300
    text: int = 300
    items: int = 40
    depth: int = 4


#: Caps on every list a snapshot carries.
LIMITS = _Limits()
#: Largest share of the time the sampler may spend sampling (it samples less often if needed).
MAX_DUTY = 0.01
#: Above this many tokens in flight, the list of in-flight tokens and the per-operation
#: in-flight counts are refreshed only every ``RECOUNT_EVERY`` samples.
LARGE_BACKLOG = 2000
RECOUNT_EVERY = 5

_TERMINAL = ("completed", "failed", "killed", "timeout")
_KNOWN_STATS = frozenset(
    {
        "running",
        "paused",
        "paused_operations",
        "cores",
        "in_flight",
        "submitted",
        "by_state",
        "operations",
        "sticky_pins",
    }
)


def bounded(value: object, depth: int = LIMITS.depth) -> object:
    """A JSON-ready copy of ``value`` with strings, lists and mappings cut to size."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, enum.Enum):
        return bounded(value.value, depth)
    if isinstance(value, str):
        return value if len(value) <= LIMITS.text else value[: LIMITS.text - 1] + "…"
    if depth <= 0:
        return bounded(repr(value), 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        items = list(value.items())[: LIMITS.items]
        return {str(k)[: LIMITS.text]: bounded(v, depth - 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [bounded(v, depth - 1) for v in list(value)[: LIMITS.items]]
    return bounded(repr(value), 1)


def _as_row(value: object) -> dict[str, Any]:
    row = bounded(value)
    return row if isinstance(row, dict) else {"value": row}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


@dataclass(frozen=True, slots=True)
class Tick:
    """One sample: its sequence number, the snapshot and its encoded SSE event."""

    seq: int
    snapshot: Mapping[str, Any]
    event: bytes


def _conductor_reader() -> Callable[[OperationsCoordinator], Mapping[str, Any]] | None:
    try:
        from tokengate.conductor import conductor_snapshot
    except ImportError:
        return None
    return conductor_snapshot


class Sampler:
    """Samples a coordinator on an event loop, once per ``interval`` seconds.

    The sampling task starts on the first viewer's loop (:meth:`ensure_running`) and runs
    while that loop does; :meth:`close` ends it and wakes every viewer.
    """

    def __init__(
        self, coordinator: OperationsCoordinator, *, interval: float, controls: bool
    ) -> None:
        self._coordinator = coordinator
        self._interval = interval
        self._controls = controls
        self._conductor = _conductor_reader()
        self._history: deque[dict[str, Any]] = deque(maxlen=LIMITS.history)
        self._errors: deque[dict[str, Any]] = deque(maxlen=LIMITS.errors)
        self._seen: set[str] = set()
        self._last_time: float | None = None
        self._last_done: int | None = None
        self._last_failed: int | None = None
        self._last_by_op: dict[str, int] = {}
        self._tick: Tick | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._cost = 0.0
        self._live_cache: tuple[list[dict[str, Any]], Counter[str]] | None = None
        self._recount = 0
        self._cpu_total = 0.0
        self._samples = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def ensure_running(self) -> None:
        """Start the sampling task on the running loop if it does not run there yet."""
        loop = asyncio.get_running_loop()
        if self._closed:
            return
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            if self._tick is None:
                self._take()
            self._task = loop.create_task(self._run(), name="tokengate-dashboard-sampler")

    def close(self) -> None:
        """Stop sampling and release every viewer waiting for the next tick (any thread)."""
        self._closed = True
        loop, task = self._loop, self._task
        if loop is None or loop.is_closed():
            return

        def _finish() -> None:
            if self._wake is not None:
                self._wake.set()
            if task is not None:
                task.cancel()

        try:
            loop.call_soon_threadsafe(_finish)
        except RuntimeError:  # the loop closed meanwhile
            pass

    async def _run(self) -> None:
        while not self._closed:
            # a sample costs time proportional to the tokens in flight: under a huge backlog
            # the period stretches so that sampling never takes more than MAX_DUTY of the time
            await asyncio.sleep(max(self._interval, self._cost / MAX_DUTY))
            self._take()
            wake, self._wake = self._wake, asyncio.Event()
            if wake is not None:
                wake.set()

    async def next_tick(self, after: int, timeout: float) -> Tick | None:
        """The first tick newer than sequence number ``after``; None after ``timeout`` seconds
        or once closed."""
        tick = self._tick
        if tick is not None and tick.seq > after:
            return tick
        wake = self._wake
        if wake is None or self._closed:
            return None
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            return None
        tick = self._tick
        return tick if tick is not None and tick.seq > after and not self._closed else None

    def latest(self) -> Tick:
        """The newest tick (taking one now if none was taken yet)."""
        tick = self._tick
        return tick if tick is not None else self._take()

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent sampling so far (thread time of every sample)."""
        return self._cpu_total

    @property
    def samples(self) -> int:
        """Samples taken so far."""
        return self._samples

    def history(self) -> list[dict[str, Any]]:
        """The chart points of the last minutes, oldest first."""
        with self._lock:
            return list(self._history)

    # ------------------------------------------------------------------ sampling
    def _take(self) -> Tick:
        started = time.thread_time()
        try:
            snapshot = self._sample()
        except Exception as exc:  # a failing read must not end the dashboard
            _log.exception("dashboard: reading the coordinator failed")
            snapshot = {"t": time.time(), "error": bounded(f"{type(exc).__name__}: {exc}")}
        with self._lock:
            self._seq += 1
            snapshot["seq"] = self._seq
            data = json.dumps(snapshot, separators=(",", ":"), allow_nan=False)
            tick = Tick(self._seq, snapshot, f"event: tick\ndata: {data}\n\n".encode())
            self._tick = tick
        self._cost = time.thread_time() - started
        self._cpu_total += self._cost
        self._samples += 1
        return tick

    def _sample(self) -> dict[str, Any]:
        coordinator = self._coordinator
        now = time.monotonic()
        stats = coordinator.stats()
        raw = stats.as_dict()
        by_state = {str(k): int(v) for k, v in dict(raw.get("by_state", {})).items()}
        done = sum(by_state.get(state, 0) for state in _TERMINAL)
        failed = by_state.get("failed", 0) + by_state.get("timeout", 0)
        elapsed = None if self._last_time is None else max(now - self._last_time, 1e-6)

        # latency: the records completed since the last sample (a sample of the newest ones)
        records = coordinator.recent_executions(LIMITS.latency_sample)
        fresh = [r for r in records if r.token_id not in self._seen]
        self._seen = {r.token_id for r in records}
        latencies = sorted(r.latency for r in fresh if r.state in ("completed", "failed"))
        for record in reversed(fresh):
            if record.error is not None:
                self._errors.appendleft(_as_row(record))

        # cores: the known figures first, anything else (executor details) kept, bounded
        cores = [bounded(core) for core in raw.get("cores", [])]
        queued = sum(int(c.get("depth", 0) or 0) for c in cores if isinstance(c, dict))
        busy = sum(
            int(c.get("busy_workers", c.get("busy", 0)) or 0) for c in cores if isinstance(c, dict)
        )

        live_total = int(raw.get("in_flight", 0) or 0)
        live_rows, live_by_op = self._live(live_total)
        paused_ops = [str(op) for op in raw.get("paused_operations", ())]
        operations, operations_total = self._operations(raw, live_by_op, paused_ops, elapsed)

        point = {
            "t": round(time.time(), 3),
            "rate": None
            if elapsed is None
            else round((done - (self._last_done or 0)) / elapsed, 2),
            "failed_rate": (
                None if elapsed is None else round((failed - (self._last_failed or 0)) / elapsed, 2)
            ),
            "p50": _ms(_percentile(latencies, 0.50)),
            "p99": _ms(_percentile(latencies, 0.99)),
            "in_flight": live_total,
            "queued": queued,
            "busy": busy,
        }
        self._last_time, self._last_done, self._last_failed = now, done, failed
        with self._lock:
            self._history.append(point)

        pins = coordinator.sticky_snapshot()
        domains: list[Any] = []
        domain_total = 0
        if self._conductor is not None:
            try:
                live = self._conductor(coordinator)
            except Exception:
                _log.debug("dashboard: conductor snapshot unavailable", exc_info=True)
                live = {}
            domain_total = len(live)
            domains = [
                {**_as_row(info), "seed": str(seed)}
                for seed, info in list(live.items())[: LIMITS.domains]
            ]

        extra = {k: bounded(v) for k, v in raw.items() if k not in _KNOWN_STATS}
        # where ``executor: "auto"`` operations run and why, when the coordinator says so
        auto = getattr(coordinator, "auto_decisions", None)
        if callable(auto) and "auto_decisions" not in extra:
            try:
                decisions = auto()
            except Exception:
                _log.debug("dashboard: auto decisions unavailable", exc_info=True)
            else:
                if decisions:
                    extra["auto_decisions"] = bounded(decisions)
        return {
            "t": point["t"],
            "controls": self._controls,
            "coordinator": {
                "name": bounded(repr(coordinator)),
                "running": bool(raw.get("running", False)),
                "paused": bool(raw.get("paused", False)),
                "paused_operations": paused_ops[: LIMITS.operations],
                "in_flight": live_total,
                "submitted": int(raw.get("submitted", 0) or 0),
                "sticky_pins": int(raw.get("sticky_pins", len(pins)) or 0),
            },
            "cores": cores,
            "by_state": by_state,
            "point": point,
            "operations": operations,
            "operations_total": operations_total,
            "sticky": {
                "total": len(pins),
                "pins": [[bounded(k), int(v)] for k, v in list(pins.items())[: LIMITS.pins]],
            },
            "conductor": {
                "available": self._conductor is not None,
                "total": domain_total,
                "domains": domains,
            },
            "tokens": {
                "total": live_total,
                "items": live_rows,
            },
            "recent": [bounded(r.as_dict()) for r in records[: LIMITS.recent]],
            "errors": list(self._errors),
            "extra": extra,
        }

    def _live(self, live_total: int) -> tuple[list[dict[str, Any]], Counter[str]]:
        """The oldest in-flight tokens (rows) and the in-flight count per operation. Both
        take a pass over every in-flight token: under a large backlog they are refreshed only
        every ``RECOUNT_EVERY`` samples."""
        if live_total <= LARGE_BACKLOG or self._recount <= 0 or self._live_cache is None:
            tokens = self._coordinator.in_flight()
            rows = [
                {
                    "token_id": t.token_id,
                    "operation_type": bounded(t.operation_type),
                    "state": t.state.value,
                    "core_id": t.core_id,
                }
                for t in tokens[: LIMITS.tokens]
            ]
            self._live_cache = (rows, Counter(t.operation_type for t in tokens))
            self._recount = RECOUNT_EVERY
        self._recount -= 1
        return self._live_cache

    def _operations(
        self,
        raw: Mapping[str, Any],
        live_by_op: Counter[str],
        paused_ops: list[str],
        elapsed: float | None,
    ) -> tuple[list[dict[str, Any]], int]:
        rows: dict[str, dict[str, Any]] = {}
        by_op: dict[str, int] = {}
        for name, op in dict(raw.get("operations", {})).items():
            row = dict(op) if isinstance(op, Mapping) else {}
            finished = sum(int(row.get(state, 0) or 0) for state in _TERMINAL)
            by_op[name] = finished
            ran = int(row.get("completed", 0) or 0) + int(row.get("failed", 0) or 0)
            total = float(row.get("total_duration", 0.0) or 0.0)
            before = self._last_by_op.get(name)
            rate = None if elapsed is None or before is None else (finished - before) / elapsed
            rows[name] = {
                **{k: bounded(v) for k, v in row.items()},
                "operation_type": name,
                "finished": finished,
                "mean_ms": _ms(total / ran) if ran else None,
                "max_ms": _ms(float(row.get("max_duration", 0.0) or 0.0)),
                "rate": None if rate is None else round(rate, 2),
            }
        self._last_by_op = by_op
        for name in set(live_by_op) | set(paused_ops):
            rows.setdefault(name, {"operation_type": name, "finished": 0, "rate": None})
        for name, row in rows.items():
            row["in_flight"] = live_by_op.get(name, 0)
            row["paused"] = name in paused_ops
        ordered = sorted(
            rows.values(),
            key=lambda r: (
                -(r.get("rate") or 0.0),
                -r["in_flight"],
                -r["finished"],
                r["operation_type"],
            ),
        )
        shown = [
            {**r, "operation_type": bounded(r["operation_type"])}
            for r in ordered[: LIMITS.operations]
        ]
        return shown, len(rows)
