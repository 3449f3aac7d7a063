"""A worker process with batched, pipelined calls: the engine under the process executor.

Nothing here knows about tokens. A :class:`ProcPool` owns one worker process at a time (and
replaces it when it dies, is killed or retires) and runs :class:`Call` objects in it:

* **Batched, pipelined.** Calls go over in batches (up to ``batch_size`` per message), and
  several batches may be in flight, so the worker never waits for the parent. How many calls
  are in flight adapts to the measured body time (about :data:`QUEUE_SECONDS` of work; only
  the running one before anything is measured or while a body runs long), and the window is
  refilled half at a time, so a steady stream crosses in batches. The worker writes each
  outcome as its body ends (nothing finished is lost if it dies next); the parent reads all
  that has arrived at once and hands it on as one batch.
* **Functions once.** A function crosses once per worker process (by reference when it is
  importable by module and qualified name, else by value through cloudpickle) and is referred
  to by a number afterwards.
* **No call ever runs twice.** The worker writes the index of each call to a counter shared
  with the parent right before it starts and right after it ends. When the process dies, the
  calls it had started fail (the one running with the cause of death); the ones it had not
  started are sent, once more, to the replacement.
* **Hard stops.** :meth:`ProcPool.cancel` of a running call kills the process and starts a
  fresh one; the outcomes written before stay readable, the calls queued behind go to the
  fresh process: nothing else is lost.
* **Recycling.** With ``max_calls`` or ``max_memory`` (resident bytes) the worker retires
  itself between two calls; the calls queued behind go to its replacement.

Trust model: the parent only unpickles what its own child process sends over a private
socket pair; nothing listens on an address.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import pickle
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any

from ._errors import ProcessDomainError
from ._process_worker import (
    COUNTERS,
    ERR,
    FINISHED,
    LOADING,
    OUTBOX_READ,
    OUTBOX_SIZE,
    OUTBOX_WRITTEN,
    PARENT_WAITING,
    RING_AT,
    SKIPPED,
    START_NS,
    STARTED,
    WorkerSettings,
    resolve_function,
    worker_main,
)
from ._procpool_wire import (
    LARGE_BYTES,
    MessageReader,
    Outbox,
    dumps,
    send_frame,
    wrap_large_bytes,
)

__all__ = (
    "BodyProfile",
    "Call",
    "CallError",
    "FunctionRef",
    "Outcome",
    "PoolStats",
    "ProcPool",
    "argument_error",
    "function_ref",
)

_log = logging.getLogger("tokengate.worker")
#: Seconds of measured work the pool keeps queued in the worker (at least two calls).
QUEUE_SECONDS = 0.02
#: A submitted call is sent at once while fewer calls than this are in flight (the worker is
#: idle); otherwise it goes with the next batch, sent by the pool's thread when outcomes
#: arrive (or by the submitting thread once a full batch is queued and the worker has room).
SEND_AT_ONCE_BELOW = 1
#: The pool's thread asks the worker to ring at once about each outcome while this few
#: calls (or fewer) are in flight.
RING_AT_ONCE_AT = 2
#: Longest sleep of the pool's thread while calls are in flight (covers a ring from the
#: worker that crossed its going to sleep; rings normally wake it).
OUTBOX_POLL = 0.05
#: How many times a call the worker never started may be sent again after a death.
MAX_RESENDS = 3
_ids = itertools.count(1)

#: (call, kind, value): kind is :data:`OK` (value = result), :data:`ERR` (value = exception)
#: or :data:`SKIPPED` (the call was cancelled before it started; value None).
Outcome = tuple["Call", int, Any]


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function prepared once for worker processes.

    Attributes:
        fn_id: its number in every worker process of this parent.
        how: ``"ref"`` (imported by module and qualified name) or ``"value"`` (cloudpickled).
        payload: ``(module, qualname)`` or the cloudpickle bytes.
        name: how messages name it.
        signature: its signature when it has one (names the arguments in messages).
    """

    fn_id: int
    how: str
    payload: Any
    name: str
    signature: inspect.Signature | None = None


def function_ref(func: Callable[..., Any], name: str) -> FunctionRef:
    """Prepare ``func`` for worker processes: by reference when the worker can import it by
    module and qualified name, else by value with cloudpickle (closures, lambdas, functions of
    ``__main__`` or a notebook).

    Raises:
        ProcessDomainError: neither works (the message says why).
    """
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if (
        isinstance(module, str)
        and isinstance(qualname, str)
        and module not in ("__main__", "__mp_main__")
        and "<" not in qualname
    ):
        try:
            if resolve_function(module, qualname) is func:
                return FunctionRef(next(_ids), "ref", (module, qualname), name, _signature(func))
        except Exception:  # not importable by name: try by value below
            pass
    try:
        import cloudpickle  # type: ignore[import-untyped]

        payload = cloudpickle.dumps(func, protocol=5)
    except Exception as exc:
        raise ProcessDomainError(
            f"{name} cannot run in a worker process: its function is not importable by module "
            f"and qualified name and cloudpickle cannot pickle it by value ({exc!r}); define "
            "it at module level, or make what it refers to picklable"
        ) from exc
    return FunctionRef(next(_ids), "value", payload, name, _signature(func))


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


