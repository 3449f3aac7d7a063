"""Process domains: the ``process`` executor, and the older one-call backend.

:class:`ProcessExecutor` is the built-in ``process`` executor: one worker process per core
domain, batched and pipelined calls (see :mod:`._procpool`). :class:`ProcessBackend` below is
the older one-call-in-flight backend, kept while the coordinator still drives it directly.

The older backend:

The coordinator's process pickles each call (module, qualified name, arguments) before it
crosses, sends it over a private pipe to the domain's worker process, and ends the token with
the pickled answer. Only one call is in flight per process, so a process that dies fails only
the token it was running; the next token starts a fresh process.

Trust model: the parent unpickles only what comes back over the anonymous pipe it created for
its own child process; nothing listens on a socket or a named address.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from . import _guard
from ._config import machine_cpus
from ._enums import TokenState
from ._errors import PluginError, ProcessDomainError
from ._executors import AUTO, ExecutorBackend, ExecutorDomain, ExecutorStats
from ._process_worker import ERR, OK, resolve_function
from ._procpool import (
    BodyProfile,
    Call,
    FunctionRef,
    Outcome,
    ProcPool,
    argument_error,
    function_ref,
)
from ._procpool_wire import dumps

if TYPE_CHECKING:
    from ._coordinator import OperationsCoordinator
    from ._token import TaskToken

__all__ = ("ProcessBackend", "ProcessExecutor", "resolve_function")

_log = logging.getLogger("tokengate.worker")
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_STOP = b""
_OK = OK
_ERR = ERR
_COMPLETED = TokenState.COMPLETED
_FAILED = TokenState.FAILED
_EXECUTING = TokenState.EXECUTING
_ADMITTED_ONLY = frozenset({TokenState.ADMITTED})
#: How long an idle worker process gets to exit on its own after the stop message.
_EXIT_GRACE = 2.0


#: Functions prepared per executor (by reference or by value); beyond this, the oldest go.
_FUNCTION_CACHE = 1024


class ProcessExecutor(ExecutorBackend):
    """The built-in ``process`` executor: the bodies of one core domain in a worker process.

    Calls cross in batches over a private socket pair, several batches in flight, and their
    outcomes come back in batches (see the process domains page of the docs). Importable
    functions travel by reference with plain pickle; closures, lambdas and functions of
    ``__main__`` by value through cloudpickle; large numpy arrays and ``bytes`` as pickle
    protocol 5 out-of-band buffers.

    Guarantees: a body never runs twice; a process that dies fails only the call it was
    running (calls it had not started go to a fresh process); :meth:`cancel` of a running
    token (its timeout passed, or it was killed) kills the process so the body really stops;
    ``max_calls_per_process`` and ``max_memory_per_process`` recycle the process between two
    calls. ``token.set_running()`` is called when a call is sent to the process, so a token
    is ``EXECUTING`` from then on (a few calls may wait in the process behind the running
    one). Each token extension's ``remote_context`` value is re-entered with its
    ``remote_scope`` around the body in the process. A body that calls other decorated
    operations runs them inline in the same process (see :class:`~._process_worker.InlineToken`).
    """

    def __init__(self, domain: ExecutorDomain) -> None:
        """Prepare the domain's executor; its process starts with the first token."""
        config = domain.config
        self._core_id = domain.core_id
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[ProcPool, Call]] = {}
        self._functions: dict[object, FunctionRef] = {}
        #: Where a token of an ``executor: "auto"`` operation goes when its arguments cannot
        #: be pickled (the same core's thread executor, set by the auto policy), instead of
        #: failing.
        self.fallback: Callable[[TaskToken[Any]], None] | None = None
        fixed = config.processes_per_core
        if fixed is None:  # elastic: one process, more while the domain has a backlog
            self._max_pools = 1 if domain.cpu is not None else max(1, len(machine_cpus()))
        else:
            self._max_pools = fixed
        self._label = f"{domain.coordinator_name}-core{domain.core_id}"
        self._config = config
        self._cpu = domain.cpu
        self._grow_at = 2 * config.process_batch_size
        self._pools: list[ProcPool] = []
        for _ in range(fixed or 1):
            self._add_pool()
        self._pool = self._pools[0]

    def _add_pool(self) -> ProcPool:
        """One more worker process for the domain (with the lock held, or in __init__)."""
        config = self._config
        number = len(self._pools) + 1
        pool = ProcPool(
            self._label if number == 1 else f"{self._label}-p{number}",
            self._outcomes,
            before_send=_start_call,
            start_method=config.process_start_method,
            cpu=self._cpu,
            batch_size=config.process_batch_size,
            max_calls=config.max_calls_per_process,
            max_memory=config.max_memory_per_process,
        )
        self._pools = [*self._pools, pool]
        return pool

    @property
    def pools(self) -> list[ProcPool]:
        """The engines underneath, one per worker process of the domain."""
        return list(self._pools)

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Queue the tokens' calls for the worker process and return at once.

        A function that can be sent neither by reference nor by value, or an extension whose
        ``remote_context`` fails, fails its token here: the body never runs.
        """
        calls: list[Call] = []
        for token in tokens:
            try:
                fn = self._function_of(token)
                scopes = _scopes_of(token)
            except Exception as exc:
                token.set_exception(exc)
                continue
            if getattr(token._plan, "executor", None) == AUTO and not self._arguments_pickle(
                token, fn
            ):
                continue
            calls.append(Call(fn, token.args, token.kwargs, token, scopes))
        if not calls:
            return
        pools = self._pools
        if len(pools) < self._max_pools and all(p.backlog() >= self._grow_at for p in pools):
            with self._lock:
                if len(self._pools) < self._max_pools:
                    grown = self._add_pool()
                    grown.start()
                    _log.info(
                        "%s: a backlog of %d calls: worker process %d of at most %d starts",
                        self._label,
                        min(p.backlog() for p in pools),
                        len(self._pools),
                        self._max_pools,
                    )
            pools = [p for p in self._pools if p.ready] or pools
        if len(pools) == 1:
            pool = pools[0]
            with self._lock:
                for call in calls:
                    self._calls[id(call.owner)] = (pool, call)
            pool.submit(calls)
            return
        loads = [pool.load() for pool in pools]
        shares: list[list[Call]] = [[] for _ in pools]
        for call in calls:
            least = loads.index(min(loads))
            loads[least] += 1
            shares[least].append(call)
        with self._lock:
            for pool, share in zip(pools, shares, strict=True):
                for call in share:
                    self._calls[id(call.owner)] = (pool, call)
        for pool, share in zip(pools, shares, strict=True):
            if share:
                pool.submit(share)

    def cancel(self, token: TaskToken[Any]) -> None:
        """Stop the token's call: unqueued, skipped by the process, or — when its body runs —
        the process is killed and replaced (calls queued behind it are not lost)."""
        with self._lock:
            held = self._calls.get(id(token))
        if held is None or held[1].owner is not token:
            return
        pool, call = held
        pool.cancel(call)
        if call.index == 0 and not call.sent:
            with self._lock:
                self._calls.pop(id(token), None)

    def shutdown(self, timeout: float) -> None:
        """Stop the worker process within about ``timeout`` seconds; every token still held
        ends ``KILLED`` (a body still running is abandoned and its process killed)."""
        deadline = time.monotonic() + max(0.0, timeout)
        leftovers: list[Call] = []
        for pool in self._pools:
            leftovers += pool.shutdown(max(0.0, deadline - time.monotonic()))
        with self._lock:
            held = [call.owner for _pool, call in self._calls.values()]
            self._calls.clear()
        for call in leftovers:
            _kill_token(call.owner, self._core_id)
        for owner in held:
            _kill_token(owner, self._core_id)

    def stats(self) -> ExecutorStats:
        """The domain's processes: pids, restarts, recycling and measured body time."""
        snaps = [pool.stats() for pool in self._pools]
        pids = [snap.pid for snap in snaps]
        in_flight = sum(snap.in_flight for snap in snaps)
        busy = sum(snap.busy for snap in snaps)
        details: dict[str, object] = {
            "pid": pids[0] if len(pids) == 1 else pids,
            "in_flight": in_flight,
            "restarts": sum(snap.restarts for snap in snaps),
            "recycled": sum(snap.recycled for snap in snaps),
            "completed": sum(snap.completed for snap in snaps),
        }
        means = [snap.mean_body for snap in snaps if snap.mean_body is not None]
        if means:
            details["mean_body_us"] = round(sum(means) / len(means) * 1e6, 1)
        ratios = [snap.cpu_ratio for snap in snaps if snap.cpu_ratio is not None]
        if ratios:
            details["cpu_ratio"] = round(sum(ratios) / len(ratios), 3)
        alive = sum(snap.alive for snap in snaps)
        return ExecutorStats(
            workers=alive,
            busy=busy,
            queued=sum(snap.queued for snap in snaps) + max(0, in_flight - busy),
            alive=alive > 0 or all(pid is None for pid in pids),
            details=details,
        )

    # ------------------------------------------------------------------ internals
    def _function_of(self, token: TaskToken[Any]) -> FunctionRef:
        func = token.func
        fn = self._functions.get(func)
        if fn is None:
            fn = function_ref(func, token.operation_type)
            with self._lock:
                if len(self._functions) >= _FUNCTION_CACHE:
                    self._functions.pop(next(iter(self._functions)))
                self._functions[func] = fn
        return fn

    def _arguments_pickle(self, token: TaskToken[Any], fn: FunctionRef) -> bool:
        """For an ``auto`` operation: whether the call's arguments pickle. If not, the token
        goes to :attr:`fallback` (threads) or fails with a clear error; it never runs here."""
        call = (token.args, token.kwargs)
        try:
            dumps(call)
            return True
        except Exception as plain:
            try:
                dumps(call, by_value=True)
                return True
            except Exception:
                problem = plain
        self._pool.note_unpicklable(fn.name)
        fallback = self.fallback
        if fallback is not None:
            fallback(token)
        else:
            token.set_exception(argument_error(Call(fn, token.args, token.kwargs), problem))
        return False

    def operations(self) -> dict[str, BodyProfile]:
        """Per operation: what the worker processes measured of its bodies (the domain's
        processes together)."""
        if len(self._pools) == 1:
            return self._pool.profiles()
        merged: dict[str, BodyProfile] = {}
        for pool in self._pools:
            for name, profile in pool.profiles().items():
                into = merged.setdefault(name, BodyProfile())
                calls = into.calls + profile.calls
                for field in ("mean_body", "cpu_ratio"):
                    mine, theirs = getattr(into, field), getattr(profile, field)
                    if theirs is not None:
                        value = (
                            theirs
                            if mine is None
                            else (mine * into.calls + theirs * profile.calls) / max(1, calls)
                        )
                        setattr(into, field, value)
                into.calls = calls
                into.unpicklable += profile.unpicklable
        return merged

    def _outcomes(self, outcomes: list[Outcome]) -> None:
        calls = self._calls
        with self._lock:
            for call, _kind, _value in outcomes:
                held = calls.get(id(call.owner))
                if held is not None and held[1] is call:
                    del calls[id(call.owner)]
        for call, kind, value in outcomes:
            token: Any = call.owner
            if kind == OK:
                token.set_result(value)
            elif kind == ERR:
                token.set_exception(value)


