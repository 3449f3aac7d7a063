"""``ThreadExecutor``: the thread backend of a core domain.

One instance serves one core domain. Its workers share the domain's queues, so no token waits
while a worker that may run it idles. Per operation it measures how much of a body's wall
time is CPU time (:mod:`._threads_policy`) and runs

* **CPU-bound** (and not yet measured) bodies one domain at a time on the process-wide CPU
  slots: under the GIL a second runnable CPU-bound thread only fights for the lock, so a
  single *runner* thread drains the domain's CPU queue back to back, with no hand-off per
  token, and hands the slot to another domain after a time slice when one waits;
* **blocking** bodies many at once, on as many threads as needed up to
  ``max_blocking_threads`` per coordinator (storage-tier operations are capped by their tier).

A body that waits for another token (managed blocking, :mod:`._blocking`) gives its slot
back while it waits, and a compensating worker may run meanwhile (at most
``max_compensation_threads`` extra threads per domain). A body that holds the CPU slot while
blocked in anything else (its thread's CPU clock stands still), or that runs long while
others wait, loses the slot to the next runner (:class:`~._threads_policy.SlotMonitor`).
Workers park when there is nothing they may run; a submit wakes one only when no worker is
already awake to take the work.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._blocking import install
from ._executors import ExecutorBackend, ExecutorDomain, ExecutorStats
from ._loops import deferred_since, deferring, flush_deferred
from ._threads_policy import (
    BLOCKING,
    OperationDecision,
    OperationProfile,
    ProfileTable,
    cpu_slots,
)

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("ThreadExecutor", "run_plain")

_log = logging.getLogger("tokengate.worker")
_perf = time.perf_counter
_thread_time = time.thread_time

_Entry = tuple["TaskToken[Any]", OperationProfile]  # a dequeued token and its profile
_CPU_JOB = 1
_IO_JOB = 2

#: Seconds a domain keeps the CPU slot while another domain waits for it.
SLICE = 0.02
#: A runner's body older than this, while others wait for the slot, lends the slot on.
LONG_BODY = 0.05
#: Slots a domain may lend to long bodies at once (each adds one runnable CPU thread).
MAX_LENT = 2
#: A runner whose CPU clock advanced less than this share of the wall time between two looks
#: of the monitor (at least ``MIN_WINDOW`` apart) is blocked, and loses the slot.
BLOCKED_SHARE = 0.1
MIN_WINDOW = 0.003
#: Seconds an extra (beyond ``workers_per_core``) idle thread waits before it exits.
IDLE_EXIT = 5.0
#: While a runner goes from one body to the next of an operation whose bodies take less than
#: ``SHORT_BODY`` seconds, it wakes each event loop once per ``FLUSH_AFTER`` seconds (or when
#: its queue runs dry) instead of once per completion: each wake-up hands the GIL to the
#: loop and back. With an empty queue every completion wakes its loop at once.
SHORT_BODY = 0.0005
FLUSH_AFTER = 0.001


def run_plain(token: TaskToken[Any]) -> bool:
    """Run ``token``'s body in this thread: ``set_running``, the call, the outcome.

    Returns:
        False when the token must not run (``set_running`` refused), else True.
    """
    if not token.set_running():
        return False
    try:
        result = token.func(*token.args, **token.kwargs)
    except BaseException as exc:
        token.set_exception(exc)
    else:
        token.set_result(result)
    return True


class _Shared:
    """What a coordinator's thread executors share: operation profiles and the bound on
    blocking bodies running at once, with the executors waiting for room under it."""

    __slots__ = ("__weakref__", "blocking", "cap", "executors", "lock", "profiles", "waiting")

    def __init__(self, cap: int, profile_limit: int) -> None:
        self.profiles = ProfileTable(profile_limit)
        self.cap = cap
        self.blocking = 0
        self.lock = threading.Lock()
        self.executors: weakref.WeakSet[ThreadExecutor] = weakref.WeakSet()
        self.waiting: set[ThreadExecutor] = set()

    def take(self, executor: ThreadExecutor) -> bool:
        """Count one more blocking body, or note that ``executor`` waits for room."""
        with self.lock:
            if self.blocking < self.cap:
                self.blocking += 1
                return True
            self.waiting.add(executor)
            return False

    def room(self, executor: ThreadExecutor) -> bool:
        """Whether a blocking body could start now; if not, ``executor`` waits for room."""
        with self.lock:
            if self.blocking < self.cap:
                return True
            self.waiting.add(executor)
            return False

    def force(self) -> None:
        """Count one more blocking body, above the bound if need be."""
        with self.lock:
            self.blocking += 1

    def give(self) -> list[ThreadExecutor]:
        """Count one blocking body less; the executors to wake when that makes room."""
        with self.lock:
            self.blocking -= 1
            if self.blocking >= self.cap or not self.waiting:
                return []
            woken = list(self.waiting)
            self.waiting.clear()
        return woken


_SHARED: weakref.WeakValueDictionary[str, _Shared] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_for(domain: ExecutorDomain) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(domain.coordinator_name)
        if shared is None:
            config = domain.config
            shared = _SHARED[domain.coordinator_name] = _Shared(
                config.max_blocking_threads, config.operation_stats_limit
            )
    return shared


class _Worker:
    """One worker thread; also its thread's blocking handler."""

    __slots__ = (
        "clock",
        "counted",
        "cpu_mark",
        "depth",
        "detached",
        "executor",
        "index",
        "io_slot",
        "lent",
        "park",
        "parked",
        "profile",
        "returned",
        "searching",
        "started",
        "thread",
        "token",
        "wall_mark",
    )

    def __init__(self, executor: ThreadExecutor, index: int) -> None:
        self.executor = executor
        self.index = index
        self.park = threading.Lock()
        self.park.acquire()  # released once per wake-up
        self.parked = False
        self.searching = False
        self.thread: threading.Thread | None = None
        self.clock: int | None = None
        self.token: TaskToken[Any] | None = None
        self.profile: OperationProfile | None = None
        self.started = 0.0
        self.cpu_mark: float | None = None
        self.wall_mark = 0.0
        self.detached = False  # a CPU body that lost (or gave back) the slot
        self.lent = False  # ... because it ran long: counts against MAX_LENT
        self.io_slot = False  # runs a blocking body
        self.counted = False  # ... that counts against max_blocking_threads
        self.returned = False  # gave its blocking slot back while it waits for a token
        self.depth = 0

    def begin_blocking(self) -> None:
        """The body is about to wait for another token: give its slot back."""
        flush_deferred()  # completions held back must not wait for this wait
        self.depth += 1
        if self.depth == 1:
            self.executor._begin_wait(self)

    def end_blocking(self) -> None:
        """The wait is over."""
        self.depth -= 1
        if self.depth == 0:
            self.executor._end_wait(self)


