"""What the thread executor decides per operation, and the process-wide CPU slots.

* :class:`OperationProfile` measures, on a sample of calls, how much of a body's wall time is
  CPU time (``time.thread_time`` against ``time.perf_counter``) and classifies the operation
  ``cpu`` or ``blocking``; :class:`OperationDecision` is its snapshot with the reason.
* :class:`CpuSlots` caps the CPU-bound bodies running at once in the whole process: under the
  GIL a second runnable CPU-bound thread only fights for the lock, so the cap is one; on a
  free-threaded build it is the number of usable CPUs (and one per core domain).
* :class:`SlotMonitor` takes the slot back from a body that holds it while blocked (its
  thread's CPU clock stands still) or that has run long while others wait for the slot, so
  neither a blocking call nor a long one holds the others up.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._config import machine_cpus

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = (
    "BLOCKING",
    "CPU",
    "UNKNOWN",
    "CpuSlots",
    "OperationDecision",
    "OperationProfile",
    "ProfileTable",
    "SlotMonitor",
    "cpu_slots",
    "gil_enabled",
)

_log = logging.getLogger("tokengate.worker")

CPU = "cpu"
BLOCKING = "blocking"
UNKNOWN = "unknown"

#: Calls measured first, one by one; after them one call in ``SAMPLE_EVERY``.
SAMPLE_FIRST = 8
SAMPLE_EVERY = 16
#: A first sample at or above this CPU fraction classifies the operation CPU-bound.
CPU_FRACTION = 0.3
#: Hysteresis once classified: CPU-bound drops to blocking below ``TO_BLOCKING``, blocking
#: turns CPU-bound above ``TO_CPU`` (moving averages, weight ``SMOOTHING`` for a new sample).
TO_BLOCKING = 0.2
TO_CPU = 0.45
SMOOTHING = 0.25


def gil_enabled() -> bool:
    """Whether this interpreter runs with the GIL (False on a free-threaded build)."""
    check: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


@dataclass(frozen=True, slots=True)
class OperationDecision:
    """What the thread executor decided for one operation, and why.

    Attributes:
        operation_type: the operation.
        kind: ``"cpu"`` (bodies take a CPU slot: few run at once), ``"blocking"`` (bodies run
            many at once, up to ``max_blocking_threads``) or ``"unknown"`` (not measured yet:
            run as CPU-bound until the first sample).
        cpu_fraction: moving average of CPU time / wall time over the sampled calls.
        samples: calls measured.
        calls: calls seen.
        reason: the decision in words.
    """

    operation_type: str
    kind: str
    cpu_fraction: float | None
    samples: int
    calls: int
    reason: str


class OperationProfile:
    """The measured behaviour of one operation (shared by a coordinator's domains).

    Updates come from worker threads without a lock: a lost update of a moving average is
    harmless, and the kind is only ever replaced by a valid value.
    """

    __slots__ = ("calls", "exempt", "fraction", "kind", "name", "reason", "samples", "wall")

    def __init__(self, name: str, *, exempt_reason: str | None = None) -> None:
        self.name = name
        self.calls = 0
        self.samples = 0
        self.fraction: float | None = None
        #: moving average of a sampled body's wall time, seconds
        self.wall: float | None = None
        #: storage-tier operations are blocking by their tag and capped by their tier
        self.exempt = exempt_reason is not None
        self.kind = BLOCKING if self.exempt else UNKNOWN
        self.reason = exempt_reason or "not measured yet: runs as CPU-bound until measured"

    def should_sample(self) -> bool:
        """Count a call; True when this one is to be measured."""
        calls = self.calls = self.calls + 1
        return calls <= SAMPLE_FIRST or calls % SAMPLE_EVERY == 0

    def record(self, cpu: float, wall: float, cpu_cap: int) -> None:
        """Fold in one measured call (``cpu`` and ``wall`` seconds) and re-decide."""
        if wall <= 0.0:
            return
        sample = min(1.0, max(0.0, cpu / wall))
        old = self.fraction
        fraction = sample if old is None else old + SMOOTHING * (sample - old)
        self.fraction = fraction
        mean = self.wall
        self.wall = wall if mean is None else mean + SMOOTHING * (wall - mean)
        self.samples += 1
        if self.exempt:
            return
        kind = self.kind
        if kind is UNKNOWN:
            new = CPU if fraction >= CPU_FRACTION else BLOCKING
        elif kind is CPU and fraction < TO_BLOCKING:
            new = BLOCKING
        elif kind is BLOCKING and fraction > TO_CPU:
            new = CPU
        else:
            new = kind
        if new is CPU:
            self.reason = (
                f"CPU-bound: {fraction:.2f} of its wall time is CPU time; at most {cpu_cap} "
                f"CPU-bound bod{'y runs' if cpu_cap == 1 else 'ies run'} at once in the "
                "process" + (" (the GIL)" if gil_enabled() else "")
            )
        else:
            self.reason = (
                f"blocking: {fraction:.2f} of its wall time is CPU time; its bodies run "
                "alongside each other, up to max_blocking_threads at once"
            )
        if new is not kind:
            _log.debug("operation %s is now %s (%s)", self.name, new, self.reason)
            self.kind = new

    def demoted(self, why: str) -> None:
        """A body of this operation held a CPU slot while blocked: note it in the reason."""
        if self.kind is not BLOCKING:
            self.reason = f"{self.reason}; a body lost its CPU slot: {why}"

    def decision(self) -> OperationDecision:
        """A snapshot of the decision."""
        return OperationDecision(
            self.name, self.kind, self.fraction, self.samples, self.calls, self.reason
        )


class ProfileTable:
    """The operation profiles of one coordinator (bounded: oldest evicted first)."""

    __slots__ = ("_limit", "_lock", "_profiles")

    def __init__(self, limit: int) -> None:
        self._profiles: dict[str, OperationProfile] = {}
        self._limit = max(1, limit)
        self._lock = threading.Lock()

    @property
    def known(self) -> Mapping[str, OperationProfile]:
        """The profiles made so far, by operation (read-only use: a fast lookup)."""
        return self._profiles

    def get(self, token: TaskToken[Any]) -> OperationProfile:
        """The profile of ``token``'s operation (made on its first call)."""
        name = token.operation_type
        profile = self._profiles.get(name)
        if profile is not None:
            return profile
        exempt = None
        storage = token.tags.get("storage_speed")
        if storage is not None:
            tier = getattr(storage, "value", storage)
            exempt = (
                f"blocking by its storage_speed tag ({tier}): capped by the tier's limit, not "
                "by max_blocking_threads"
            )
        with self._lock:
            profile = self._profiles.get(name)
            if profile is None:
                while len(self._profiles) >= self._limit:
                    del self._profiles[next(iter(self._profiles))]
                profile = self._profiles[name] = OperationProfile(name, exempt_reason=exempt)
        return profile

    def decisions(self) -> Mapping[str, OperationDecision]:
        """Every tracked operation's decision."""
        return {name: p.decision() for name, p in list(self._profiles.items())}


class SlotUser(Protocol):
    """An executor domain that can wait for, and receive, a CPU slot."""

    def grant_slot(self) -> bool:
        """Take a slot handed over by :class:`CpuSlots`; False refuses it (no work left)."""
        ...

    def inspect_runner(self, now: float) -> bool:
        """Called by the monitor; True while a token of the domain waits for a slot."""
        ...


class CpuSlots:
    """Process-wide slots for CPU-bound bodies, handed over in FIFO order of the waiters."""

    __slots__ = ("_free", "_lock", "_waiters", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._lock = threading.Lock()
        self._waiters: deque[SlotUser] = deque()

    @property
    def contended(self) -> bool:
        """Some domain waits for a slot."""
        return bool(self._waiters)

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self._free

    def acquire_or_wait(self, user: SlotUser, monitor: SlotMonitor | None = None) -> bool:
        """Take a slot now (True) or queue ``user`` for the next free one (False; its
        ``grant_slot`` is called then; ``monitor`` is woken to watch the holders). Safe under
        a domain's lock: it never calls back."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            if user not in self._waiters:
                self._waiters.append(user)
        if monitor is not None:
            monitor.wake()
        return False

    def withdraw(self, user: SlotUser) -> None:
        """Stop waiting (the domain is shutting down)."""
        with self._lock:
            try:
                self._waiters.remove(user)
            except ValueError:
                pass

    def release(self) -> None:
        """Give a slot back: to the longest waiter that takes it, else to the free pool.

        Must not be called while holding a domain's lock (``grant_slot`` takes it).
        """
        while True:
            with self._lock:
                if not self._waiters:
                    self._free += 1
                    return
                user = self._waiters.popleft()
            try:
                if user.grant_slot():
                    return
            except Exception:  # a broken domain must not swallow the slot
                _log.exception("handing a CPU slot to %r failed", user)


class SlotMonitor:
    """One daemon thread per process that looks at the slot holders every ``PERIOD``
    seconds, and only while some token waits for a slot (behind a busy runner, or in
    another domain): with nobody waiting, a long or blocked runner holds up no one, and the
    monitor sleeps without a timer."""

    PERIOD = 0.01

    __slots__ = ("_event", "_lock", "_thread", "_users", "active")

    def __init__(self) -> None:
        self._users: weakref.WeakSet[SlotUser] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        #: True while the monitor looks (read without the lock to keep :meth:`wake` cheap)
        self.active = False

    def register(self, user: SlotUser) -> None:
        """Include ``user`` in every look (held weakly)."""
        with self._lock:
            self._users.add(user)

    def wake(self) -> None:
        """Some token waits for a slot: look at the holders until nobody waits."""
        if self.active:
            return
        with self._lock:
            if self._is_active():
                return
            self.active = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._main, name="tokengate-cpu-slot-monitor", daemon=True
                )
                self._thread.start()
        self._event.set()

    def _is_active(self) -> bool:
        return self.active

    def _look(self) -> bool:
        now = time.perf_counter()
        waiting = False
        with self._lock:  # a WeakSet cannot be copied while another thread adds to it
            users = list(self._users)
        for user in users:
            try:
                waiting = user.inspect_runner(now) or waiting
            except Exception:
                _log.exception("inspecting the CPU slot of %r failed", user)
        return waiting

    def _main(self) -> None:
        try:
            self._run()
        finally:  # never leave the monitor marked active without its thread
            with self._lock:
                self.active = False
                self._event.clear()

    def _run(self) -> None:
        sleep = time.sleep
        while True:
            self._event.wait()
            while True:
                sleep(self.PERIOD)
                if self._look():
                    continue
                with self._lock:
                    self.active = False
                    self._event.clear()
                # a wake() that saw active still True returned: look once more
                if not self._look():
                    break
                with self._lock:
                    self.active = True


_SLOTS: CpuSlots | None = None
_MONITOR = SlotMonitor()
_SLOTS_LOCK = threading.Lock()


def cpu_slots() -> tuple[CpuSlots, SlotMonitor]:
    """The process's CPU slots (1 under the GIL, the usable CPUs when free-threaded) and
    their monitor. The GIL is a process-wide resource, so these two are process-wide too."""
    global _SLOTS
    slots = _SLOTS
    if slots is None:
        with _SLOTS_LOCK:
            slots = _SLOTS
            if slots is None:
                slots = _SLOTS = CpuSlots(1 if gil_enabled() else max(1, len(machine_cpus())))
    return slots, _MONITOR