def _start_call(call: Call) -> bool:
    token: Any = call.owner
    return bool(token.set_running())


def _scopes_of(token: TaskToken[Any]) -> list[tuple[Callable[[Any], Any], object]] | None:
    """The ``(remote_scope, value)`` pairs of the token's extensions, or None."""
    contexts = getattr(token, "remote_contexts", None)
    if contexts is None:
        return None
    pairs = contexts()
    if not pairs:
        return None
    return [(ext_class.remote_scope, value) for ext_class, value in pairs]


def _kill_token(owner: object, core_id: int) -> None:
    token: Any = owner
    token.kill(f"the worker process of core {core_id} shut down before the call ended")


class ProcessBackend:
    """The worker process of one core domain (an :class:`~._executors.ExecutorBackend`).

    ``submit`` pickles the call at once (an unpicklable argument fails the token before
    anything runs). When the process is idle, the submitting worker thread sends the call
    itself; otherwise the call waits in a queue. A dispatcher thread collects every answer
    (or notices the process died), ends the token and sends the next queued call: one call
    in flight at a time. The process starts lazily, with the configured start method, and a
    fresh one replaces it after a crash.
    """

    def __init__(
        self,
        coordinator: OperationsCoordinator,
        core_id: int,
        cpu: int | None,
        start_method: str = "spawn",
    ) -> None:
        """Prepare the backend of ``core_id`` (no process starts until the first token).

        Args:
            coordinator: the owner; its name labels threads and processes.
            core_id: the core domain served.
            cpu: the CPU to bind the process to (``pin_cpus``), or None.
            start_method: ``spawn`` or ``forkserver`` (never ``fork``: the parent is
                multi-threaded).

        Raises:
            ValueError: ``start_method`` is ``fork``.
        """
        if start_method == "fork":
            raise ValueError("process domains never use 'fork': the coordinator is multi-threaded")
        self._coordinator = coordinator
        self._core_id = core_id
        self._cpu = cpu
        self._context = get_context(start_method)
        self._label = f"{coordinator.name}-core{core_id}"
        self._cond = threading.Condition(threading.Lock())
        # Calls waiting for the process: (token, pickled call, already moved to EXECUTING).
        self._pending: deque[tuple[TaskToken[Any], bytes, bool]] = deque()
        # The token whose call is being sent or is in flight (at most one).
        self._active: TaskToken[Any] | None = None
        # A call sent by a worker thread, for the dispatcher to collect.
        self._flight: tuple[TaskToken[Any], BaseProcess, Connection] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._answered = 0
        self._restarts = 0

    # ------------------------------------------------------------------ the interface
    @property
    def alive(self) -> bool:
        """Whether the domain's worker process runs now."""
        process = self._process
        if process is None:
            return False
        try:
            return process.is_alive()
        except (AssertionError, ValueError, OSError):
            return False

    @property
    def pid(self) -> int | None:
        """The pid of the current worker process, or None."""
        process = self._process
        if process is None:
            return None
        try:
            return process.pid
        except ValueError:  # closed after shutdown
            return None

    @property
    def restarts(self) -> int:
        """How many worker processes were started after the first one (after crashes)."""
        return self._restarts

    def submit(self, token: TaskToken[Any]) -> None:
        """Pickle the call of an ``ADMITTED`` token and send or queue it; return at once.

        The token moves to ``EXECUTING`` only when its call is sent. An argument that cannot
        be pickled, or a function that cannot be imported by name, fails the token here: the
        body never runs.
        """
        plan = token._plan
        args, kwargs = token.args, token.kwargs
        if token.done():  # killed or timed out before it got here: it never runs
            return
        problem = _importability_problem(plan.module, plan.qualname)
        if problem is not None:
            token._finish(
                _FAILED,
                exc=ProcessDomainError(
                    f"{plan.operation_type} cannot run with process_pool: {problem}; define it "
                    "at module level of an importable module, or drop process_pool"
                ),
            )
            return
        try:
            payload = pickle.dumps(
                (plan.operation_type, plan.module, plan.qualname, args, kwargs), _PROTOCOL
            )
        except Exception as exc:
            token._finish(
                _FAILED, exc=_argument_error(plan.operation_type, plan.func, args, kwargs, exc)
            )
            return
        direct: tuple[BaseProcess, Connection] | None = None
        with self._cond:
            if self._closed:
                refused = True
            else:
                refused = False
                process, conn = self._process, self._conn
                if (
                    self._active is None
                    and not self._pending
                    and process is not None
                    and conn is not None
                    and process.exitcode is None
                ):
                    self._active = token
                    direct = (process, conn)
                else:
                    self._pending.append((token, payload, False))
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._dispatch, name=f"{self._label}-process", daemon=True
                        )
                        self._thread.start()
                    else:
                        self._cond.notify()
        if refused:
            token.kill(f"the worker process of core {self._core_id} shut down before it ran")
        elif direct is not None:
            self._send_direct(token, payload, *direct)

    def shutdown(self, timeout: float) -> None:
        """End every token still held, stop the worker process and the dispatcher thread.

        A queued token ends ``KILLED`` without running. A body still running in the process
        (its token was killed or timed out already) is abandoned: the process is terminated.
        Takes at most about ``timeout`` seconds (and a few more only to kill a process that
        ignores SIGTERM).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closed = True
            pending = [entry[0] for entry in self._pending]
            self._pending.clear()
            active = self._active
            self._cond.notify_all()
        for token in pending:
            token.kill(f"the worker process of core {self._core_id} shut down before it ran")
        process = self._process
        if active is not None:
            active.kill(f"the worker process of core {self._core_id} shut down")
            if process is not None:
                _log.warning(
                    "%s: terminating the worker process (pid %s) with the body of %s still running",
                    self._label,
                    process.pid,
                    active.token_id,
                )
                _terminate(process)
        current = threading.current_thread()
        thread = self._thread
        if thread is not None and thread is not current:
            thread.join(max(0.05, min(_EXIT_GRACE, deadline - time.monotonic())))
        if process is not None:
            process.join(max(0.05, min(_EXIT_GRACE, deadline - time.monotonic())))
            if process.exitcode is None:
                _log.warning("%s: the worker process did not exit; terminating it", self._label)
                _terminate(process)
            if thread is not None and thread is not current:
                thread.join(1.0)
        if thread is None or not thread.is_alive():
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            if process is not None and process.exitcode is not None:
                with contextlib.suppress(ValueError):
                    process.close()

    # ------------------------------------------------------------------ sending
    def _send_direct(
        self, token: TaskToken[Any], payload: bytes, process: BaseProcess, conn: Connection
    ) -> None:
        """Send from the submitting thread to the idle process; the dispatcher collects."""
        started = self._starting(token)
        sent = False
        if started:
            try:
                conn.send_bytes(payload)
                sent = True
            except (OSError, ValueError):
                pass
        with self._cond:
            if sent:
                self._flight = (token, process, conn)
            else:
                self._active = None
                if started and not token.done():
                    # The pipe broke before the call crossed, so the body has not run: the
                    # dispatcher retries it on a fresh process (or ends it if shut down).
                    self._pending.appendleft((token, payload, True))
            self._cond.notify()

    def _starting(self, token: TaskToken[Any]) -> bool:
        """Move the token to ``EXECUTING`` and run the started hook; False if it must not run.

        A token killed, drained or timed out while it waited here is no longer ``ADMITTED``:
        it never runs.
        """
        if not token._move(_ADMITTED_ONLY, _EXECUTING):
            return False
        plan = token._plan
        if plan.on_started is not None:
            try:
                plan.on_started(token=token)
            except BaseException as exc:
                token._finish(
                    _FAILED,
                    exc=PluginError(f"a plugin failed before {token.token_id} ran: {exc!r}"),
                )
                return False
        return True

    def _send(
        self, token: TaskToken[Any], payload: bytes, started: bool
    ) -> tuple[BaseProcess, Connection] | None:
        """Send from the dispatcher, starting a process when needed; None if nothing crossed."""
        if not started and not self._starting(token):
            return None
        for attempt in range(2):
            with self._cond:
                if self._closed:
                    token.kill(
                        f"the worker process of core {self._core_id} shut down before it ran"
                    )
                    return None
                try:
                    process, conn = self._ready_process()
                except Exception as exc:
                    token._finish(
                        _FAILED,
                        exc=ProcessDomainError(
                            f"the worker process of core {self._core_id} could not be "
                            f"started for {token.token_id}: {exc!r}"
                        ),
                    )
                    return None
            try:
                conn.send_bytes(payload)
            except (OSError, ValueError):
                # The pipe broke before the call crossed: the body has not run, so a fresh
                # process may take it once.
                process.join(0.5)
                if attempt == 0:
                    continue
                self._died(token, process)
                return None
            return process, conn
        return None

    def _ready_process(self) -> tuple[BaseProcess, Connection]:
        """The live worker process and its pipe, started now if needed (under the lock)."""
        process, conn = self._process, self._conn
        if process is not None and conn is not None:
            if process.exitcode is None:
                return process, conn
            _log.warning(
                "%s: the idle worker process (pid %s) had exited (%s); starting a fresh one",
                self._label,
                process.pid,
                _describe_exit(process.exitcode),
            )
        return self._start()

    def _start(self) -> tuple[BaseProcess, Connection]:
        old = self._conn
        if old is not None:
            old.close()
        if self._process is not None:
            self._restarts += 1
            with contextlib.suppress(ValueError):
                self._process.close()
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(child_end, self._core_id, self._cpu),
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
                _log.warning(
                    "%s: pinning the worker process to CPU %s failed: %r",
                    self._label,
                    self._cpu,
                    exc,
                )
        self._process, self._conn = process, parent_end
        self._answered = 0
        _log.info("%s: started worker process pid %s", self._label, process.pid)
        return process, parent_end

    # ------------------------------------------------------------------ the dispatcher
    def _dispatch(self) -> None:
        cond = self._cond
        while True:
            job: tuple[TaskToken[Any], bytes, bool] | None = None
            with cond:
                while (
                    self._flight is None
                    and not self._closed
                    and (self._active is not None or not self._pending)
                ):
                    cond.wait()
                flight, self._flight = self._flight, None
                if flight is None:
                    if self._closed:
                        break
                    job = self._pending.popleft()
                    self._active = job[0]
            token = flight[0] if flight is not None else job[0] if job is not None else None
            try:
                if flight is not None:
                    self._collect(*flight)
                elif job is not None:
                    sent = self._send(*job)
                    if sent is not None:
                        self._collect(job[0], *sent)
            except BaseException as exc:  # never lose a token to a bug here
                _log.exception("%s: dispatching a call failed", self._label)
                if token is not None:
                    token._finish(
                        _FAILED,
                        exc=ProcessDomainError(
                            f"running {token.token_id} in the worker process of core "
                            f"{self._core_id} failed: {exc!r}"
                        ),
                    )
            with cond:
                self._active = None
        self._say_goodbye()

    def _collect(self, token: TaskToken[Any], process: BaseProcess, conn: Connection) -> None:
        """Wait for the answer of the call in flight (or the process's death); end the token."""
        first = self._answered == 0
        answer = self._receive(process, conn)
        if answer is None:
            self._died(token, process, first)
            return
        self._answered += 1
        try:
            kind, value, remote_tb = pickle.loads(answer)
        except Exception as exc:
            error = ProcessDomainError(
                f"the answer of {token.token_id} ({token.operation_type}) from the worker "
                f"process of core {self._core_id} could not be unpickled: {exc!r}"
            )
            error.__cause__ = exc
            token._finish(_FAILED, exc=error)
            return
        if kind == _OK:
            ended = token._finish(_COMPLETED, value)
        else:
            if remote_tb and isinstance(value, BaseException):
                value.add_note(
                    f"\nRemote traceback (worker process of core {self._core_id}, "
                    f"pid {process.pid}):\n{remote_tb.rstrip()}"
                )
            ended = token._finish(_FAILED, exc=value)
        if not ended:
            _log.debug(
                "%s: the answer of %s was discarded (the token ended %s first)",
                self._label,
                token.token_id,
                token.state.value,
            )

    def _receive(self, process: BaseProcess, conn: Connection) -> bytes | None:
        """The answer of the call in flight, or None when the process died first."""
        while True:
            ready = wait([conn, process.sentinel])
            if conn in ready or conn.poll():
                try:
                    return conn.recv_bytes()
                except (EOFError, OSError):
                    return None
            if process.sentinel in ready:
                return None

    def _died(self, token: TaskToken[Any], process: BaseProcess, first: bool = True) -> None:
        process.join(1.0)
        if process.exitcode is None:  # it closed the pipe but lingers: make sure it is gone
            _terminate(process)
        code = process.exitcode
        with self._cond:
            if self._process is process and self._conn is not None:
                self._conn.close()
                self._conn = None
            closed = self._closed
        hint = (
            "; it died before answering its first call: if it fails at start-up, check that the "
            "main module guards its entry point with if __name__ == '__main__'"
            if first
            else ""
        )
        error = ProcessDomainError(
            f"the worker process of core {self._core_id} (pid {process.pid}) died "
            f"({_describe_exit(code)}) while running token {token.token_id} "
            f"({token.operation_type}); only this token failed and the core starts a fresh "
            f"process for its next token{hint}"
        )
        if token._finish(_FAILED, exc=error) and not closed:
            _log.warning("%s", error)

    def _say_goodbye(self) -> None:
        """Ask an idle worker process to exit (the dispatcher's last message)."""
        conn, process = self._conn, self._process
        if conn is None or process is None or process.exitcode is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send_bytes(_STOP)


# ---------------------------------------------------------------------- parent helpers
def _importability_problem(module: str, qualname: str) -> str | None:
    if not module or not qualname:
        return "it has no module or qualified name"
    if "<locals>" in qualname or "<lambda>" in qualname:
        return f"{module}.{qualname} is local or a lambda, not importable by name"
    return None


def _argument_error(
    operation: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: Exception,
) -> ProcessDomainError:
    """Name the argument that cannot be pickled (or the call as a whole)."""
    named: list[tuple[str, object]]
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
        named = list(bound.arguments.items())
    except (TypeError, ValueError):
        named = [(f"#{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    culprit = "the call"
    reason: BaseException = exc
    for name, value in named:
        try:
            pickle.dumps(value, _PROTOCOL)
        except Exception as inner:
            culprit = f"argument {name!r} ({type(value).__qualname__})"
            reason = inner
            break
    error = ProcessDomainError(
        f"{culprit} of {operation} cannot be pickled for process_pool: {reason}; drop "
        "process_pool or pass picklable arguments"
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


def _terminate(process: BaseProcess) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        process.terminate()
        process.join(1.0)
        if process.exitcode is None:
            process.kill()
            process.join(1.0)


# ---------------------------------------------------------------------- the worker process
def _child_main(conn: Connection, core_id: int, cpu: int | None) -> None:
    """Entry point of a domain's worker process: answer one call at a time until told to stop."""
    # Ctrl-C belongs to the coordinator's process, which stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _guard.IN_WORKER_PROCESS = True
    if cpu is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {cpu})
    functions: dict[tuple[str, str], Callable[..., Any]] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if data == _STOP:
            return
        answer = _answer(data, functions, core_id)
        try:
            conn.send_bytes(answer)
        except (OSError, ValueError):
            return


def _answer(
    data: bytes, functions: dict[tuple[str, str], Callable[..., Any]], core_id: int
) -> bytes:
    operation = "the call"
    try:
        operation, module, qualname, args, kwargs = pickle.loads(data)
        key = (module, qualname)
        func = functions.get(key)
        if func is None:
            func = functions[key] = resolve_function(module, qualname)
    except BaseException as exc:
        return _error_answer(
            ProcessDomainError(
                f"the worker process of core {core_id} could not load {operation}: {exc!r}; "
                "process-domain functions must be importable by module and qualified name"
            ),
            None,
        )
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        return _error_answer(_portable(exc, operation), traceback.format_exc())
    try:
        return pickle.dumps((_OK, result, None), _PROTOCOL)
    except BaseException as exc:
        return _error_answer(
            ProcessDomainError(
                f"the result of {operation} ({type(result).__qualname__}) cannot be pickled for "
                f"process_pool: {exc}; drop process_pool or return picklable data"
            ),
            None,
        )


def _portable(exc: BaseException, operation: str) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a ProcessDomainError describing it."""
    try:
        pickle.loads(pickle.dumps(exc, _PROTOCOL))
    except BaseException as problem:
        kind = type(exc)
        return ProcessDomainError(
            f"{operation} raised {kind.__module__}.{kind.__qualname__}: {exc} (the exception "
            f"itself cannot cross processes: {problem!r})"
        )
    return exc


def _error_answer(exc: BaseException, remote_tb: str | None) -> bytes:
    try:
        return pickle.dumps((_ERR, exc, remote_tb), _PROTOCOL)
    except BaseException as problem:
        fallback = ProcessDomainError(f"{type(exc).__qualname__}: {exc} ({problem!r})")
        return pickle.dumps((_ERR, fallback, remote_tb), _PROTOCOL)