class ThreadExecutor(ExecutorBackend):
    """The thread backend of one core domain (registered as ``"thread"``).

    ``ThreadExecutor(domain)`` is itself the factory: ``registry.register("thread",
    ThreadExecutor)``. ``runner(token)`` runs one admitted token in the worker thread
    (``set_running``, the extensions around the body, the body, the outcome); the default,
    :func:`run_plain`, only calls the function.

    :meth:`decisions` tells what the scheduler decided per operation and why.
    """

    def __init__(
        self,
        domain: ExecutorDomain,
        *,
        runner: Callable[[TaskToken[Any]], object] | None = None,
    ) -> None:
        """Serve ``domain`` with ``workers_per_core`` standing threads (more on demand)."""
        config = domain.config
        self._domain = domain
        self._run = run_plain if runner is None else runner
        self._name = f"{domain.coordinator_name}-core{domain.core_id}"
        self._shared = _shared_for(domain)
        self._shared.executors.add(self)
        self._slots, self._monitor = cpu_slots()
        self._monitor.register(self)
        self._lock = threading.Lock()
        # Queues of tokens (not of (token, profile) pairs: a pair per queued token would be
        # one more object per token for the garbage collector to count); the profile is
        # looked up again when a token is taken.
        self._cpu_q: deque[TaskToken[Any]] = deque()
        self._io_q: deque[TaskToken[Any]] = deque()
        self._known = self._shared.profiles.known
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._keep = config.workers_per_core
        self._max_threads = (
            config.workers_per_core + config.max_blocking_threads + config.max_compensation_threads
        )
        self._max_waiting = config.max_compensation_threads
        self._indexes = itertools.count()
        self._searching = 0
        self._busy = 0
        self._waiting = 0
        self._io_running = 0
        self._has_slot = False
        self._runner: _Worker | None = None
        self._slot_since = 0.0
        self._lent = 0
        self._stopping = False
        self._peak = 0
        self._demotions = 0
        self._compensations = 0
        self._wakeups = 0
        with self._lock:  # the domain's standing threads, parked until there is work
            standing = [self._spawn_parked() for _ in range(self._keep)]
        for worker in standing:
            self._start(worker)

    def __repr__(self) -> str:
        return f"<ThreadExecutor {self._name} workers={len(self._workers)}>"

    # ------------------------------------------------------------------ backend interface
    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Queue ``ADMITTED`` tokens (FIFO per class) and wake a worker if none is awake."""
        known = self._shared.profiles.known
        with self._lock:
            if self._stopping:
                rejected = list(tokens)
            else:
                rejected = []
                cpu_q = self._cpu_q
                for token in tokens:
                    profile = known.get(token.operation_type) or self._shared.profiles.get(token)
                    if profile.kind is BLOCKING:
                        self._io_q.append(token)
                    else:
                        cpu_q.append(token)
                if self._runner is not None and not self._io_q:
                    # the runner drains the CPU queue: nobody to wake, only to watch
                    if not self._monitor.active:
                        self._monitor.wake()
                    return
                wake = self._kick()
        for token in rejected:
            token.kill(f"the thread executor of {self._name} is shut down")
        if not rejected and wake is not None:
            self._wake(wake)

    def shutdown(self, timeout: float) -> None:
        """End every held token (queued or running), stop the threads; never hangs."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._stopping = True
            queued = [*self._cpu_q, *self._io_q]
            self._cpu_q.clear()
            self._io_q.clear()
            running = [w.token for w in self._workers if w.token is not None]
            idle = self._idle[:]
            self._idle.clear()
            for worker in idle:
                worker.parked = False
            release = self._has_slot and self._runner is None
            if release:
                self._has_slot = False
            workers = list(self._workers)
        self._slots.withdraw(self)
        if release:
            self._slots.release()
        for token in queued:
            token.kill(f"the thread executor of {self._name} shut down before the body ran")
        for token in running:
            if token is not None:
                token.kill(f"the thread executor of {self._name} shut down while the body ran")
        for worker in idle:
            worker.park.release()
        current = threading.current_thread()
        for worker in workers:
            thread = worker.thread
            if thread is None or thread is current or thread.ident is None:
                continue  # not started yet: it sees the executor stopping and returns
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _log.warning(
                    "%s: thread %s still runs a body after shutdown; abandoned (daemon)",
                    self._name,
                    thread.name,
                )

    def stats(self) -> ExecutorStats:
        """Threads, running bodies, queued tokens, and the scheduler's state."""
        with self._lock:
            runner = self._runner
            slot = (
                "running"
                if runner is not None
                else ("claimed" if self._has_slot else ("waiting" if self._cpu_q else "idle"))
            )
            return ExecutorStats(
                workers=len(self._workers),
                busy=self._busy,
                queued=len(self._cpu_q) + len(self._io_q),
                alive=not self._stopping,
                details={
                    "cpu_slot": slot,
                    "cpu_queued": len(self._cpu_q),
                    "blocking_queued": len(self._io_q),
                    "blocking_running": self._io_running,
                    "waiting_on_tokens": self._waiting,
                    "peak_threads": self._peak,
                    "slot_demotions": self._demotions,
                    "compensations": self._compensations,
                    "wakeups": self._wakeups,
                },
            )

    def decisions(self) -> Mapping[str, OperationDecision]:
        """Per operation: ``cpu`` / ``blocking`` / ``unknown``, the measured CPU fraction and
        the reason (shared by every domain of the coordinator)."""
        return self._shared.profiles.decisions()

    # ------------------------------------------------------------------ scheduling (locked)
    def _profile(self, token: TaskToken[Any]) -> OperationProfile:
        """The profile of ``token``'s operation (a dict lookup once it is known)."""
        return self._known.get(token.operation_type) or self._shared.profiles.get(token)

    def _kick(self, spawn: bool = True) -> _Worker | None:
        """With the lock held: the worker to wake for runnable work nobody is awake for
        (a parked one, or a new one when ``spawn``)."""
        if self._stopping or self._searching:
            return None
        if self._cpu_q and not self._has_slot and self._slots.acquire_or_wait(self, self._monitor):
            self._claim_slot()
        if (self._has_slot and self._runner is None and self._cpu_q) or (
            self._io_q and (self._profile(self._io_q[0]).exempt or self._shared.room(self))
        ):
            return self._rouse(spawn)
        return None

    def _claim_slot(self) -> None:
        self._has_slot = True
        self._runner = None
        self._slot_since = _perf()

    def _spawn_parked(self) -> _Worker:
        """With the lock held: a new worker that parks as soon as its thread starts."""
        worker = _Worker(self, next(self._indexes))
        self._workers.add(worker)
        self._peak = max(self._peak, len(self._workers))
        return worker

    def _rouse(self, spawn: bool = True) -> _Worker | None:
        if self._idle:
            worker = self._idle.pop()
            worker.parked = False
        elif spawn and len(self._workers) < self._max_threads:
            worker = _Worker(self, next(self._indexes))
            self._workers.add(worker)
            self._peak = max(self._peak, len(self._workers))
        else:
            return None
        worker.searching = True
        self._searching += 1
        return worker

    def _next(
        self, worker: _Worker, done: int
    ) -> tuple[_Entry | None, int, bool, list[ThreadExecutor], _Worker | None]:
        """With the lock held: account the body ``worker`` finished (``done``) and choose
        its next job. Returns (entry, kind, release the CPU slot, the executors to poke now
        that a blocking slot is free, another worker to wake for the work left)."""
        release = False
        starved: list[ThreadExecutor] = []
        if done:
            self._busy -= 1
            worker.token = None
            if worker.io_slot:
                worker.io_slot = False
                self._io_running -= 1
                if worker.counted:
                    worker.counted = False
                    starved = self._shared.give()
            if worker.detached:
                worker.detached = False
                if worker.lent:
                    worker.lent = False
                    self._lent -= 1
            elif (
                done == _CPU_JOB
                and self._runner is worker
                and self._slots.contended
                and _perf() - self._slot_since >= SLICE
            ):
                self._runner = None  # time slice over: another domain waits for the slot
                self._has_slot = False
                release = True
        if worker.searching:
            worker.searching = False
            self._searching -= 1
        if self._stopping:
            if self._runner is worker:
                self._runner = None
                self._has_slot = False
                release = True
            return None, 0, release, starved, None
        cpu_q = self._cpu_q
        io_q = self._io_q
        while True:
            runner = self._runner
            if runner is worker or (runner is None and self._has_slot):
                while cpu_q:
                    token = cpu_q.popleft()
                    profile = self._profile(token)
                    if profile.kind is BLOCKING:  # measured meanwhile: no slot needed
                        io_q.appendleft(token)
                        continue
                    self._runner = worker
                    self._busy += 1
                    worker.token = token
                    worker.profile = profile
                    worker.started = _perf()
                    worker.cpu_mark = None
                    if cpu_q and not self._monitor.active:
                        self._monitor.wake()  # tokens wait behind this body
                    wake = self._kick() if io_q else None
                    return (token, profile), _CPU_JOB, release, starved, wake
                if self._runner is None or self._runner is worker:
                    # nothing CPU-bound left: give the slot back
                    self._runner = None
                    self._has_slot = False
                    release = True
            elif (
                cpu_q
                and not self._has_slot
                and not release
                and self._slots.acquire_or_wait(self, self._monitor)
            ):
                self._claim_slot()
                continue
            while io_q:
                token = io_q[0]
                profile = self._profile(token)
                if profile.kind is not BLOCKING:  # measured CPU-bound meanwhile
                    cpu_q.append(io_q.popleft())
                    continue
                counted = not profile.exempt
                if counted and not self._shared.take(self):
                    break
                io_q.popleft()
                worker.io_slot = True
                worker.counted = counted
                self._io_running += 1
                self._busy += 1
                worker.token = token
                wake = self._kick() if io_q or cpu_q else None
                return (token, profile), _IO_JOB, release, starved, wake
            if cpu_q and not release:  # CPU entries came back from the blocking queue
                if self._has_slot and self._runner is None:
                    continue
                if not self._has_slot and self._slots.acquire_or_wait(self, self._monitor):
                    self._claim_slot()
                    continue
            return None, 0, release, starved, None

    # ------------------------------------------------------------------ threads
    def _wake(self, worker: _Worker) -> None:
        self._wakeups += 1  # a plain counter: an occasional lost increment is harmless
        if worker.thread is None:
            self._start(worker)
        else:
            worker.park.release()

    def _start(self, worker: _Worker) -> None:
        thread = threading.Thread(
            target=self._main,
            args=(worker,),
            name=f"{self._name}-t{worker.index}",
            daemon=True,
        )
        worker.thread = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down, or no more threads
            _log.exception("%s could not start a worker thread", self._name)
            with self._lock:
                self._workers.discard(worker)
                if worker.searching:
                    worker.searching = False
                    self._searching -= 1

    def _main(self, worker: _Worker) -> None:
        install(worker)
        cpu = self._domain.cpu
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except (AttributeError, OSError) as exc:
                _log.warning("pinning %s to CPU %s failed: %r", self._name, cpu, exc)
        try:
            worker.clock = time.pthread_getcpuclockid(threading.get_ident())
        except (AttributeError, OSError):
            worker.clock = None
        try:
            self._loop(worker)
        finally:
            deferring(False)
            install(None)
            with self._lock:
                self._workers.discard(worker)
                if worker.parked:
                    worker.parked = False
                    if worker in self._idle:
                        self._idle.remove(worker)

    def _loop(self, worker: _Worker) -> None:
        lock = self._lock
        run = self._run
        slots = self._slots
        cap = slots.capacity
        done = 0
        held = False  # loop wake-ups held back (see SHORT_BODY)
        index = worker.index
        perf = _perf
        cpu_q = self._cpu_q
        io_q = self._io_q
        monitor = self._monitor
        known = self._known
        entry: _Entry | None
        starved: list[ThreadExecutor]
        while True:
            with lock:
                entry = None
                if (  # the runner's fast path: next CPU-bound body, nothing else to do
                    done == _CPU_JOB
                    and self._runner is worker
                    and cpu_q
                    and not io_q
                    and not slots.contended
                    and not self._stopping
                ):
                    head = cpu_q[0]
                    profile = known.get(head.operation_type) or self._profile(head)
                    if profile.kind is not BLOCKING:
                        cpu_q.popleft()
                        entry = (head, profile)
                if entry is not None:
                    worker.token = entry[0]
                    worker.profile = entry[1]
                    worker.started = perf()
                    worker.cpu_mark = None
                    if cpu_q and not monitor.active:
                        monitor.wake()
                    release = False
                    starved = []
                    wake = None
                else:
                    entry, done, release, starved, wake = self._next(worker, done)
                    if entry is None and not release and not self._stopping:
                        self._idle.append(worker)
                        worker.parked = True
            if done == _CPU_JOB and entry is not None:
                mean = entry[1].wall
                if mean is not None and mean < SHORT_BODY:
                    if held:
                        since = deferred_since()
                        if since is not None and perf() - since >= FLUSH_AFTER:
                            flush_deferred()
                    else:
                        deferring(True)
                        held = True
                elif held:
                    deferring(False)
                    held = False
            elif held:  # a blocking body, or nothing: wake the loops first
                deferring(False)
                held = False
            if wake is not None:
                self._wake(wake)
            if release:
                self._after_release()
            for executor in starved:
                executor._poke()
            if entry is None:
                if release:
                    continue  # look again once the slot is back where it belongs
                if self._stopping or not self._park(worker):
                    return
                continue
            token, profile = entry
            if token._settled:  # killed or timed out while queued: nothing to run or measure
                continue
            token._worker_id = index  # the worker's index in the execution record
            try:
                if profile.should_sample():
                    cpu0 = _thread_time()
                    wall0 = _perf()
                    if run(token) is not False:  # a body that did not run says nothing
                        profile.record(_thread_time() - cpu0, _perf() - wall0, cap)
                else:
                    run(token)
            except BaseException as exc:  # the runner itself failed: the token still ends
                _log.exception("%s failed running %r", self._name, token)
                token.set_exception(exc)

    def _park(self, worker: _Worker) -> bool:
        """Sleep until woken (True) or until an extra thread should exit (False)."""
        while True:
            if worker.park.acquire(timeout=IDLE_EXIT):
                return True
            with self._lock:
                if worker.parked:  # nobody woke it
                    if self._stopping or len(self._workers) > self._keep:
                        worker.parked = False
                        self._idle.remove(worker)
                        return False
                    continue
            worker.park.acquire()  # woken between the timeout and the lock: take the wake-up
            return True

    def _after_release(self) -> None:
        """Give the CPU slot back, then queue for it again if CPU work is left."""
        self._slots.release()
        with self._lock:
            wake = self._kick() if self._cpu_q else None
        if wake is not None:
            self._wake(wake)

    def _poke(self) -> None:
        with self._lock:
            wake = self._kick()
        if wake is not None:
            self._wake(wake)

    # ------------------------------------------------------------------ CPU slot hand-over
    def grant_slot(self) -> bool:
        """Take a CPU slot handed over by the process's slots (False: none is needed)."""
        with self._lock:
            if self._stopping or self._has_slot or not self._cpu_q:
                return False
            self._claim_slot()
            wake = self._rouse() if not self._searching else None
        if wake is not None:
            self._wake(wake)
        return True

    def inspect_runner(self, now: float) -> bool:
        """Take the slot from a runner blocked in its body, or long-running while others
        wait (called by the slot monitor). True while a token of the domain waits for a
        slot behind a busy runner, or any domain waits for one."""
        release = False
        wake = None
        with self._lock:
            worker = self._runner
            if worker is None or worker.token is None:
                return False
            waiting = bool(self._cpu_q) or self._slots.contended
            if not waiting:
                return False
            age = now - worker.started
            if age < MIN_WINDOW:
                return True
            blocked = False
            clock = worker.clock
            if clock is not None:
                try:
                    cpu_now: float | None = time.clock_gettime(clock)
                except OSError:
                    cpu_now = None
                mark = worker.cpu_mark
                if cpu_now is not None and mark is not None:
                    window = now - worker.wall_mark
                    blocked = window >= MIN_WINDOW and cpu_now - mark < BLOCKED_SHARE * window
                worker.cpu_mark = cpu_now
                worker.wall_mark = now
            if blocked:
                # a blocked body becomes a blocking one, while they have room: beyond
                # max_blocking_threads the domain is saturated and the runner keeps its slot,
                # unless another domain waits for it (the slot is process-wide: it must not
                # wait for this body); the body then counts above the bound
                profile = worker.profile
                if (
                    not (profile is not None and profile.exempt)
                    and self._shared.blocking >= self._shared.cap
                    and not self._slots.contended
                ):
                    return True
                long = False
            else:  # a long CPU-bound body shares the GIL with the next runner
                long = age >= LONG_BODY and self._lent < MAX_LENT
                if not long:
                    return True
            self._runner = None
            worker.detached = True
            if long:
                worker.lent = True
                self._lent += 1
            else:  # a blocked body is a blocking body: it counts against their bound
                worker.io_slot = True
                worker.counted = worker.profile is None or not worker.profile.exempt
                self._io_running += 1
                if worker.counted:
                    self._shared.force()
            self._demotions += 1
            profile = worker.profile
            if profile is not None:
                profile.demoted(
                    "blocked while holding it" if blocked else f"ran over {LONG_BODY:g} s"
                )
            if self._cpu_q:
                wake = self._rouse() if not self._searching else None
            else:
                self._has_slot = False
                release = True
        if release:
            self._slots.release()
        if wake is not None:
            self._wake(wake)
        return True

    # ------------------------------------------------------------------ managed blocking
    def _begin_wait(self, worker: _Worker) -> None:
        release = False
        starved: list[ThreadExecutor] = []
        wake = None
        with self._lock:
            self._waiting += 1
            if self._runner is worker:
                self._runner = None
                worker.detached = True
                if not self._cpu_q or self._stopping:
                    self._has_slot = False
                    release = True
            elif worker.io_slot:
                worker.io_slot = False
                worker.returned = True
                self._io_running -= 1
                if worker.counted:
                    starved = self._shared.give()
            # beyond max_compensation_threads waiting bodies, only parked threads take over
            wake = self._kick(spawn=self._waiting <= self._max_waiting)
            if wake is not None:
                self._compensations += 1
        if release:
            self._slots.release()
        if wake is not None:
            self._wake(wake)
        for executor in starved:
            executor._poke()

    def _end_wait(self, worker: _Worker) -> None:
        with self._lock:
            self._waiting -= 1
            if worker.returned:
                worker.returned = False
                worker.io_slot = True
                self._io_running += 1
                if worker.counted:
                    self._shared.force()