class CallError(ProcessDomainError):
    """A :class:`ProcessDomainError` the pool reports about one call (its process died or
    was killed, its arguments could not be loaded...). Its message says "this call"; the
    pool's user may put its own name for the call there with :meth:`naming`."""

    def naming(self, name: str) -> ProcessDomainError:
        """The same error with ``name`` in place of "this call" / "this body"."""
        text = str(self).replace("this call", name).replace("this body", f"the body of {name}")
        error = ProcessDomainError(text)
        error.__cause__ = self.__cause__
        return error


class Call:
    """One call for a :class:`ProcPool`.

    Attributes:
        fn: the prepared function.
        args, kwargs: its arguments (pickled when the call is sent).
        scopes: ``(factory, value)`` pairs; the worker enters ``factory(value)`` (a context
            manager) around the body. ``factory`` must be importable (a class method, say).
        owner: whatever the pool's user attaches (the token, for the process executor).
    """

    __slots__ = ("args", "fn", "index", "isolate", "kwargs", "owner", "resends", "scopes", "sent")

    def __init__(
        self,
        fn: FunctionRef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        owner: object = None,
        scopes: Sequence[tuple[Callable[[Any], Any], object]] | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.owner = owner
        self.scopes = scopes
        self.index = 0  # > 0 while in flight in the current process
        self.sent = False  # ``before_send`` accepted it (it is never asked again)
        self.resends = 0
        self.isolate = False  # its batch could not be loaded: it crosses alone from now on


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool.

    Attributes:
        alive: a worker process is up and ready.
        pid: its pid, or None.
        queued: calls waiting in the parent.
        in_flight: calls sent to the worker and not answered.
        busy: 1 while the worker runs a body.
        restarts: processes started after the first (deaths, kills, recycling).
        recycled: processes retired by ``max_calls`` / ``max_memory``.
        completed: calls answered.
        mean_body: smoothed body time in seconds (None before the first answer).
        cpu_ratio: smoothed CPU time / wall time of bodies (1.0 = CPU-bound).
    """

    alive: bool
    pid: int | None
    queued: int
    in_flight: int
    busy: int
    restarts: int
    recycled: int
    completed: int
    mean_body: float | None
    cpu_ratio: float | None


class BodyProfile:
    """What the pool measured of one function's bodies (moving averages).

    Attributes:
        calls: bodies that ran.
        mean_body: smoothed wall time of a body, in seconds.
        cpu_ratio: smoothed CPU time / wall time (1.0 = CPU-bound).
        unpicklable: calls that failed because an argument could not be pickled.
    """

    __slots__ = ("calls", "cpu_ratio", "mean_body", "unpicklable")

    def __init__(self) -> None:
        self.calls = 0
        self.mean_body: float | None = None
        self.cpu_ratio: float | None = None
        self.unpicklable = 0

    def add(self, wall: float, share: float | None) -> None:
        """Fold in one body: its wall time and its CPU share (None when not measured)."""
        self.calls += 1
        mean = self.mean_body
        self.mean_body = wall if mean is None else mean + 0.1 * (wall - mean)
        if share is not None:
            ratio = self.cpu_ratio
            self.cpu_ratio = share if ratio is None else ratio + 0.1 * (share - ratio)


#: Functions whose bodies a pool profiles (the oldest is forgotten beyond this).
PROFILE_LIMIT = 1024


class _Proc:
    """One worker process and what the parent knows about it."""

    __slots__ = (
        "batches",
        "counters",
        "kill_index",
        "killed_for",
        "known",
        "next_batch",
        "next_index",
        "outbox",
        "process",
        "ready",
        "reason",
        "retiring",
        "sock",
    )

    def __init__(
        self, process: BaseProcess, sock: socket.socket, counters: Any, outbox: Outbox
    ) -> None:
        self.process = process
        self.sock = sock
        self.counters = counters
        self.outbox = outbox
        self.known: set[int] = set()
        self.next_index = 0
        self.next_batch = 0
        #: Sent batches by tag: (last index, calls), until their calls have started.
        self.batches: dict[int, tuple[int, list[Call]]] = {}
        self.ready = False
        self.retiring = False
        self.kill_index = 0
        self.killed_for = 0
        self.reason: str | None = None


class ProcPool:
    """The worker process of one domain, replaced when it dies, is killed or retires.

    Outcomes reach ``on_outcomes`` in batches, from the pool's threads (or from the thread
    that called :meth:`submit`, for calls that fail to pickle). ``before_send(call)`` is asked
    once per call right before it first goes to the worker; False drops the call unrun.
    """

    def __init__(
        self,
        label: str,
        on_outcomes: Callable[[list[Outcome]], None],
        *,
        before_send: Callable[[Call], bool] | None = None,
        start_method: str = "spawn",
        cpu: int | None = None,
        batch_size: int = 64,
        max_calls: int | None = None,
        max_memory: int | None = None,
        batches_in_flight: int = 16,
    ) -> None:
        """Prepare the pool (no process starts before the first call).

        Raises:
            ValueError: ``start_method`` is ``fork`` (the parent is multi-threaded) or a
                size is not positive.
        """
        if start_method == "fork":
            raise ValueError("process domains never use 'fork': the coordinator is multi-threaded")
        if batch_size < 1 or batches_in_flight < 1:
            raise ValueError("batch_size and batches_in_flight must be positive")
        self._label = label
        self._on_outcomes = on_outcomes
        self._before_send = before_send
        self._context = get_context(start_method)
        self._settings = WorkerSettings(label, cpu, max_calls, max_memory)
        self._cpu = cpu
        self._batch_size = batch_size
        self._window_cap = batch_size * batches_in_flight
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._pending: deque[Call] = deque()
        self._inflight: dict[int, Call] = {}
        self._proc: _Proc | None = None
        self._sending = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._unstarted: list[Call] = []
        self._eager = False
        self._last_window = 1  # the window at the last send (read without the lock)
        self._started = 0
        self._recycled = 0
        self._completed = 0
        self._mean_body: float | None = None
        self._cpu_ratio: float | None = None
        self._profiles: dict[str, BodyProfile] = {}

    # ------------------------------------------------------------------ public surface
    def submit(self, calls: Sequence[Call]) -> None:
        """Queue ``calls`` and send what the worker has room for; returns at once.

        Calls submitted after :meth:`shutdown` fail with ProcessDomainError.
        """
        if not calls:
            return
        if self._proc is not None and not self._closed:
            # The hot path takes no lock: deque.extend is atomic, and the pool's thread and
            # the sender only ever pop from the left.
            self._pending.extend(calls)
            if self._is_closed_now():  # shutdown() raced us: fail what it did not take
                self._fail_late()
                return
            if self._gone():  # the process just went: wake the pool's thread
                with self._lock:
                    self._wanted.notify()
        else:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._pending.extend(calls)
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._supervise, name=f"{self._label}-process", daemon=True
                        )
                        self._thread.start()
                    elif self._proc is None:
                        self._wanted.notify()
            if closed:
                error = ProcessDomainError(f"{self._label}: the process pool is shut down")
                self._deliver([(call, ERR, error) for call in calls])
                return
        # While the worker has calls, new ones wait for its next outcomes (the pool's thread
        # sends everything then, as one batch) unless a full batch is ready and the worker
        # has room for it: the submitting thread makes no system call per call.
        in_flight = len(self._inflight)
        if in_flight < SEND_AT_ONCE_BELOW or (
            len(self._pending) >= self._batch_size
            and self._last_window - in_flight >= self._last_window // 2
        ):
            self._pump()

    def _is_closed_now(self) -> bool:
        """The closed flag, read again (no lock: a plain read of one attribute)."""
        return self._closed

    def _gone(self) -> bool:
        """Whether no worker process is attached now (a plain read of one attribute)."""
        return self._proc is None

    def _fail_late(self) -> None:
        """Calls queued after :meth:`shutdown` took the queue: they fail (never run)."""
        with self._lock:
            late = list(self._pending)
            self._pending.clear()
        if late:
            error = ProcessDomainError(f"{self._label}: the process pool is shut down")
            self._deliver([(call, ERR, error) for call in late])

    def cancel(self, call: Call) -> bool:
        """Stop ``call``: unqueue it, tell the worker to skip it, or — when it is running —
        kill the worker process (a fresh one takes the calls queued behind it).

        Returns True when the call was still queued here: it was dropped and gets no
        outcome. One skipped or killed in the worker gets :data:`SKIPPED` or :data:`ERR`.
        """
        send_cancel: _Proc | None = None
        with self._lock:
            if call.index == 0:
                try:
                    self._pending.remove(call)
                except ValueError:
                    return False
                return True
            proc = self._proc
            if proc is None or self._inflight.get(call.index) is not call:
                return False
            started = proc.counters[STARTED]
            if call.index > started:
                send_cancel = proc
            elif call.index > proc.counters[FINISHED]:
                proc.kill_index = call.index
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"k")
        if send_cancel is not None:
            self._send_control(send_cancel, ("cancel", [call.index]))
        return False

    def shutdown(self, timeout: float) -> list[Call]:
        """Stop the worker process within about ``timeout`` seconds.

        The running body gets until then to end; the worker runs nothing queued after it.
        Returns every call that got no outcome (never started, or abandoned while running);
        the caller ends them.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._closed = True
            leftovers = list(self._pending)
            self._pending.clear()
            for call in leftovers:
                call.index = 0
            proc = self._proc
            thread = self._thread
            self._wanted.notify_all()
        if proc is not None and proc.ready:
            self._send_control(proc, ("stop",))
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive() and proc is not None:
                _log.warning(
                    "%s: terminating the worker process (pid %s): a body still runs",
                    self._label,
                    proc.process.pid,
                )
                _kill(proc.process)
                thread.join(5.0)
        with self._lock:
            abandoned = self._unstarted + list(self._inflight.values())
            self._unstarted = []
            self._inflight.clear()
            for call in abandoned:
                call.index = 0
            proc = self._proc
            self._proc = None
        if proc is not None:
            _kill(proc.process)
            _close(proc)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        return leftovers + abandoned

    def stats(self) -> PoolStats:
        """A snapshot of the pool."""
        with self._lock:
            proc = self._proc
            busy = 0
            pid = None
            alive = proc is not None and proc.ready
            if proc is not None:
                pid = proc.process.pid
                busy = int(proc.counters[STARTED] > proc.counters[FINISHED])
            return PoolStats(
                alive=alive,
                pid=pid,
                queued=len(self._pending),
                in_flight=len(self._inflight),
                busy=busy,
                restarts=max(0, self._started - 1),
                recycled=self._recycled,
                completed=self._completed,
                mean_body=self._mean_body,
                cpu_ratio=self._cpu_ratio,
            )

    def start(self) -> None:
        """Start the worker process now, before any call (the first call need not wait)."""
        with self._lock:
            if self._closed or self._thread is not None:
                return
            self._eager = True
            self._thread = threading.Thread(
                target=self._supervise, name=f"{self._label}-process", daemon=True
            )
            self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether a worker process is up and taking calls."""
        proc = self._proc
        return proc is not None and proc.ready and not proc.retiring

    def backlog(self) -> int:
        """Calls waiting in the parent for room in the worker (a lock-free estimate)."""
        return len(self._pending)

    def load(self) -> int:
        """Calls queued or in flight (a cheap, lock-free estimate)."""
        return len(self._pending) + len(self._inflight)

    @property
    def pid(self) -> int | None:
        """The pid of the current worker process, or None."""
        proc = self._proc
        return None if proc is None else proc.process.pid

    # ------------------------------------------------------------------ sending
    def _window(self, proc: _Proc) -> int:
        """How many calls may be in flight: about :data:`QUEUE_SECONDS` of measured work, and
        only the running one while nothing is measured yet or while the running body has
        taken longer than that (so calls behind a long body wait here, not yet started)."""
        mean = self._mean_body
        if mean is None:
            return 1
        counters = proc.counters
        if (
            counters[STARTED] > counters[FINISHED]
            and time.monotonic_ns() - counters[START_NS] > QUEUE_SECONDS * 1e9
        ):
            return 1
        return min(self._window_cap, max(1, int(QUEUE_SECONDS / max(mean, 1e-6))))

    def _pump(self) -> None:
        """Send queued calls while the worker has room; one sender at a time (whoever
        comes first sends for everyone, so batches form by themselves under load)."""
        while True:
            with self._lock:
                proc = self._proc
                if (
                    self._sending
                    or proc is None
                    or not proc.ready
                    or proc.retiring
                    or not self._pending
                ):
                    return
                window = self._window(proc)
                self._last_window = window
                in_flight = len(self._inflight)
                room = window - in_flight
                # Refill in chunks: while the worker still has calls queued, freed slots wait
                # until half the window is free, so a steady stream crosses in batches.
                if room <= 0 or (room < window // 2 and in_flight >= RING_AT_ONCE_AT):
                    return
                self._sending = True
                count = min(room, self._batch_size, len(self._pending))
                pending = self._pending
                batch = [pending.popleft()]
                if not batch[0].isolate:
                    while len(batch) < count and not pending[0].isolate:
                        batch.append(pending.popleft())
            failed: list[Outcome] = []
            try:
                self._send_batch(proc, batch, failed)
                if window > 2 * RING_AT_ONCE_AT:
                    # Ring when half the window is free again: the next calls then go before
                    # the worker runs out (instead of when its queue is empty).
                    proc.counters[RING_AT] = max(1, proc.next_index - window // 2)
            finally:
                with self._lock:
                    self._sending = False
            if failed:
                self._deliver(failed)

    def _send_batch(self, proc: _Proc, batch: list[Call], failed: list[Outcome]) -> None:
        before = self._before_send
        if before is not None:
            accepted = []
            for call in batch:
                if call.sent:
                    accepted.append(call)
                    continue
                try:
                    ok = before(call)
                except Exception as exc:  # the user's hook failed: the call never runs
                    failed.append((call, ERR, exc))
                    continue
                if ok:
                    call.sent = True
                    accepted.append(call)
            batch = accepted
        else:
            for call in batch:
                call.sent = True
        if not batch:
            return
        items: list[tuple[Any, ...]] = []
        defs: list[tuple[int, str, Any]] = []
        new_ids: set[int] = set()
        with self._lock:
            for call in batch:
                proc.next_index += 1
                call.index = proc.next_index
                self._inflight[call.index] = call
        for call in batch:
            fn = call.fn
            if fn.fn_id not in proc.known and fn.fn_id not in new_ids:
                new_ids.add(fn.fn_id)
                defs.append((fn.fn_id, fn.how, fn.payload))
            args = call.args
            for arg in args:
                if type(arg) is bytes and len(arg) >= LARGE_BYTES:
                    args = tuple(wrap_large_bytes(a) for a in args)
                    break
            items.append((call.index, fn.fn_id, args, call.kwargs, call.scopes))
        message: tuple[Any, ...] = ("calls", defs, items)
        try:
            main, buffers = dumps(message)
        except Exception:
            items = self._isolate(batch, items, failed)
            message = ("calls", defs, items)
            main, buffers = dumps(message)
        sent = [call for call in batch if call.index]
        if not sent:
            return
        with self._lock:
            proc.next_batch = proc.next_batch % 0xFFFFFFFF + 1
            tag = proc.next_batch
            proc.batches[tag] = (sent[-1].index, sent)
            # Batches whose calls have all started are done with: forgotten soon, so that
            # their calls (and what they hold) are freed with their outcomes.
            if len(proc.batches) > 4:
                started = proc.counters[STARTED]
                for old in [t for t, (last, _) in proc.batches.items() if last <= started]:
                    del proc.batches[old]
        try:
            send_frame(proc.sock, main, buffers, tag)
        except OSError:
            # The process is dying: the supervisor sends these calls (never started) again.
            return
        proc.known.update(new_ids)

    def _isolate(
        self, batch: list[Call], items: list[tuple[Any, ...]], failed: list[Outcome]
    ) -> list[tuple[Any, ...]]:
        """Pickle the calls of a batch one by one; fail those that cannot cross."""
        kept: list[tuple[Any, ...]] = []
        for call, item in zip(batch, items, strict=True):
            try:
                dumps(item)
            except Exception as exc:
                with self._lock:
                    self._inflight.pop(call.index, None)
                    self._profile(call.fn.name).unpicklable += 1
                call.index = 0
                failed.append((call, ERR, argument_error(call, exc)))
                continue
            kept.append(item)
        return kept

    def _send_control(self, proc: _Proc, message: tuple[Any, ...]) -> None:
        main, buffers = dumps(message)
        try:
            send_frame(proc.sock, main, buffers)
        except OSError:
            pass  # dying: the supervisor handles what it held

    def _deliver(self, outcomes: list[Outcome]) -> None:
        try:
            self._on_outcomes(outcomes)
        except Exception:
            _log.exception("%s: delivering outcomes failed", self._label)

    # ------------------------------------------------------------------ the supervisor
    def _supervise(self) -> None:
        eager = self._eager
        while True:
            with self._lock:
                while not self._closed and not self._pending and not eager:
                    self._wanted.wait()
                if self._closed:
                    break
            try:
                proc = self._spawn()
            except Exception as exc:
                self._fail_pending(f"the worker process could not be started: {exc!r}")
                eager = False
                continue
            try:
                eager = self._serve(proc)
            except Exception:  # never lose a call to a bug here: treat it as a death
                _log.exception("%s: serving the worker process failed", self._label)
                _kill(proc.process)
                eager = self._reap(proc)
            if self._is_closed():
                break

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _spawn(self) -> _Proc:
        parent_end, child_end = self._context.Pipe(duplex=True)
        counters = self._context.RawArray("q", COUNTERS)
        outbox = self._context.RawArray("B", OUTBOX_SIZE)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_end, counters, outbox, self._settings),
            name=f"{self._label}-process",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child_end.close()
        if self._cpu is not None:
            try:
                os.sched_setaffinity(process.pid, {self._cpu})
            except (AttributeError, OSError) as exc:
                _log.warning("%s: pinning to CPU %s failed: %r", self._label, self._cpu, exc)
        sock = socket.socket(fileno=os.dup(parent_end.fileno()))
        parent_end.close()
        proc = _Proc(process, sock, counters, Outbox(outbox, counters, OUTBOX_WRITTEN, OUTBOX_READ))
        with self._lock:
            self._proc = proc
            self._started += 1
        _log.info("%s: started worker process pid %s", self._label, process.pid)
        return proc

    def _serve(self, proc: _Proc) -> bool:
        """Talk to ``proc`` until it is gone; True when a replacement should start at once."""
        reader = MessageReader(proc.sock)
        sentinel = proc.process.sentinel
        selector = selectors.DefaultSelector()
        selector.register(proc.sock, selectors.EVENT_READ)
        selector.register(sentinel, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            return self._serve_with(proc, reader, selector, sentinel)
        finally:
            selector.close()

    def _serve_with(
        self,
        proc: _Proc,
        reader: MessageReader,
        selector: selectors.BaseSelector,
        sentinel: int,
    ) -> bool:
        counters = proc.counters
        outbox = proc.outbox
        while True:
            # The worker rings (over the socket) about outcomes it left in the outbox: at
            # once while few calls are in flight, else when it runs out of calls, every
            # RING_EVERY outcomes or RING_PERIOD seconds; this thread then takes all that
            # arrived in one go (one wake-up per batch of outcomes, not one per outcome).
            in_flight = len(self._inflight)
            counters[PARENT_WAITING] = 1 if in_flight <= RING_AT_ONCE_AT else 0
            if outbox.pending() and counters[PARENT_WAITING]:
                ready: set[Any] = set()
            else:
                timeout = OUTBOX_POLL if in_flight else None
                ready = {key.fileobj for key, _ in selector.select(timeout)}
            counters[PARENT_WAITING] = 0
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            dead = sentinel in ready
            alive = True
            results: list[tuple[Any, ...]] = []
            if dead or proc.sock in ready:
                alive = self._read(proc, reader, dead, results)
            self._take_outbox(proc, results)
            if results:
                # The worker gets its next calls before this thread settles the tokens of
                # these outcomes, so that it runs them meanwhile.
                self._results(results, refill=True)
            if not alive:
                break
            if proc.kill_index:
                self._maybe_kill(proc)
            with self._lock:
                closed = self._closed
            if closed and not proc.ready:
                _kill(proc.process)
                break
        return self._reap(proc)

    def _take_outbox(self, proc: _Proc, results: list[tuple[Any, ...]]) -> None:
        """Move the outcomes the worker left in the shared outbox into ``results``."""
        values, problems = proc.outbox.read_all()
        results.extend(values)  # type: ignore[arg-type]
        for problem in problems:
            self._unloadable(proc, problem)

    def _read(
        self, proc: _Proc, reader: MessageReader, dead: bool, results: list[tuple[Any, ...]]
    ) -> bool:
        """Handle what has arrived on the socket (all of it, once the process is dead),
        adding outcomes to ``results``. False when the process is gone."""
        while True:
            try:
                message: Any = reader.read()
            except (EOFError, OSError):
                return False
            except Exception as exc:
                self._unloadable(proc, exc)
                message = None
            if message is not None:
                if message[0] == "results":
                    results.extend(message[1])
                else:
                    self._handle(proc, message)
            if not dead and not reader.buffered():
                return True

    def _handle(self, proc: _Proc, message: Any) -> None:
        kind = message[0]
        if kind == "ready":
            with self._lock:
                proc.ready = True
            self._pump()
        elif kind == "ring":
            pass  # the outbox is read on every wake-up
        elif kind == "unloadable":
            self._unloadable_batch(proc, int(message[1]), str(message[2]))
        elif kind == "retire":
            with self._lock:
                proc.retiring = True
                proc.reason = str(message[1])
                self._recycled += 1
            _log.info("%s: recycling the worker process: %s", self._label, proc.reason)

    def _results(self, results: list[tuple[Any, ...]], refill: bool = False) -> None:
        """Account for the outcomes that arrived and deliver them (after sending the worker
        its next calls, with ``refill``)."""
        outcomes: list[Outcome] = []
        # per function: [bodies, wall, sampled wall, sampled cpu] summed over this batch,
        # folded in once below (the worker measures CPU time on a sample of the bodies)
        sums: dict[str, list[float]] = {}
        with self._lock:
            inflight = self._inflight
            for index, kind, value, remote_tb, wall, cpu in results:
                call = inflight.pop(index, None)
                if call is None:
                    continue
                call.index = 0
                if kind == ERR and remote_tb and isinstance(value, BaseException):
                    value.add_note(f"\nRemote traceback ({self._label}):\n{remote_tb.rstrip()}")
                outcomes.append((call, kind, value))
                if kind != SKIPPED:
                    entry = sums.get(call.fn.name)
                    if entry is None:
                        entry = sums[call.fn.name] = [0.0, 0.0, 0.0, 0.0]
                    entry[0] += 1.0
                    entry[1] += wall
                    if cpu >= 0.0:
                        entry[2] += wall
                        entry[3] += cpu
            mean, ratio = self._mean_body, self._cpu_ratio
            for name, (count, wall, sampled_wall, sampled_cpu) in sums.items():
                profile = self._profile(name)
                body = wall / count
                share = min(1.0, sampled_cpu / sampled_wall) if sampled_wall > 0 else None
                for _ in range(int(min(count, 8))):  # a batch weighs at most 8 bodies
                    profile.add(body, share)
                profile.calls += int(count) - int(min(count, 8))
                mean = body if mean is None else mean + 0.2 * (body - mean)
                if share is not None:
                    ratio = share if ratio is None else ratio + 0.2 * (share - ratio)
            self._mean_body, self._cpu_ratio = mean, ratio
            self._completed += len(outcomes)
        if refill:
            self._pump()
        if outcomes:
            self._deliver(outcomes)

    def _unloadable_batch(self, proc: _Proc, tag: int, problem: str) -> None:
        """The worker could not load the batch ``tag`` (none of its calls started): a lone
        call fails; the calls of a larger batch cross again one by one, to find the culprit."""
        with self._lock:
            entry = proc.batches.pop(tag, None)
            if entry is None:
                return
            calls = [c for c in entry[1] if self._inflight.get(c.index) is c]
            for call in calls:
                del self._inflight[call.index]
                call.index = 0
            if len(calls) > 1:
                for call in calls:
                    call.isolate = True
                self._pending.extendleft(reversed(calls))
        if len(calls) == 1:
            error = CallError(
                f"{self._label}: the worker process could not load the arguments of this "
                f"call ({problem}); it never ran. Pass arguments the worker process can "
                "unpickle (their classes importable there)"
            )
            self._deliver([(calls[0], ERR, error)])
        else:
            self._pump()

    def _profile(self, name: str) -> BodyProfile:
        """The profile of ``name`` (with the lock held)."""
        profile = self._profiles.get(name)
        if profile is None:
            if len(self._profiles) >= PROFILE_LIMIT:
                del self._profiles[next(iter(self._profiles))]
            profile = self._profiles[name] = BodyProfile()
        return profile

    def note_unpicklable(self, name: str) -> None:
        """Count a call of ``name`` whose arguments did not pickle (checked by the caller)."""
        with self._lock:
            self._profile(name).unpicklable += 1

    def profiles(self) -> dict[str, BodyProfile]:
        """Per function name: what the pool measured of its bodies (live objects)."""
        with self._lock:
            return dict(self._profiles)

    def _unloadable(self, proc: _Proc, exc: Exception) -> None:
        """A results message could not be unpickled: fail the calls it may have answered."""
        with self._lock:
            finished = proc.counters[FINISHED]
            lost = [c for i, c in self._inflight.items() if i <= finished]
            for call in lost:
                del self._inflight[call.index]
                call.index = 0
        error = CallError(
            f"{self._label}: the outcome of this call (or of another in the same batch) could "
            f"not be unpickled in the parent: {exc!r}; return data whose classes the parent "
            "can import"
        )
        self._deliver([(call, ERR, error) for call in lost])

    def _maybe_kill(self, proc: _Proc) -> None:
        """Kill the process if the call to stop is still running (outcomes written before
        stay readable in the socket after the process is gone)."""
        with self._lock:
            index, proc.kill_index = proc.kill_index, 0
            if self._inflight.get(index) is None or proc.counters[FINISHED] >= index:
                return  # it ended in time after all
            proc.killed_for = index
        _log.info("%s: killing the worker process to stop a running body", self._label)
        _kill(proc.process)

    def _reap(self, proc: _Proc) -> bool:
        """The process is gone: fail what it started, queue again what it had not."""
        process = proc.process
        pid = process.pid
        process.join(1.0)
        if process.exitcode is None:
            _kill(process)
        code = process.exitcode
        late: list[tuple[Any, ...]] = []
        self._take_outbox(proc, late)  # outcomes written right before the end are kept
        if late:
            self._results(late)
        lost: list[Outcome] = []
        with self._lock:
            self._proc = None
            started = proc.counters[STARTED]
            finished = proc.counters[FINISHED]
            loading = proc.counters[LOADING]
            suspects: list[Call] = proc.batches.get(loading, (0, []))[1] if loading else []
            leftovers = list(self._inflight.values())
            self._inflight.clear()
            again: list[Call] = []
            for call in leftovers:
                index, call.index = call.index, 0
                if index > started and call in suspects and not self._closed:
                    if len(suspects) == 1 or call.isolate:
                        lost.append((call, ERR, self._death_error(proc, code, "loading", index)))
                        continue
                    call.isolate = True
                if index > started and not self._closed:
                    if call.resends >= MAX_RESENDS:
                        lost.append((call, ERR, self._death_error(proc, code, "before", index)))
                    else:
                        call.resends += 1
                        again.append(call)
                elif index > started:
                    self._unstarted.append(call)  # shutting down: shutdown() returns it
                elif index == started and finished < index:
                    lost.append((call, ERR, self._death_error(proc, code, "while", index)))
                else:
                    lost.append((call, ERR, self._death_error(proc, code, "after", index)))
            self._pending.extendleft(reversed(again))
            retired = proc.retiring
            never_ready = not proc.ready
        _close(proc)
        if never_ready and not retired:
            self._fail_pending(
                f"the worker process (pid {pid}) exited before it was ready "
                f"({_describe_exit(code)}); if it fails at start-up, check that the main module "
                "guards its entry point with if __name__ == '__main__'"
            )
        elif proc.killed_for and not self._closed:
            _log.info(
                "%s: the worker process (pid %s) was killed to stop a body; %d calls it had "
                "not started go to a fresh one",
                self._label,
                pid,
                len(again),
            )
        elif not retired and not self._closed:
            _log.warning(
                "%s: the worker process (pid %s) died (%s); %d calls it had not started go "
                "to a fresh one",
                self._label,
                pid,
                _describe_exit(code),
                len(again),
            )
        if lost:
            self._deliver(lost)
        return retired

    def _death_error(self, proc: _Proc, code: int | None, when: str, index: int) -> CallError:
        pid = proc.process.pid
        if proc.killed_for == index:
            return CallError(
                f"{self._label}: the worker process (pid {pid}) was killed to stop this body "
                "(its timeout passed or it was cancelled); a fresh process runs the next calls"
            )
        if when == "while":
            return CallError(
                f"{self._label}: the worker process (pid {pid}) died ({_describe_exit(code)}) "
                "while running this call; nothing else failed, and a fresh process runs the "
                "next ones"
            )
        if when == "loading":
            return CallError(
                f"{self._label}: the worker process (pid {pid}) died ({_describe_exit(code)}) "
                "while loading the arguments of this call; it never ran and is not sent again"
            )
        if when == "after":
            return CallError(
                f"{self._label}: the worker process (pid {pid}) died ({_describe_exit(code)}) "
                "after running this call, before its outcome reached the parent; it is not "
                "run again"
            )
        return CallError(
            f"{self._label}: worker processes died {MAX_RESENDS + 1} times before this call "
            f"could start (last: {_describe_exit(code)}); it is not sent again"
        )

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            calls = list(self._pending)
            self._pending.clear()
        if calls:
            error = ProcessDomainError(f"{self._label}: {reason}")
            self._deliver([(call, ERR, error) for call in calls])


def argument_error(call: Call, exc: BaseException) -> ProcessDomainError:
    """Name the argument of ``call`` that cannot be pickled (or the call as a whole)."""
    named: list[tuple[str, object]] = []
    signature = call.fn.signature
    if signature is not None:
        try:
            named = list(signature.bind(*call.args, **call.kwargs).arguments.items())
        except TypeError:
            named = []
    if not named:
        named = [(f"#{i}", a) for i, a in enumerate(call.args)] + list(call.kwargs.items())
    culprit = "the call"
    reason: BaseException = exc
    for name, value in named:
        try:
            pickle.dumps(value, 5)
        except Exception as inner:
            culprit = f"argument {name!r} ({type(value).__qualname__})"
            reason = inner
            break
    error = ProcessDomainError(
        f"{culprit} of {call.fn.name} cannot be pickled to send it to a worker process: "
        f"{reason}; pass picklable arguments, or run the operation on threads (without "
        "executor 'process' or process_pool)"
    )
    error.__cause__ = exc
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _kill(process: BaseProcess) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if process.exitcode is None:
            process.kill()
            process.join(2.0)


def _close(proc: _Proc) -> None:
    with contextlib.suppress(OSError):
        proc.sock.close()
    if proc.process.exitcode is not None:
        with contextlib.suppress(ValueError):
            proc.process.close()
