"""``executor: "auto"``: move an operation to worker processes when that pays, and back.

An operation tagged ``executor: "auto"`` starts on threads. A review (every
:data:`REVIEW_INTERVAL` seconds while the coordinator runs) looks at what the executors
measured and decides, per operation:

* **to processes** when the thread executor classified its bodies CPU-bound (at least
  :data:`TO_PROCESS_CPU` of their wall time is CPU time, over at least :data:`MIN_SAMPLES`
  sampled calls) and its function can be sent to a worker process (importable by name or
  picklable by value). A thread executor that does not measure CPU time (no
  ``decisions()``) gets one trial instead: the operation goes to processes, where every body
  is measured, and the rule below brings it back if processes do not pay. While there,
  each call's arguments are checked before it is sent: a call whose arguments do not pickle
  runs on threads instead of failing, and the operation goes back to threads.
* **back to threads** when, measured in the worker processes, its bodies are short (mean
  under :data:`MIN_PROCESS_BODY` seconds: the hop to a process costs more than the body) or
  mostly waiting (CPU share under :data:`TO_THREAD_CPU`), or its arguments did not pickle.
  An operation moved back for short bodies or unpicklable arguments stays on threads.

Every decision keeps its reason; the coordinator shows them (``auto_decisions()``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = (
    "MIN_PROCESS_BODY",
    "MIN_SAMPLES",
    "REVIEW_INTERVAL",
    "TO_PROCESS_CPU",
    "TO_THREAD_CPU",
    "AutoDecision",
    "AutoPolicy",
    "process_problem",
)

_log = logging.getLogger("tokengate.coordinator")

#: Seconds between two reviews.
REVIEW_INTERVAL = 0.25
#: Sampled thread calls needed before an operation may move.
MIN_SAMPLES = 8
#: CPU share of the wall time (measured on threads) from which an operation moves.
TO_PROCESS_CPU = 0.6
#: CPU share (measured in processes) below which an operation moves back.
TO_THREAD_CPU = 0.3
#: Mean body time (measured in processes) below which the process hop does not pay.
MIN_PROCESS_BODY = 10e-6
#: Bodies measured in processes before a move back is considered.
MIN_PROCESS_CALLS = 64

THREAD = "thread"
PROCESS = "process"


def _submit_to(backend: Any) -> Callable[[Any], None]:
    def fallback(token: Any) -> None:
        backend.submit((token,))

    return fallback


class _PlanLike(Protocol):
    @property
    def operation_type(self) -> str: ...

    @property
    def func(self) -> Callable[..., Any]: ...


@dataclass(frozen=True, slots=True)
class AutoDecision:
    """Where an ``executor: "auto"`` operation runs now, and why.

    Attributes:
        operation_type: the operation.
        executor: ``"thread"`` or ``"process"``.
        reason: the decision in words.
        moves: how many times it moved.
        settled: True when it will not move again (short bodies, unpicklable function or
            arguments).
    """

    operation_type: str
    executor: str
    reason: str
    moves: int
    settled: bool


class _Entry:
    __slots__ = ("executor", "moves", "plan", "reason", "seen_unpicklable", "settled")

    def __init__(self, plan: _PlanLike) -> None:
        self.plan = plan
        self.executor = THREAD
        self.reason = "not measured yet: runs on threads until its bodies are measured"
        self.moves = 0
        self.settled = False
        self.seen_unpicklable = 0


class AutoPolicy:
    """The ``executor: "auto"`` policy of one coordinator.

    Args:
        backends: the live executor backends, as ``(executor name, core id, backend)``.
        move: ``move(plan, executor_name)`` sends the plan's next tokens there.
        can_send: ``can_send(plan)`` is None when the plan's function can be sent to a worker
            process, else the reason it cannot.
        interval: seconds between reviews (the review thread starts with the first operation).
        make: ``make(executor name, core id)`` makes (or finds) a backend, so that a core's
            worker processes start as soon as an operation moves there; by default the
            ``get`` of the object whose bound ``made`` method ``backends`` is (the
            coordinator's backend table), if any.
    """

    def __init__(
        self,
        backends: Callable[[], Iterable[tuple[str, int, Any]]],
        move: Callable[[Any, str], None],
        can_send: Callable[[Any], str | None],
        *,
        interval: float = REVIEW_INTERVAL,
        make: Callable[[str, int], Any] | None = None,
    ) -> None:
        self._backends = backends
        # Makes and warms the process executor of a core before an operation moves there.
        self._make: Callable[[str, int], Any] | None = make or getattr(
            getattr(backends, "__self__", None), "get", None
        )
        self._threads_of: dict[int, Any] = {}
        self._move = move
        self._can_send = can_send
        self._interval = interval
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the router's side
    def choose(self, plan: Any) -> str:
        """The executor of ``plan``'s tokens now (threads until a review moves it)."""
        name = plan.operation_type
        entry = self._entries.get(name)
        if entry is None:
            with self._lock:
                entry = self._entries.get(name)
                if entry is None:
                    entry = self._entries[name] = _Entry(plan)
                    self._start()
        return entry.executor

    def decisions(self) -> Mapping[str, AutoDecision]:
        """Per ``auto`` operation: where it runs and why."""
        with self._lock:
            return {
                name: AutoDecision(name, e.executor, e.reason, e.moves, e.settled)
                for name, e in self._entries.items()
            }

    def close(self) -> None:
        """Stop reviewing (the coordinator stops)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    # ------------------------------------------------------------------ reviewing
    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(
                target=self._loop, name="tokengate-auto-review", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.review()
            except Exception:
                _log.exception("reviewing the executor: auto operations failed")

    def review(self) -> None:
        """Look at what the executors measured and move operations that should move."""
        thread_view: dict[str, Any] = {}
        process_view: dict[str, list[Any]] = {}
        process_backends: list[Any] = []
        threads_of: dict[int, Any] = {}
        threads_measure = False
        made = list(self._backends())
        for name, core, backend in made:
            if name == THREAD:
                threads_of[core] = backend
                decisions = getattr(backend, "decisions", None)
                if decisions is not None:
                    threads_measure = True
                    if not thread_view:
                        thread_view.update(decisions())
        for name, core, backend in made:
            if name == PROCESS:
                process_backends.append(backend)
                thread_backend = threads_of.get(core)
                if getattr(backend, "fallback", False) is None and thread_backend is not None:
                    backend.fallback = _submit_to(thread_backend)
                profiles = getattr(backend, "operations", None)
                if profiles is not None:
                    for op, profile in profiles().items():
                        process_view.setdefault(op, []).append(profile)
        self._threads_of = threads_of
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            if entry.settled:
                continue
            name = entry.plan.operation_type
            if entry.executor == THREAD:
                if threads_measure or not threads_of:
                    self._consider_processes(entry, thread_view.get(name), process_backends)
                else:
                    self._try_processes(entry, process_backends)
            else:
                self._consider_threads(entry, process_view.get(name, []), process_backends)

    def _consider_processes(
        self, entry: _Entry, decision: Any, process_backends: list[Any]
    ) -> None:
        if decision is None or decision.cpu_fraction is None:
            return
        if decision.samples < MIN_SAMPLES:
            entry.reason = f"on threads: {decision.samples} of {MIN_SAMPLES} calls measured so far"
            return
        fraction = float(decision.cpu_fraction)
        if fraction < TO_PROCESS_CPU:
            entry.reason = (
                f"on threads: {fraction:.2f} of its wall time is CPU time (processes from "
                f"{TO_PROCESS_CPU:.2f}): its bodies mostly wait, threads serve them well"
            )
            return
        problem = self._can_send(entry.plan)
        if problem is not None:
            entry.reason = f"on threads for good: CPU-bound, but {problem}"
            entry.settled = True
            return
        self._set(
            entry,
            PROCESS,
            f"on processes: CPU-bound on threads ({fraction:.2f} of its wall time is CPU "
            "time), and its function can be sent to a worker process",
            process_backends,
        )

    def _try_processes(self, entry: _Entry, process_backends: list[Any]) -> None:
        """The thread executor in use does not measure CPU time: measure in processes."""
        if entry.moves:
            return  # it was tried already and came back
        problem = self._can_send(entry.plan)
        if problem is not None:
            entry.reason = f"on threads for good: {problem}"
            entry.settled = True
            return
        self._set(
            entry,
            PROCESS,
            "on processes, on trial: the thread executor in use does not measure CPU time, "
            "so its bodies are measured in the worker processes",
            process_backends,
        )

    def _consider_threads(
        self, entry: _Entry, profiles: list[Any], process_backends: list[Any]
    ) -> None:
        calls = sum(p.calls for p in profiles)
        unpicklable = sum(p.unpicklable for p in profiles)
        if unpicklable > entry.seen_unpicklable:
            entry.seen_unpicklable = unpicklable
            entry.settled = True
            self._set(
                entry,
                THREAD,
                "on threads for good: some calls' arguments cannot be pickled for a worker "
                "process (those ran on threads)",
                process_backends,
            )
            return
        if calls < MIN_PROCESS_CALLS:
            return
        weighted = [(p.calls, p.mean_body, p.cpu_ratio) for p in profiles if p.mean_body]
        total = sum(n for n, _, _ in weighted) or 1
        mean = sum(n * m for n, m, _ in weighted) / total
        share = sum(n * (r or 0.0) for n, _, r in weighted) / total
        if mean < MIN_PROCESS_BODY:
            entry.settled = True
            self._set(
                entry,
                THREAD,
                f"on threads for good: its bodies take {mean * 1e6:.1f} µs in a process, "
                f"less than the {MIN_PROCESS_BODY * 1e6:.0f} µs from which the hop pays",
                process_backends,
            )
        elif share < TO_THREAD_CPU:
            self._set(
                entry,
                THREAD,
                f"back on threads: in a process only {share:.2f} of its wall time is CPU time",
                process_backends,
            )
        else:
            entry.reason = (
                f"on processes: {mean * 1e6:.0f} µs bodies, {share:.2f} of it CPU time, "
                f"over {calls} calls"
            )

    def _set(self, entry: _Entry, executor: str, reason: str, backends: list[Any]) -> None:
        entry.reason = reason
        if entry.executor == executor:
            return
        name = entry.plan.operation_type
        if executor == PROCESS:
            self._warm()
        self._move(entry.plan, executor)
        entry.executor = executor
        entry.moves += 1
        _log.info("executor auto: %s now runs on %s (%s)", name, executor, reason)

    def _warm(self) -> None:
        """Make the process executor of every core that runs threads and start its worker
        processes now; until one is ready, the operations moved there keep running on the
        core's threads (the executor's fallback) instead of waiting for it to start."""
        make = self._make
        if make is None:
            return
        for core, thread_backend in self._threads_of.items():
            try:
                backend = make(PROCESS, core)
            except Exception:  # stopping, or no process executor: the move still happens
                _log.debug("could not make the process executor of core %d", core)
                continue
            if getattr(backend, "fallback", False) is None:
                backend.fallback = _submit_to(thread_backend)
            warm = getattr(backend, "warm", None)
            if warm is not None:
                warm()


def process_problem(plan: Any) -> str | None:
    """None when ``plan``'s function can be sent to a worker process, else why not (the
    ``can_send`` of :class:`AutoPolicy`)."""
    from ._errors import ProcessDomainError
    from ._procpool import function_ref

    try:
        function_ref(plan.func, plan.operation_type)
    except ProcessDomainError as exc:
        return str(exc)
    return None
