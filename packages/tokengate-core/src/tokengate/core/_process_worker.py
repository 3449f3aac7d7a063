"""The main loop of a process-pool worker process.

The worker has two threads. The reader receives batches of calls (and cancellations) from
the parent and queues them, so the parent's sends never wait for a body; the main thread runs
the calls one at a time, in the order they were sent, and writes each outcome to the socket
as soon as the body ends (the parent reads whatever has arrived at once and delivers it as one
batch). An outcome written is never lost, whatever happens to the process afterwards.

Right before a body starts the worker writes the call's index to a counter shared with the
parent, and right after it ends, to a second one. When the process dies, the parent reads
them to know exactly which calls started (those are never sent again) and which did not
(those go to the replacement process).

A body may call other decorated operations: in a worker process they run inline, in the same
process (the same core domain), and return an :class:`InlineToken` that is already done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ._errors import ProcessDomainError
from ._procpool_wire import MessageReader, Outbox, dumps, send_frame, wrap_large_bytes

try:
    import resource

    _RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # not on this platform: CPU time alone
    _RUSAGE_THREAD = None

__all__ = ("InlineToken", "WorkerSettings", "resolve_function", "worker_main")

_log = logging.getLogger("tokengate.worker")

#: Outcome kinds of a call (worker → parent).
OK = 0
ERR = 1
SKIPPED = 2
#: Index of the shared counters.
STARTED = 0
FINISHED = 1
START_NS = 2
LOADING = 3
OUTBOX_WRITTEN = 4
OUTBOX_READ = 5
PARENT_WAITING = 6
#: The parent asks for a ring once the call with this index (or a later one) has ended: half
#: of the calls it sent are done, time to send more (0: no such request).
RING_AT = 7
#: How many shared counters a worker process and its parent share.
COUNTERS = 8
#: Bytes of the shared outbox of outcomes (larger outcomes go over the socket).
OUTBOX_SIZE = 1 << 20
#: The worker rings its parent about new outcomes in the outbox when the parent waits on few
#: calls, when it has nothing queued, after this many outcomes, or this many seconds.
RING_EVERY = 64
RING_PERIOD = 0.004
#: CPU time is measured on the first CPU_SAMPLE_FIRST bodies of each function, then on one
#: in CPU_SAMPLE_EVERY (each measurement costs two system calls).
CPU_SAMPLE_FIRST = 16
CPU_SAMPLE_EVERY = 8


class WorkerSettings:
    """What a worker process needs to know (picklable, sent once at start)."""

    __slots__ = ("cpu", "label", "max_calls", "max_memory")

    def __init__(
        self, label: str, cpu: int | None, max_calls: int | None, max_memory: int | None
    ) -> None:
        self.label = label
        self.cpu = cpu
        self.max_calls = max_calls
        self.max_memory = max_memory

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


#: Where ``task_token_guard`` hangs the compiled plan on the function it returns.
PLAN_ATTRIBUTE = "__tokengate_plan__"


def _run_decorated_calls_inline() -> None:
    """Make decorated calls in this worker process run inline (see :class:`InlineToken`):
    register the stand-in coordinator where the decorator looks for a running one.

    The decorator layer sits above the executors; it is imported by name here, at run time
    and only in the worker process, so that no import of this module points up to it.
    """
    import importlib

    try:
        context: Any = importlib.import_module("tokengate.core._context")
    except ImportError:  # the decorator keeps its running coordinators itself
        context = importlib.import_module("tokengate.core._guard")
    mark = getattr(context, "mark_worker_process", None)
    if mark is not None:
        mark()
    else:
        context.IN_WORKER_PROCESS = True
    context.push_running(_InlineRunner())


def resolve_function(module: str, qualname: str) -> Callable[..., Any]:
    """Import ``module`` and walk ``qualname`` to the undecorated function.

    ``__main__`` of the coordinator's process is ``__mp_main__`` in a spawned worker. A
    ``@task_token_guard`` wrapper is unwrapped to the function it decorates.

    Raises:
        ImportError: the module cannot be imported.
        AttributeError: the qualified name is not found in it.
        TypeError: what was found is not callable.
    """
    import importlib

    if module == "__main__":
        found = sys.modules.get("__mp_main__") or sys.modules["__main__"]
    else:
        found = importlib.import_module(module)
    target: Any = found
    for part in qualname.split("."):
        target = getattr(target, part)
    plan = getattr(target, PLAN_ATTRIBUTE, None)
    if plan is not None:
        target = plan.func
    elif getattr(target, "__wrapped__", None) is not None:
        target = target.__wrapped__
    if not callable(target):
        raise TypeError(f"{module}.{qualname} is {type(target).__name__}, not a function")
    result: Callable[..., Any] = target
    return result


def resident_bytes() -> int | None:
    """The resident set size of this process in bytes (Linux ``/proc``), or None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class InlineToken:
    """The token of a decorated call made by a body running in a worker process.

    The call ran inline, in the same process (the same core domain), when it was made; the
    token is already done. It offers the blocking and awaiting surface of a
    :class:`~tokengate.core.TaskToken`: ``get``/``result``, ``exception``, ``done``,
    ``add_done_callback`` and ``await``.
    """

    __slots__ = ("_exc", "_result", "operation_type")

    def __init__(self, operation_type: str, result: object, exc: BaseException | None) -> None:
        self.operation_type = operation_type
        self._result = result
        self._exc = exc

    def done(self) -> bool:
        """Always True: the call ran when it was made."""
        return True

    def get(self, timeout: float | None = None) -> Any:
        """The call's result; re-raises its exception."""
        if self._exc is not None:
            raise self._exc
        return self._result

    def result(self, timeout: float | None = None) -> Any:
        """Alias of :meth:`get`."""
        return self.get(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception, or None."""
        return self._exc

    def add_done_callback(self, fn: Callable[[InlineToken], object]) -> None:
        """Call ``fn(self)`` now (the token is done)."""
        fn(self)

    def __await__(self) -> Generator[Any, None, Any]:
        yield from ()  # a generator that never suspends: the token is done
        return self.get()


class _InlineRunner:
    """Stands in for the coordinator inside a worker process: runs decorated calls inline."""

    name = "worker-process"

    def _submit(self, plan: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> InlineToken:
        try:
            value = plan.func(*args, **kwargs)
        except Exception as exc:
            return InlineToken(plan.operation_type, None, exc)
        return InlineToken(plan.operation_type, value, None)


class _Worker:
    def __init__(
        self, sock: socket.socket, counters: Any, outbox: Any, settings: WorkerSettings
    ) -> None:
        self.sock = sock
        self.counters = counters
        self.outbox = Outbox(outbox, counters, OUTBOX_WRITTEN, OUTBOX_READ)
        main, buffers = dumps(("ring",))
        self.doorbell = (main, buffers)
        self.unrung = 0  # outcomes in the outbox the parent was not rung about
        self.rung_at = 0.0
        self.settings = settings
        self.cond = threading.Condition(threading.Lock())
        self.inbox: deque[tuple[int, int, tuple[Any, ...], dict[str, Any], Any]] = deque()
        self.cancelled: set[int] = set()
        self.stopping = False
        self.send_lock = threading.Lock()
        self.functions: dict[int, Callable[..., Any] | BaseException] = {}
        self.calls = 0

    # ------------------------------------------------------------------ sending
    def send(self, message: object) -> None:
        main, buffers = dumps(message)
        with self.send_lock:
            send_frame(self.sock, main, buffers)

    def send_results(self, batch: list[tuple[Any, ...]]) -> None:
        """Hand outcomes to the parent: a small one through the shared outbox (no system
        call; the parent is woken only if it waits), anything else over the socket. An
        outcome that cannot be pickled becomes an error."""
        if len(batch) == 1:
            buffers: list[pickle.PickleBuffer] = []
            try:
                payload = pickle.dumps(batch[0], 5, buffer_callback=buffers.append)
            except Exception:
                payload = b""
            small = bool(payload) and not buffers and len(payload) <= OUTBOX_SIZE // 8
            if small and self.outbox.write(payload):
                self.unrung += 1
                now = time.perf_counter()
                counters = self.counters
                ring_at = counters[RING_AT]
                if (
                    counters[PARENT_WAITING]
                    or (ring_at and batch[0][0] >= ring_at)
                    or not self.inbox
                    or self.unrung >= RING_EVERY
                    or now - self.rung_at >= RING_PERIOD
                ):
                    if ring_at:
                        counters[RING_AT] = 0
                    self.unrung = 0
                    self.rung_at = now
                    with self.send_lock:
                        send_frame(self.sock, *self.doorbell)
                return
        try:
            main, buffers = dumps(("results", batch))
        except Exception:
            main, buffers = dumps(("results", [_picklable_outcome(o) for o in batch]))
        with self.send_lock:
            send_frame(self.sock, main, buffers)

    # ------------------------------------------------------------------ receiving
    def reader(self) -> None:
        reader = MessageReader(self.sock)
        counters = self.counters

        def loading(tag: int) -> None:
            counters[LOADING] = tag  # the parent learns which batch killed us, if one does

        reader.on_tag = loading
        while True:
            try:
                message: Any = reader.read()
            except (EOFError, OSError):
                os._exit(0)  # the parent is gone: nothing here can be delivered any more
            except Exception as exc:
                counters[LOADING] = 0
                if reader.tag:
                    self.send(("unloadable", reader.tag, _describe(exc)))
                else:
                    _log.exception("%s: a message could not be loaded", self.settings.label)
                continue
            counters[LOADING] = 0
            kind = message[0]
            if kind == "calls":
                for fn_id, how, payload in message[1]:
                    self.functions[fn_id] = _load_function(how, payload)
                with self.cond:
                    self.inbox.extend(message[2])
                    self.cond.notify()
            elif kind == "cancel":
                with self.cond:
                    self.cancelled.update(message[1])
            elif kind == "stop":
                with self.cond:
                    self.stopping = True
                    self.cond.notify()
                return

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        settings = self.settings
        max_calls = settings.max_calls
        max_memory = settings.max_memory
        counters = self.counters
        cond = self.cond
        inbox = self.inbox
        functions = self.functions
        send_results = self.send_results
        perf = time.perf_counter
        thread_time = time.thread_time
        cancelled = self.cancelled
        bodies: dict[int, int] = {}  # per function: bodies run (for CPU sampling)
        while True:
            # One consumer (this thread) and one producer (the reader): popleft and append
            # are atomic, so the lock is only taken to sleep while there is nothing to run.
            if not inbox:
                with cond:
                    while not inbox and not self.stopping:
                        cond.wait()
            if self.stopping:
                return
            index, fn_id, args, kwargs, scopes = inbox.popleft()
            if index in cancelled:
                cancelled.discard(index)
                send_results([(index, SKIPPED, None, None, 0.0, 0.0)])
                continue
            func = functions.get(fn_id)
            counters[START_NS] = time.monotonic_ns()
            counters[STARTED] = index
            if func is None or isinstance(func, BaseException):
                outcome = (index, ERR, _load_error(fn_id, func), None, 0.0, 0.0)
            else:
                seen = bodies.get(fn_id, 0)
                bodies[fn_id] = seen + 1
                # CPU time costs a system call: measured on the first bodies of a function,
                # then on one in CPU_SAMPLE_EVERY (the parent only needs the CPU share).
                sample = seen < CPU_SAMPLE_FIRST or seen % CPU_SAMPLE_EVERY == 0
                outcome = _run(
                    index, func, args, kwargs, scopes, perf, thread_time if sample else None
                )
            # Written before the call counts as finished: a death after this loses nothing.
            send_results([outcome])
            counters[FINISHED] = index
            self.calls += 1
            reason = None
            if max_calls is not None and self.calls >= max_calls:
                reason = f"it ran {self.calls} calls (max_calls_per_process={max_calls})"
            elif max_memory is not None:
                rss = resident_bytes()
                if rss is not None and rss > max_memory:
                    reason = (
                        f"its resident size {rss / 2**20:.1f} MiB exceeds "
                        f"max_memory_per_process={max_memory / 2**20:.1f} MiB"
                    )
            if reason is not None:
                self.send(("retire", reason))
                return


def _voluntary_switches() -> int:
    """Times this thread gave up its CPU to wait (Linux); -1 where unknown."""
    if _RUSAGE_THREAD is None:
        return -1
    return int(resource.getrusage(_RUSAGE_THREAD).ru_nvcsw)


def _run(
    index: int,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    scopes: Sequence[tuple[Callable[[object], contextlib.AbstractContextManager[object]], object]]
    | None,
    perf: Callable[[], float],
    thread_time: Callable[[], float] | None,
) -> tuple[Any, ...]:
    """Run one body: ``(index, kind, value, remote traceback, wall, cpu)``.

    ``cpu`` is -1.0 when not measured (``thread_time`` None). A body that never waited (no
    voluntary context switch) counts as computing all along: time it spent off the CPU was
    taken by other processes, which says nothing about the body.
    """
    t0 = perf()
    c0 = 0.0
    v0 = -1
    if thread_time is not None:
        v0 = _voluntary_switches()
        c0 = thread_time()
    try:
        if scopes:
            with contextlib.ExitStack() as stack:
                for scope, value in scopes:
                    stack.enter_context(scope(value))
                result = func(*args, **kwargs)
        else:
            result = func(*args, **kwargs)
    except BaseException as exc:
        wall = perf() - t0
        cpu = _cpu_of(thread_time, c0, v0, wall)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            exc = ProcessDomainError(f"the body raised {type(exc).__name__}: {exc}")
        return (index, ERR, _portable(exc), traceback.format_exc(), wall, cpu)
    wall = perf() - t0
    return (index, OK, wrap_large_bytes(result), None, wall, _cpu_of(thread_time, c0, v0, wall))


def _cpu_of(thread_time: Callable[[], float] | None, c0: float, v0: int, wall: float) -> float:
    if thread_time is None:
        return -1.0
    cpu = thread_time() - c0
    if v0 >= 0 and _voluntary_switches() == v0:
        return max(cpu, wall)  # never waited: preempted, not idle
    return cpu


def _describe(exc: BaseException) -> str:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{name}: {exc}"


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a ProcessDomainError describing it."""
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except BaseException as problem:
        kind = type(exc)
        return ProcessDomainError(
            f"the body raised {kind.__module__}.{kind.__qualname__}: {exc} (the exception "
            f"itself cannot cross processes: {problem!r})"
        )
    return exc


def _load_function(how: str, payload: Any) -> Callable[..., Any] | BaseException:
    try:
        if how == "ref":
            module, qualname = payload
            return resolve_function(module, qualname)
        loaded = pickle.loads(payload)
        if not callable(loaded):
            raise TypeError(f"{loaded!r} is not callable")
        func: Callable[..., Any] = loaded
        return func
    except BaseException as exc:
        return exc


def _load_error(fn_id: int, problem: BaseException | None) -> ProcessDomainError:
    error = ProcessDomainError(
        f"the worker process could not load the function of this call: {problem!r}; "
        "functions must be importable by module and qualified name, or picklable by value "
        "with cloudpickle (and everything they refer to importable in the worker)"
    )
    error.__cause__ = problem
    return error


def _picklable_outcome(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
    """``outcome``, or an error outcome describing why its value cannot be pickled."""
    index, kind, value, tb, wall, cpu = outcome
    try:
        dumps(value)
        return outcome
    except Exception as exc:
        if kind == OK:
            error = ProcessDomainError(
                f"the result ({type(value).__qualname__}) cannot be pickled to return it from "
                f"the worker process: {exc}; return picklable data"
            )
        else:
            kind_name = f"{type(value).__module__}.{type(value).__qualname__}"
            error = ProcessDomainError(
                f"the body raised {kind_name}: {value} (the exception itself cannot cross "
                f"processes: {exc!r})"
            )
        return (index, ERR, error, tb, wall, cpu)


def worker_main(sock_fd: Any, counters: Any, outbox: Any, settings: WorkerSettings) -> None:
    """Entry point of a pool's worker process (the target of ``Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent
    _run_decorated_calls_inline()
    if settings.cpu is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {settings.cpu})
    fd = os.dup(sock_fd.fileno())
    sock_fd.close()
    sock = socket.socket(fileno=fd)
    worker = _Worker(sock, counters, outbox, settings)
    threading.Thread(target=worker.reader, name="tokengate-reader", daemon=True).start()
    worker.send(("ready", os.getpid()))
    try:
        worker.run()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
