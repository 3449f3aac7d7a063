"""``OperationsCoordinator``: lifecycle, admission and administration of core domains.

Routing lives in :mod:`._router`, execution in the executor backends (made per domain through
the executor registry, :mod:`._backends`), the execution log in :mod:`._records` and the loop
bridges in :mod:`._loops`. The coordinator admits tokens, owns them until their terminal move
(it is their :class:`~._protocols.TokenOwner`), and starts, stops, pauses and inspects.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

from pydantic import ValidationError

from ._auto import AutoDecision, AutoPolicy, process_problem
from ._backends import BackendTable, ExecutorFactory, executor_argument
from ._calls import map_calls, submit_call
from ._config import CoordinatorConfig, machine_cpus
from ._context import CURRENT, push_running, remove_running
from ._deadlines import DeadlineWatcher
from ._enums import StorageSpeed, TokenState
from ._errors import ConfigurationError, CoordinatorNotRunningError, PluginError, RoutingError
from ._executors import AUTO, ExecutorBackend, ExecutorDomain
from ._loops import BridgeRegistry, LoopBridge
from ._metrics import CoordinatorStats, ExecutionRecord, OperationMetrics
from ._plan import OperationPlan, plan_of
from ._plugins import plugin_manager
from ._records import ExecutionLog
from ._router import Router
from ._storage import StorageGate
from ._threads_policy import OperationDecision
from ._timeouts import check_timeout
from ._token import CREATED, EXECUTING, KILLED, NOT_STARTED, TERMINAL, TIMEOUT, WAITING, TaskToken

__all__ = ("OperationsCoordinator",)

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

#: ``kwargs`` of every token called without keywords (never mutated: tokens only unpack it).
_NO_KWARGS: dict[str, Any] = {}
_log = logging.getLogger("tokengate.coordinator")

_TOKEN_IDS = itertools.count(1)
_COORDINATOR_IDS = itertools.count(1)
_ENDED_BY_CANCEL = frozenset({KILLED, TIMEOUT})
#: Held (paused) tokens that ended are dropped in amortised sweeps once the queue reaches this
#: size or twice what the last sweep kept.
_HELD_SWEEP_MIN = 1024
#: Longest wait handed to a backend's ``shutdown`` (select/epoll reject waits of about 25 days
#: and more); ``stop(timeout=math.inf)`` has already waited for every token by then.
_LONGEST_BACKEND_WAIT = 86_400.0
#: After a second Ctrl-C at exit: how long the executors get to end their threads and processes.
_ABANDON_GRACE = 0.2


def _config_problem(error: Any) -> str:
    """One setting's problem; an unknown setting gets a did-you-mean."""
    where = ".".join(str(p) for p in error["loc"]) or "config"
    if error.get("type") == "extra_forbidden":
        close = difflib.get_close_matches(where, list(CoordinatorConfig.model_fields), n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else "settings: " + ", ".join(sorted(CoordinatorConfig.model_fields))
        )
        return f"{where!r} is not a setting; {hint}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def _notice(text: str) -> None:
    """What an exit waits for, on stderr (an interactive user pressed Ctrl-C, so a logger
    that may be silent is not enough) and in the log."""
    _log.info("%s", text)
    try:
        sys.stderr.write(f"tokengate: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no usable stderr (closed, None)
        pass


class OperationsCoordinator:
    """Owns a fixed set of core domains, admits every token and ends it.

    Configuration is validated (:class:`CoordinatorConfig`); defaults come from the machine.
    While started, it is the *current* coordinator for decorated calls made in its process
    (inside a running token: the coordinator running it). Several coordinators may exist;
    they share no mutable state.

    Use ``start()`` / ``stop()``, ``with OperationsCoordinator() as c:`` or
    ``async with OperationsCoordinator() as c:``.
    """

    def __init__(
        self,
        *,
        cores: int | None = None,
        workers_per_core: int = 4,
        config: CoordinatorConfig | None = None,
        executor: str | ExecutorFactory | None = None,
        **settings: Any,
    ) -> None:
        """Make a coordinator (nothing runs until ``start()``).

        Args:
            cores: number of core domains (default: the CPUs this process may use, or the
                ``cores`` a factory object given as ``executor`` suggests).
            workers_per_core: worker threads per core domain.
            config: a complete configuration instead of keyword settings.
            executor: the default executor of operations whose tags name none: a registered
                name (``"thread"``, ``"process"``, ``"auto"``, a plugin's), or a factory object
                ``factory(domain) -> ExecutorBackend`` (its optional ``name`` attribute names
                it for this coordinator, its optional ``cores`` sizes it).
            **settings: any other :class:`CoordinatorConfig` field.

        Raises:
            ConfigurationError: a setting is invalid, or ``executor`` names no registered
                executor (the message names it and what is allowed).
        """
        local: dict[str, ExecutorFactory] = {}
        name: str | None = None
        if executor is not None:
            name, factory, suggested = executor_argument(executor)
            if factory is not None:
                local[name] = factory
                if cores is None and config is None and suggested is not None:
                    cores = suggested
        if config is None:
            values: dict[str, Any] = {"workers_per_core": workers_per_core, **settings}
            if cores is not None:
                values["cores"] = cores
            if name is not None:
                values["executor"] = name
            try:
                config = CoordinatorConfig(**values)
            except ValidationError as exc:
                problems = "; ".join(_config_problem(e) for e in exc.errors())
                raise ConfigurationError(
                    f"invalid OperationsCoordinator setting: {problems}"
                ) from None
        elif cores is not None or settings or workers_per_core != 4:
            raise ConfigurationError("pass either config= or keyword settings, not both")
        elif name is not None and name != config.executor:
            config = config.model_copy(update={"executor": name})
        if config.executor != AUTO and config.executor not in local:
            known = plugin_manager().state().executors
            if config.executor not in known:
                raise ConfigurationError(
                    f"invalid OperationsCoordinator setting: executor {config.executor!r} is not "
                    f"registered; allowed: {', '.join((AUTO, *known))}, or a factory object"
                )
        self._config = config
        self._local_executors = local
        self._name = f"tokengate-{next(_COORDINATOR_IDS)}"
        self._lock = threading.RLock()
        self._running = False
        # Set while a stop() runs: a second stop() and start() wait on it.
        self._stopping: threading.Event | None = None
        self._stopper: int | None = None
        self._paused = False
        self._paused_ops: set[str] = set()
        self._held: deque[TaskToken[Any]] = deque()
        self._held_sweep_at = _HELD_SWEEP_MIN
        self._tokens: dict[int, TaskToken[Any]] = {}
        self._records = ExecutionLog(config.history_size)
        self._metrics = OperationMetrics(config.operation_stats_limit)
        self._storage = StorageGate(config.storage_limits)
        self._deadlines = DeadlineWatcher(f"{self._name}-deadlines")
        self._bridges = BridgeRegistry()
        self._backends = self._new_backends()
        self._router = self._new_router()
        self._auto = self._new_auto()
        self._idle = threading.Event()
        self._watch_idle = False
        self._abandon = False  # a second Ctrl-C at exit: stop waiting for running bodies
        self._announce_exit = False  # the with block is left by Ctrl-C: say what is waited for
        self._ext_state: dict[Hashable, Any] = {}
        self._cpus = machine_cpus()

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> CoordinatorConfig:
        """The validated configuration."""
        return self._config

    @property
    def cores(self) -> int:
        """Number of core domains (numbered 1..cores)."""
        return self._config.cores

    @property
    def workers_per_core(self) -> int:
        """Worker threads per core domain."""
        return self._config.workers_per_core

    @property
    def executor(self) -> str:
        """The name of the default executor (for operations whose tags name none)."""
        return self._config.executor

    @property
    def running(self) -> bool:
        """Whether the coordinator accepts calls."""
        return self._running

    @property
    def name(self) -> str:
        """A name unique in this process, used for thread names."""
        return self._name

    def cpu_of(self, core_id: int) -> int:
        """The CPU a core domain is bound to when ``pin_cpus`` is on."""
        return self._cpus[(core_id - 1) % len(self._cpus)]

    def extension_state(self, key: Hashable, factory: Callable[[], T]) -> T:
        """Per-coordinator state of a plugin: made by ``factory`` on first use under ``key``."""
        state = self._ext_state.get(key)
        if state is None:
            with self._lock:
                state = self._ext_state.get(key)
                if state is None:
                    state = self._ext_state[key] = factory()
        result: T = state
        return result

    def backend(self, executor: str, core_id: int) -> ExecutorBackend:
        """The backend of ``executor`` for core domain ``core_id`` (made now if needed).

        Raises:
            KeyError: no executor has that name.
            ValueError: ``core_id`` is not one of 1..cores.
        """
        if not isinstance(core_id, int) or not 1 <= core_id <= self._config.cores:
            raise ValueError(f"core {core_id!r}: this coordinator has cores 1..{self.cores}")
        return self._backends.get(executor.lower(), core_id)

    # ------------------------------------------------------------------ executors
    def _factory_of(self, name: str) -> ExecutorFactory:
        local = self._local_executors.get(name)
        if local is not None:
            return local
        return plugin_manager().state().executors.get(name)

    def _domain_of(self, core_id: int) -> ExecutorDomain:
        config = self._config
        return ExecutorDomain(
            core_id=core_id,
            cores=config.cores,
            cpu=self.cpu_of(core_id) if config.pin_cpus else None,
            config=config,
            coordinator_name=self._name,
        )

    def _new_backends(self) -> BackendTable:
        return BackendTable(self._config.cores, self._domain_of, self._factory_of)

    def _new_router(self) -> Router:
        config = self._config
        return Router(
            config.cores, config.workers_per_core, self._backends, self._storage, config.executor
        )

    def _new_auto(self) -> AutoPolicy:
        """The ``executor: auto`` policy: it moves operations between threads and processes."""
        auto = AutoPolicy(self._backends.made, self._router.move_operation, process_problem)
        self._router.set_auto(auto.choose)
        return auto

    def auto_decisions(self) -> Mapping[str, AutoDecision]:
        """Per ``executor: auto`` operation: where its tokens run now, and why."""
        return self._auto.decisions()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Become the current coordinator and accept calls. Idempotent.

        Executor backends (threads, processes) are made per core domain on its first token
        for them. If a ``stop()`` is in progress (in another thread), waits for it to return
        first, then starts afresh.

        Raises:
            RuntimeError: called while this very thread is running ``stop()`` (from a
                done-callback of a token that ``stop()`` ends).
        """
        while True:
            with self._lock:
                stopping = self._stopping
                if stopping is None:
                    if self._running:
                        _log.warning("%s is already running", self._name)
                        return self
                    self._start_locked()
                    break
            if self._stopper == threading.get_ident():
                raise RuntimeError(
                    f"{self._name}.start() was called while this thread is stopping it (from a "
                    "done-callback?); call start() after stop() has returned"
                )
            stopping.wait()
        push_running(self)
        plugin_manager().coordinator_started(self)
        _log.info(
            "%s started: %d cores, executor %s",
            self._name,
            self._config.cores,
            self._config.executor,
        )
        return self

    def _start_locked(self) -> None:
        """Fresh routing and backends (under the lifecycle lock)."""
        self._backends = self._new_backends()
        self._router = self._new_router()
        self._auto = self._new_auto()
        self._deadlines = DeadlineWatcher(f"{self._name}-deadlines")
        self._idle.clear()
        self._watch_idle = False
        self._abandon = False
        self._running = True

    def stop(
        self, *, wait: bool = True, cancel_pending: bool = False, timeout: float | None = None
    ) -> None:
        """Stop accepting calls, end every token and shut the executors down. Never hangs.

        Args:
            wait: let admitted work finish, for at most ``timeout`` seconds; without it every
                token not yet terminal is killed at once.
            cancel_pending: kill what has not started before waiting.
            timeout: bound of the wait (default: ``config.stop_timeout``); ``math.inf``
                waits as long as the admitted work takes. Tokens still running after it end
                ``KILLED``; their threads are abandoned and reported.

        Stops are serialized: a ``stop()`` called while another is in progress (from another
        thread) waits for that one to return; ``start()`` meanwhile waits too.

        Raises:
            RuntimeError: called from inside one of this coordinator's own tokens.
            ValueError: ``timeout`` is negative, NaN or finite beyond
                ``threading.TIMEOUT_MAX`` (``TypeError``: not a number).
        """
        if CURRENT.get() is self:
            raise RuntimeError(
                f"{self._name}.stop() was called from inside one of its own tokens; "
                "call stop() from outside the coordinator"
            )
        limit = check_timeout(timeout, f"{self._name}.stop()")
        with self._lock:
            stopping = self._stopping
            mine = stopping is None
            if mine:
                if not self._running:
                    return
                self._running = False
                stopping = self._stopping = threading.Event()
                self._stopper = threading.get_ident()
        assert stopping is not None
        if not mine:
            if self._stopper != threading.get_ident():  # not re-entered from our own callbacks
                stopping.wait()
            return
        try:
            self._stop(wait, cancel_pending, timeout, limit)
        finally:
            with self._lock:
                self._stopping = None
                self._stopper = None
            stopping.set()

    def _stop(
        self, wait: bool, cancel_pending: bool, timeout: float | None, limit: float | None
    ) -> None:
        remove_running(self)
        if timeout is None:
            limit = self._config.stop_timeout
        elif limit is None:
            limit = math.inf
        if not wait:  # nothing to wait for: only a short grace for threads to exit
            limit = min(limit, 1.0)
        deadline = time.monotonic() + limit
        with self._lock:
            held = list(self._held)
            self._held.clear()
        for token in held:
            token.kill("coordinator stopped while admission was paused")
        if cancel_pending or not wait:
            for token in list(self._tokens.values()):
                if token._tstate in NOT_STARTED:  # checked again atomically by the kill
                    token._kill_unstarted("coordinator stopped before the token started")
        interrupt: KeyboardInterrupt | None = None
        if wait:
            interrupt = self._wait_at_stop(deadline)
        if self._abandon:  # a second Ctrl-C: return at once (threads are daemons)
            deadline = min(deadline, time.monotonic() + _ABANDON_GRACE)
        leftovers = [t for t in list(self._tokens.values()) if not t.done()]
        abandoned = [t for t in leftovers if t._tstate is EXECUTING]
        for token in leftovers:
            token.kill("coordinator stopped")
        if abandoned:
            _log.warning(
                "%s stopped with %d bodies still running (abandoned, their results will be "
                "discarded): %s",
                self._name,
                len(abandoned),
                ", ".join(t.token_id for t in abandoned[:10]),
            )
        self._deadlines.stop()
        self._auto.close()
        # Every token is terminal: the backends now only have threads and processes to end.
        self._backends.shutdown(min(deadline, time.monotonic() + _LONGEST_BACKEND_WAIT))
        # A call that passed the running check just before stop may have registered since.
        for token in list(self._tokens.values()):
            token.kill("coordinator stopped")
        plugin_manager().coordinator_stopped(self)
        _log.info("%s stopped", self._name)
        if interrupt is not None:
            raise interrupt  # the Ctrl-C that arrived while waiting, once everything is ended

    def _wait_at_stop(self, deadline: float) -> KeyboardInterrupt | None:
        """Wait for the admitted work. A first Ctrl-C (KeyboardInterrupt in this thread)
        kills what has not started and says on stderr what is still waited for; a second one
        abandons the running bodies. Returns the interrupt to re-raise once stopped."""
        interrupted, self._announce_exit = self._announce_exit, False
        try:
            if interrupted:  # the block was left by a first Ctrl-C: the next one abandons
                self._announce_wait()
            self._wait_idle(deadline)
        except KeyboardInterrupt as exc:
            first = exc
        else:
            return None
        if interrupted:
            self._abandon_running()
            return first
        try:
            self._kill_not_started("coordinator interrupted (Ctrl-C) before the token started")
            self._announce_wait()
            self._wait_idle(deadline)
        except KeyboardInterrupt as exc:
            self._abandon_running()
            return exc
        return first

    def _running_bodies(self) -> list[TaskToken[Any]]:
        return [t for t in list(self._tokens.values()) if t._tstate is EXECUTING and not t.done()]

    def _kill_not_started(self, reason: str) -> None:
        for token in list(self._tokens.values()):
            if token._tstate in NOT_STARTED:  # checked again atomically by the kill
                token._kill_unstarted(reason)

    def _announce_wait(self) -> None:
        running = self._running_bodies()
        if not running:
            return
        counts = Counter(t.operation_type for t in running)
        names = ", ".join(f"{name} x{n}" for name, n in counts.most_common(5))
        more = f" and {len(counts) - 5} more operations" if len(counts) > 5 else ""
        _notice(
            f"{self._name} is waiting for {len(running)} running "
            f"{'body' if len(running) == 1 else 'bodies'} ({names}{more}); "
            "press Ctrl-C again to abandon them"
        )

    def _abandon_running(self) -> None:
        """Stop waiting for running bodies: they end KILLED now, their threads are left to
        finish as daemons and worker processes are terminated by the shutdown."""
        running = self._running_bodies()
        self._abandon = True
        for token in running:
            token.kill("abandoned at exit (second Ctrl-C)")
        if running:
            _notice(f"{self._name} abandoned {len(running)} running bodies")
        self._idle.set()

    def _wait_idle(self, deadline: float) -> None:
        self._watch_idle = True
        while self._tokens:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._idle.clear()
            if not self._tokens:
                return
            self._idle.wait(min(remaining, 0.5))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """A clean exit waits for every call (as :meth:`stop`). An exception leaving the
        block kills the calls that have not started and waits only for running bodies. Ctrl-C
        during the wait says on stderr what it waits for; a second Ctrl-C abandons the running
        bodies and returns at once."""
        self._announce_exit = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.stop(cancel_pending=exc_type is not None)

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """As :meth:`__exit__`, without blocking the loop. If the exiting task is cancelled
        while it waits (Ctrl-C under ``asyncio.run``), calls not started are killed and the
        wait goes on for running bodies; a second cancellation abandons them."""
        failed = exc_type is not None
        stopping = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.stop, cancel_pending=failed)
        )
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            self._kill_not_started("coordinator exit was cancelled before the token started")
            self._announce_wait()
            try:
                await asyncio.shield(stopping)
            except asyncio.CancelledError:
                self._abandon_running()
                await stopping  # quick now: nothing is waited for
                raise
            raise

    # ------------------------------------------------------------------ undecorated callables
    @overload
    def submit(
        self, fn: Callable[..., R], /, *args: Any, tags: Mapping[str, object] | None, **kwargs: Any
    ) -> TaskToken[R]: ...

    @overload
    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> TaskToken[R]: ...

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> TaskToken[R]:
        """Call ``fn(*args, **kwargs)`` as an operation of this coordinator; return its token.

        The ``concurrent.futures`` way to hand over any synchronous callable (function, lambda,
        closure, bound method, ``functools.partial``) without decorating it: ``fn`` with
        ``tags`` becomes an operation as if decorated with ``@task_token_guard(tags=tags)``.
        Tags are validated and the plan compiled once per (callable, tags) and cached, not per
        call. The call goes to this coordinator even when another one is current.

        Args:
            fn: the callable (positional-only: ``fn`` itself may take a keyword ``fn``).
            *args: positional arguments of ``fn``.
            **kwargs: keyword arguments of ``fn``, except ``tags``: keyword only, the
                operation's tags (see the tag reference), e.g. ``{"weight": "light"}``
                (``fn`` therefore cannot receive a keyword named ``tags``). Typed: without
                ``tags`` the call is checked against ``fn``'s parameters.

        Raises:
            TypeError: ``fn`` is not callable or is async; ``tags`` is not a mapping.
            TagValidationError: a tag is unknown, malformed or conflicts with another.
            CoordinatorNotRunningError: this coordinator is not running.
        """
        tags = kwargs.pop("tags", None)
        return submit_call(self, fn, args, kwargs, tags)

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        tags: Mapping[str, object] | None = None,
        buffersize: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[R]:
        """``Executor.map`` over tokens: ``fn(*args)`` for each tuple of the zipped iterables.

        Results come in the order of the arguments. Without ``buffersize`` every call is
        submitted at once (the iterables are read now); with it, at most ``buffersize`` calls
        are in flight ahead of the consumer and the iterables are read lazily, so an endless
        iterable works. Closing the iterator early (or a wait timing out) kills the calls that
        have not started; running ones finish and their results are dropped.

        Args:
            fn: the callable (tags validated once per (callable, tags), as :meth:`submit`).
            tags: the operation's tags.
            buffersize: calls kept in flight ahead of the consumer (``>= 1``), or None.
            timeout: seconds for the whole map from this call; past it, taking the next
                result raises ``TimeoutError``.

        Raises:
            TypeError / TagValidationError: as :meth:`submit`.
            ValueError: ``buffersize`` is not an int ``>= 1``.
            Exception: while iterating, whatever a call raised (the rest are then killed).
        """
        return map_calls(self, fn, iterables, tags, buffersize, timeout)

    # ------------------------------------------------------------------ admission (hot path)
    def _submit(
        self, plan: OperationPlan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskToken[Any]:
        if not self._running:
            raise CoordinatorNotRunningError(
                f"{plan.operation_type} was called but {self._name} is not running; start it first"
            )
        # No keywords (the common case): one shared empty mapping instead of the call's own
        # empty dict, which would live (and count for the garbage collector) with the token.
        token: TaskToken[Any] = TaskToken(plan, args, kwargs or _NO_KWARGS, self, next(_TOKEN_IDS))
        try:
            if plan.broken is not None:
                raise plan.broken
            if plan.ext_create or plan.on_created is not None:
                self._run_create_hooks(token, plan)
            if token._tstate is not CREATED:  # an extension ended it already
                return token
            token._tstate = WAITING  # not yet visible to any other thread: no gate needed
            self._tokens[token.seq] = token
            if self._stopped_meanwhile():  # stop() began after the check above
                token.kill("coordinator stopped before the token was routed")
                return token
            if plan.timeout is not None:
                self._deadlines.add(token, plan.timeout)
            paused = self._paused or (self._paused_ops and plan.operation_type in self._paused_ops)
            if paused and self._hold(token):
                return token
            self._router.route(token)
        except BaseException as exc:
            self._fail_before_start(token, exc)
        return token

    def _stopped_meanwhile(self) -> bool:
        """Re-read the running flag (stop() may have swept the tokens since the first check)."""
        return not self._running

    @staticmethod
    def _run_create_hooks(token: TaskToken[Any], plan: OperationPlan) -> None:
        for ext in plan.ext_create:
            try:
                ext.on_create(token)
            except Exception as exc:
                raise PluginError(
                    f"extension {ext!r} failed creating {token.token_id}: {exc!r}"
                ) from exc
        if plan.on_created is not None:
            try:
                plan.on_created(token=token)
            except Exception as exc:
                raise PluginError(
                    f"a tokengate_token_created hook failed for {token.token_id}: {exc!r}"
                ) from exc

    def _fail_before_start(self, token: TaskToken[Any], exc: BaseException) -> None:
        if isinstance(exc, (RoutingError, PluginError)):
            error: BaseException = exc
        else:
            error = RoutingError(
                f"routing token {token.token_id} ({token.operation_type}) failed: {exc!r}"
            )
            error.__cause__ = exc
        _log.debug("token %s failed before it started: %r", token.token_id, exc)
        token.set_exception(error)

    def _hold(self, token: TaskToken[Any]) -> bool:
        with self._lock:
            if self._paused or token.operation_type in self._paused_ops:
                if len(self._held) >= self._held_sweep_at:
                    self._sweep_held()  # tokens killed one by one while held
                self._held.append(token)
                return True
        return False

    # ------------------------------------------------------------------ TokenOwner
    def token_ended(self, token: TaskToken[Any]) -> None:
        """The release steps of a terminal move (run exactly once per token).

        Re-entrant: when an asynchronous exception (``KeyboardInterrupt``) interrupts it, the
        token calls it again. Forgetting the token and releasing its pin are idempotent; the
        other steps are marked in ``token._release_step`` before they run, so none runs twice.
        A ``BaseException`` that is not an ``Exception`` from a hook does not skip the later
        steps: it is re-raised after them.
        """
        plan = plan_of(token)
        self._tokens.pop(token.seq, None)
        if token._pin is not None:
            self._router.release_sticky(token)
        interrupt: BaseException | None = None
        if token._release_step < 1:
            token._release_step = 1
            backend = token._backend
            if backend is not None and token._tstate in _ENDED_BY_CANCEL:
                try:
                    backend.cancel(token)
                except BaseException as exc:  # every step must run
                    _log.exception("cancel of %r failed for %s", backend, token.token_id)
                    if not isinstance(exc, Exception):
                        interrupt = exc
        if token._release_step < 2:
            token._release_step = 2
            if token._ext is not None:
                terminal = () if plan.plain_terminal else plan.ext_terminal
            else:
                terminal = () if plan.plain_terminal_free else plan.ext_terminal_free
            if terminal:
                for ext in terminal:
                    try:
                        ext.on_terminal(token)
                    except BaseException as exc:  # every step must run
                        _log.exception("on_terminal of %r failed for %s", ext, token.token_id)
                        if interrupt is None and not isinstance(exc, Exception):
                            interrupt = exc
        if token._release_step < 3:
            token._release_step = 3
            if token._holds_slot and token.started_at is None:
                self._router.release_slot(token)
        if token._release_step < 4:
            token._release_step = 4
            try:
                state = token._tstate
                started = token.started_at
                self._metrics.record(
                    plan.operation_type,
                    state,
                    None if started is None else (token.finished_at or 0.0) - started,
                )
                self._records.add(token, state, token._exc)
            except Exception:
                _log.exception("recording the execution of %s failed", token.token_id)
        if token._release_step < 5:
            token._release_step = 5
            if plan.on_finished is not None:
                try:
                    plan.on_finished(token=token)
                except BaseException as exc:  # every step must run
                    _log.exception("a tokengate_token_finished hook failed for %s", token.token_id)
                    if interrupt is None and not isinstance(exc, Exception):
                        interrupt = exc
        if self._watch_idle and not self._tokens:
            self._idle.set()
        if interrupt is not None:
            raise interrupt

    def tokens_ended(self, tokens: list[TaskToken[Any]]) -> None:
        """:meth:`token_ended` for a batch of tokens (an executor settling many outcomes at
        once): the same steps, with the router's, the metrics' and the log's locks taken once
        per batch instead of once per token. A token whose terminal move needs more (a plugin
        step, a cancel, a storage slot) takes the one-by-one path."""
        fast: list[TaskToken[Any]] = []
        pinned = False
        for token in tokens:
            plan = plan_of(token)
            if (
                token._release_step == 0
                and token._tstate not in _ENDED_BY_CANCEL
                and (plan.plain_terminal if token._ext is not None else plan.plain_terminal_free)
            ):
                fast.append(token)
                if token._pin is not None:
                    pinned = True
            else:
                self.token_ended(token)
        if not fast:
            return
        table = self._tokens
        for token in fast:
            table.pop(token.seq, None)
        if pinned:
            self._router.release_sticky_many(fast)
        rows: list[tuple[str, TokenState, float | None]] = []
        for token in fast:
            token._release_step = 4  # marked before it runs, as one by one: never twice
            started = token.started_at
            rows.append(
                (
                    token._plan.operation_type,
                    token._tstate,
                    None if started is None else (token.finished_at or 0.0) - started,
                )
            )
        try:
            self._metrics.record_many(rows)
            self._records.add_many(fast)
        except Exception:
            _log.exception("recording the executions of %d tokens failed", len(fast))
        for token in fast:
            token._release_step = 5
        if self._watch_idle and not self._tokens:
            self._idle.set()

    def body_returned(self, token: TaskToken[Any]) -> None:
        """A body returned (whatever its token's state): its storage slot frees."""
        if token._holds_slot:
            self._router.release_slot(token)

    def bridge_for(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        """The loop bridge that delivers this coordinator's completions to ``loop``."""
        return self._bridges.bridge_for(loop)

    # ------------------------------------------------------------------ admin
    def get_token(self, token_id: str) -> TaskToken[Any] | None:
        """The in-flight token with this id, or None (terminal tokens are not kept)."""
        _, _, seq = token_id.rpartition("#")
        token = self._tokens.get(int(seq)) if seq.isdigit() else None
        return token if token is not None and token.token_id == token_id else None

    def kill_token(self, token_id: str, reason: str = "killed by admin") -> bool:
        """Kill one in-flight token by id. Returns False if it is unknown or already terminal."""
        token = self.get_token(token_id)
        return token.kill(reason) if token is not None else False

    def kill_operation(self, operation_type: str, reason: str = "killed by admin") -> int:
        """Kill every in-flight token of an operation (running ones too); returns how many."""
        killed = sum(
            1
            for token in list(self._tokens.values())
            if token.operation_type == operation_type and token.kill(reason)
        )
        self._sweep_held()
        return killed

    def drain(self, operation_type: str | None = None) -> int:
        """Kill every token of ``operation_type`` (or of all operations) that has not started;
        returns how many."""
        killed = 0
        for token in list(self._tokens.values()):
            if token._tstate in NOT_STARTED and (
                operation_type is None or token.operation_type == operation_type
            ):
                killed += token._kill_unstarted("drained")
        self._sweep_held()  # drained while paused: not kept until resume()
        return killed

    def _sweep_held(self) -> None:
        """Drop held (paused) tokens that have ended: nothing keeps a dead token alive."""
        with self._lock:
            held = self._held
            if held:
                live = [t for t in held if not t.done()]
                if len(live) != len(held):
                    held.clear()
                    held.extend(live)
                self._held_sweep_at = max(_HELD_SWEEP_MIN, 2 * len(live))

    def pause(self) -> None:
        """Stop admission: calls still return tokens, which wait (``WAITING``) until
        :meth:`resume`. Tokens already admitted keep running."""
        with self._lock:
            self._paused = True
        _log.info("%s paused", self._name)

    def resume(self) -> None:
        """Restart admission and route every held token."""
        with self._lock:
            self._paused = False
        self._release_held()
        _log.info("%s resumed", self._name)

    def pause_operation(self, operation_type: str) -> None:
        """Stop admission of one operation."""
        with self._lock:
            self._paused_ops.add(operation_type)

    def resume_operation(self, operation_type: str) -> None:
        """Restart admission of one operation and route its held tokens."""
        with self._lock:
            self._paused_ops.discard(operation_type)
        self._release_held()

    def _release_held(self) -> None:
        with self._lock:
            if self._paused or not self._held:
                return
            ready: list[TaskToken[Any]] = []
            keep: list[TaskToken[Any]] = []
            for t in self._held:
                (keep if t.operation_type in self._paused_ops else ready).append(t)
            if not ready:
                return
            self._held.clear()
            self._held.extend(keep)
        # In submission order, each backend receiving its tokens in one batch.
        failed = self._router.route_many(t for t in ready if not t.done())
        for token, exc in failed:
            self._fail_before_start(token, exc)

    # ------------------------------------------------------------------ introspection
    def stats(self) -> CoordinatorStats:
        """A typed snapshot: per-core depth and busy workers (every executor of the core
        together, and per executor), counts by state and operation."""
        by_state = {state.value: 0 for state in TokenState}
        for token in list(self._tokens.values()):
            state = token._tstate
            if state not in TERMINAL:
                by_state[state.value] += 1
        totals = self._metrics.totals()
        for state, count in totals.items():
            by_state[state.value] = count
        cores = tuple(self._backends.core_stats(core) for core in range(1, self._config.cores + 1))
        submitted = sum(totals.values()) + len(self._tokens)
        return CoordinatorStats(
            running=self._running,
            paused=self._paused,
            paused_operations=tuple(sorted(self._paused_ops)),
            cores=cores,
            in_flight=len(self._tokens),
            submitted=submitted,
            by_state=by_state,
            operations=self._metrics.snapshot(),
            sticky_pins=self._router.sticky_pins,
            scheduler=self._scheduler_decisions(),
        )

    def _scheduler_decisions(self) -> dict[str, OperationDecision]:
        """The thread executor's decisions (one table shared by the coordinator's domains)."""
        for _name, _core, backend in self._backends.made():
            decisions = getattr(backend, "decisions", None)
            if not callable(decisions):
                continue
            try:
                table = dict(decisions())
            except Exception:  # a plugin's executor with another decisions()
                _log.debug("decisions() of %r failed", backend, exc_info=True)
                continue
            if all(isinstance(d, OperationDecision) for d in table.values()):
                return table
        return {}

    def in_flight(self) -> list[TaskToken[Any]]:
        """Every token not yet terminal."""
        return [t for t in list(self._tokens.values()) if not t.done()]

    def sticky_snapshot(self) -> Mapping[str, int]:
        """Live sticky pins: readable key → core. Empty once every token is terminal.

        Only a copy is taken under the routing lock; the keys' text (user ``__repr__``) is
        made outside it, from the in-flight tokens that hold each pin.
        """
        return self._router.sticky_snapshot(list(self._tokens.values()))

    def recent_executions(self, limit: int = 50) -> list[ExecutionRecord]:
        """The newest ``limit`` execution records, newest first."""
        return self._records.recent(limit)

    def dump_execution_history(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every kept execution record to a JSON file; returns its path.

        The file holds ``{"timestamp", "coordinator", "total_executions", "executions"}``.
        Without ``path`` it is ``execution_history_<unix time>.json`` in the working directory.
        """
        return self._records.dump(self._name, path)

    def storage_in_use(self, tier: StorageSpeed | str) -> int:
        """Slots of a storage tier taken now."""
        return self._storage.in_use(StorageSpeed.parse(tier))

    def storage_peak(self, tier: StorageSpeed | str) -> int:
        """Most slots of a storage tier ever taken at once."""
        return self._storage.peak(StorageSpeed.parse(tier))

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<OperationsCoordinator {self._name} {state} cores={self.cores}>"
