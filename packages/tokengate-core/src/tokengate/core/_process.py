"""Process domains: the built-in ``process`` executor.

:class:`ProcessExecutor` runs the bodies of one core domain in worker processes, with batched
and pipelined calls (the engine is :mod:`._procpool`).

Trust model: the parent unpickles only what its own child processes send over private socket
pairs; nothing listens on a socket address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._config import machine_cpus
from ._executors import AUTO, ExecutorBackend, ExecutorDomain, ExecutorStats
from ._loops import deferring
from ._process_worker import ERR, OK, resolve_function
from ._procpool import (
    BodyProfile,
    Call,
    CallError,
    FunctionRef,
    Outcome,
    ProcPool,
    argument_error,
    function_ref,
)
from ._procpool_wire import dumps
from ._token import finish_many

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("ProcessExecutor", "resolve_function")

_log = logging.getLogger("tokengate.worker")

#: Argument types that always pickle (exact types: a subclass may not).
_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})
#: Functions prepared per executor (by reference or by value); beyond this, the oldest go.
_FUNCTION_CACHE = 1024


class ProcessExecutor(ExecutorBackend):
    """The built-in ``process`` executor: the bodies of one core domain in a worker process.

    Calls cross in batches over a private socket pair, several batches in flight; outcomes
    are written as bodies end and read in batches (see the process domains page of the
    docs). Importable functions travel by reference with plain pickle; closures, lambdas and
    functions of ``__main__`` by value through cloudpickle; large numpy arrays and ``bytes``
    as pickle protocol 5 out-of-band buffers.

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
        #: Per operation plan: (function, auto, remote contexts, remote contexts for tokens
        #: without extension state); see :meth:`_prepare`.
        self._prepared: dict[object, tuple[FunctionRef, bool, bool, bool]] = {}
        #: Where a token of an ``executor: "auto"`` operation goes when its arguments cannot
        #: be pickled (the same core's thread executor, set by the auto policy), instead of
        #: failing.
        self.fallback: Callable[[TaskToken[Any]], None] | None = None
        self._shut = False
        fixed = config.processes_per_core
        #: The coordinator's elastic domains share a budget of one process per CPU plus one
        #: (a domain's first process always starts): the busiest domain takes the extra
        #: processes, and the domains together do not crowd the CPUs with processes.
        self._budget_key = domain.coordinator_name
        self._reserved = 0
        if fixed is None:  # elastic: one process, more while the domain has a backlog
            self._max_pools = 1 if domain.cpu is not None else max(1, len(machine_cpus()))
            self._reserved = _reserve_process(self._budget_key, force=True)
        else:
            self._max_pools = fixed
        self._label = f"{domain.coordinator_name}-core{domain.core_id}"
        #: The executor of operations whose tags name none (``auto`` makes them auto ones).
        self._default_executor = str(getattr(config, "executor", "thread")).lower()
        self._config = config
        self._cpu = domain.cpu
        self._grow_at = 2 * config.process_batch_size
        self._pools: list[ProcPool] = []
        #: The processes calls go to: a process added for a backlog joins once it is ready.
        self._serving: list[ProcPool] = []
        for _ in range(fixed or 1):
            self._add_pool()
        self._serving = list(self._pools)
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

    @property
    def pid(self) -> int | None:
        """The pid of the domain's first worker process, or None."""
        return self._pools[0].pid

    @property
    def restarts(self) -> int:
        """Worker processes started after the first ones (deaths, kills, recycling)."""
        return sum(pool.stats().restarts for pool in self._pools)

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Queue the tokens' calls for the worker process and return at once.

        A function that can be sent neither by reference nor by value, or an extension whose
        ``remote_context`` fails, fails its token here: the body never runs.
        """
        held = self._calls  # single dict operations are atomic: no lock on the hot path
        prepared_of = self._prepared
        calls: list[Call] = []
        has_auto = False
        for token in tokens:
            prepared = prepared_of.get(token._plan)
            scopes = None
            try:
                if prepared is None:
                    prepared = self._prepare(token)
                fn, auto, remote, remote_free = prepared
                # A token that carries no extension state asks only the extensions that
                # answer for such tokens too (usually none: no call at all).
                if remote and (remote_free or token._ext is not None):
                    scopes = _scopes_of(token)
                    if scopes is None and token.done():  # a remote_context failed it
                        continue
            except Exception as exc:
                token.set_exception(exc)
                continue
            if auto:
                if not self._arguments_pickle(token, fn):
                    continue
                has_auto = True
            calls.append(Call(fn, token.args, token.kwargs, token, scopes))
        if not calls:
            return
        pools = self._pools
        if (
            has_auto
            and self.fallback is not None
            and not pools[0].ready
            and not any(p.ready for p in pools)
        ):
            # Moved here by executor "auto" while the worker process still starts: the
            # calls run on the core's threads meanwhile instead of waiting for it.
            self.warm()
            fallback = self.fallback
            kept: list[Call] = []
            for call in calls:
                owner: Any = call.owner
                entry = prepared_of.get(owner._plan)
                if entry is None or entry[1]:  # an auto operation's call
                    fallback(owner)
                else:
                    kept.append(call)
            calls = kept
            if not calls:
                return
        if len(pools) < self._max_pools and all(p.backlog() >= self._grow_at for p in pools):
            self._grow(pools)
        pools = self._serving
        if len(pools) < len(self._pools):  # a process added for a backlog serves once ready
            pools = self._serving = [p for p in self._pools if p.ready] or pools
        if len(pools) == 1 or len(calls) == 1:
            pool = pools[0]
            if len(pools) > 1:  # one call: the least loaded process takes it
                least = pool.load()
                for other in pools[1:]:
                    load = other.load()
                    if load < least:
                        pool, least = other, load
            for call in calls:
                held[id(call.owner)] = (pool, call)
            pool.submit(calls)
            return
        loads = [pool.load() for pool in pools]
        shares: list[list[Call]] = [[] for _ in pools]
        for call in calls:
            least = loads.index(min(loads))
            loads[least] += 1
            shares[least].append(call)
        for pool, share in zip(pools, shares, strict=True):
            for call in share:
                held[id(call.owner)] = (pool, call)
        for pool, share in zip(pools, shares, strict=True):
            if share:
                pool.submit(share)

    def warm(self) -> None:
        """Start the domain's worker process now, before its first call."""
        for pool in self._pools:
            pool.start()

    def _grow(self, pools: list[ProcPool]) -> None:
        """One more worker process for a domain with a backlog (it takes calls once ready)."""
        with self._lock:
            if len(self._pools) < self._max_pools:
                if not _reserve_process(self._budget_key):
                    # The coordinator's other domains took the budget (it only comes back
                    # when they stop): stop asking.
                    self._max_pools = len(self._pools)
                    return
                self._reserved += 1
                grown = self._add_pool()
                grown.start()
                _log.info(
                    "%s: a backlog of %d calls: worker process %d of at most %d starts",
                    self._label,
                    min(p.backlog() for p in pools),
                    len(self._pools),
                    self._max_pools,
                )

    def _prepare(self, token: TaskToken[Any]) -> tuple[FunctionRef, bool, bool, bool]:
        """What every call of the token's operation shares: the prepared function, whether
        the operation is ``auto`` (its arguments are checked before sending), whether
        extensions give remote contexts, and whether any does for a token that carries no
        extension state."""
        plan = token._plan
        fn = self._function_of(token)
        named = getattr(plan, "executor", None)
        auto = (named or self._default_executor) == AUTO
        remote = getattr(token, "remote_contexts", None) is not None and bool(
            getattr(plan, "ext_remote", True)
        )
        remote_free = remote and bool(getattr(plan, "ext_remote_free", True))
        prepared = (fn, auto, remote, remote_free)
        with self._lock:
            if len(self._prepared) >= _FUNCTION_CACHE:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[plan] = prepared
        return prepared

    def cancel(self, token: TaskToken[Any]) -> None:
        """Stop the token's call: unqueued, skipped by the process, or — when its body runs —
        the process is killed and replaced (calls queued behind it are not lost)."""
        with self._lock:
            held = self._calls.get(id(token))
        if held is None or held[1].owner is not token:
            return
        pool, call = held
        if pool.cancel(call):  # dropped before it was sent: no outcome will come
            self._calls.pop(id(token), None)

    def shutdown(self, timeout: float) -> None:
        """Stop the worker process within about ``timeout`` seconds; every token still held
        ends ``KILLED`` (a body still running is abandoned and its process killed)."""
        self._shut = True
        with self._lock:
            reserved, self._reserved = self._reserved, 0
        _release_processes(self._budget_key, reserved)
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
            # up, or not started yet (a domain's process starts with its first token)
            alive=not self._shut and (alive > 0 or all(pid is None for pid in pids)),
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
        args = token.args
        if not token.kwargs and all(type(arg) in _ATOMS for arg in args):
            return True  # plain numbers, strings and bytes always pickle: nothing to try
        try:
            dumps((token.args, token.kwargs))
            return True
        except Exception as exc:
            problem = exc
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
        for call, _kind, _value in outcomes:
            key = id(call.owner)
            held = calls.get(key)
            if held is not None and held[1] is call:
                calls.pop(key, None)
        settled: list[tuple[TaskToken[Any], bool, Any]] = []
        for call, kind, value in outcomes:
            token: Any = call.owner
            if kind == OK:
                settled.append((token, True, value))
            elif kind == ERR:
                if isinstance(value, CallError):
                    value = value.naming(f"token {token.token_id} ({token.operation_type})")
                settled.append((token, False, value))
        # One settle for the batch; it wakes each awaiting event loop once, at its end.
        deferring(True)
        try:
            finish_many(settled)
        finally:
            deferring(False)


#: Elastic domains of a coordinator start at most this many processes beyond one per CPU.
EXTRA_PROCESSES = 1
#: Worker processes of elastic domains, per coordinator name (unique in this process).
_BUDGET: dict[str, int] = {}
_BUDGET_LOCK = threading.Lock()


def _reserve_process(coordinator: str, *, force: bool = False) -> int:
    """Count one more elastic worker process for ``coordinator``: 1, or 0 when its elastic
    domains already run one process per CPU plus one (``force``: a domain's first)."""
    with _BUDGET_LOCK:
        running = _BUDGET.get(coordinator, 0)
        if not force and running >= len(machine_cpus()) + EXTRA_PROCESSES:
            return 0
        _BUDGET[coordinator] = running + 1
        return 1


def _release_processes(coordinator: str, count: int) -> None:
    with _BUDGET_LOCK:
        left = _BUDGET.get(coordinator, 0) - count
        if left > 0:
            _BUDGET[coordinator] = left
        else:
            _BUDGET.pop(coordinator, None)


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
