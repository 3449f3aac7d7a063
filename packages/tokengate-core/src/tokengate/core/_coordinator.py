"""``OperationsCoordinator``: owns the core domains, routes tokens and runs them."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import ValidationError

from ._config import CoordinatorConfig, machine_cpus
from ._deadlines import DeadlineWatcher, bounded_wait, check_timeout
from ._enums import StorageSpeed, TokenState
from ._errors import ConfigurationError, CoordinatorNotRunningError, PluginError, RoutingError
from ._guard import CURRENT, push_running, remove_running
from ._metrics import (
    CoordinatorStats,
    CoreStats,
    ExecutionRecord,
    OperationMetrics,
    error_text,
)
from ._plan import OperationPlan
from ._plugins import plugin_manager
from ._routing import CoreDomain, Worker
from ._sticky import StickyRegistry
from ._storage import StorageGate
from ._token import (
    ADMITTED,
    COMPLETED,
    CREATED,
    EXECUTING,
    FAILED,
    NOT_STARTED,
    TERMINAL,
    WAITING,
    LoopBridge,
    TaskToken,
)

__all__ = ("OperationsCoordinator",)

T = TypeVar("T")

_log = logging.getLogger("tokengate.coordinator")
_worker_log = logging.getLogger("tokengate.worker")
_storage_log = logging.getLogger("tokengate.storage")
_perf = time.perf_counter

_TOKEN_IDS = itertools.count(1)
_COORDINATOR_IDS = itertools.count(1)
_ADMITTED_ONLY = frozenset({ADMITTED})
#: Held (paused) tokens that ended are dropped in amortised sweeps once the queue reaches this
#: size or twice what the last sweep kept.
_HELD_SWEEP_MIN = 1024
#: Longest wait handed to a backend's ``shutdown`` (select/epoll reject waits of about 25 days
#: and more); ``stop(timeout=math.inf)`` has already waited for every token by then.
_LONGEST_BACKEND_WAIT = 86_400.0


class OperationsCoordinator:
    """Owns a fixed set of core domains, routes every token and runs it.

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
        **settings: Any,
    ) -> None:
        """Make a coordinator (nothing runs until ``start()``).

        Args:
            cores: number of core domains (default: the CPUs this process may use).
            workers_per_core: worker threads per core domain.
            config: a complete configuration instead of keyword settings.
            **settings: any other :class:`CoordinatorConfig` field.

        Raises:
            ConfigurationError: a setting is invalid (the message names it).
        """
        if config is None:
            values: dict[str, Any] = {"workers_per_core": workers_per_core, **settings}
            if cores is not None:
                values["cores"] = cores
            try:
                config = CoordinatorConfig(**values)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']} "
                    f"(got {e.get('input')!r})"
                    for e in exc.errors()
                )
                raise ConfigurationError(
                    f"invalid OperationsCoordinator setting: {problems}"
                ) from None
        elif cores is not None or settings or workers_per_core != 4:
            raise ConfigurationError("pass either config= or keyword settings, not both")
        self._config = config
        self._name = f"tokengate-{next(_COORDINATOR_IDS)}"
        self._lock = threading.RLock()
        self._route_lock = threading.Lock()
        self._running = False
        # Set while a stop() runs: a second stop() and start() wait on it.
        self._stopping: threading.Event | None = None
        self._stopper: int | None = None
        self._paused = False
        self._paused_ops: set[str] = set()
        self._held: deque[TaskToken[Any]] = deque()
        self._held_sweep_at = _HELD_SWEEP_MIN
        self._tokens: dict[int, TaskToken[Any]] = {}
        self._sticky = StickyRegistry()
        self._domains: list[CoreDomain] = []
        self._counters: list[int] = []
        self._core_cache: dict[OperationPlan, tuple[int, ...]] = {}
        self._records: deque[tuple[Any, ...]] = deque(maxlen=config.history_size)
        self._metrics = OperationMetrics(config.operation_stats_limit)
        self._storage = StorageGate(config.storage_limits)
        self._deadlines = DeadlineWatcher(f"{self._name}-deadlines")
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge] = (
            weakref.WeakKeyDictionary()
        )
        # (weak loop, bridge) of the last lookup, one tuple so that threads never mix two
        # pairs; weak, so that the last loop that awaited a token is not kept alive either
        self._last_pair: tuple[weakref.ref[asyncio.AbstractEventLoop], LoopBridge] | None = None
        self._idle = threading.Event()
        self._watch_idle = False
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

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start the worker threads and become the current coordinator. Idempotent.

        If a ``stop()`` is in progress (in another thread), waits for it to return first, then
        starts afresh.

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
            "%s started: %d cores x %d workers",
            self._name,
            self._config.cores,
            self._config.workers_per_core,
        )
        return self

    def _start_locked(self) -> None:
        """Build the domains and start the worker threads (under the lifecycle lock)."""
        config = self._config
        self._domains = [
            CoreDomain(
                core,
                config.workers_per_core,
                config.mailbox_capacity,
                self.cpu_of(core) if config.pin_cpus else None,
            )
            for core in range(1, config.cores + 1)
        ]
        self._counters = [0] + [
            (core - 1) * config.workers_per_core for core in range(1, config.cores + 1)
        ]
        self._core_cache.clear()
        self._deadlines = DeadlineWatcher(f"{self._name}-deadlines")
        self._idle.clear()
        self._watch_idle = False
        for domain in self._domains:
            for worker in domain.workers:
                thread = threading.Thread(
                    target=self._worker_main,
                    args=(domain, worker),
                    name=f"{self._name}-core{domain.core_id}-w{worker.index}",
                    daemon=True,
                )
                worker.thread = thread
                thread.start()
        self._running = True

    def stop(
        self, *, wait: bool = True, cancel_pending: bool = False, timeout: float | None = None
    ) -> None:
        """Stop accepting calls, end every token and shut the workers down. Never hangs.

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
        if CURRENT.get() is self and threading.current_thread().name.startswith(self._name):
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
                if token._state in NOT_STARTED:
                    token.kill("coordinator stopped before the token started")
        if wait:
            self._wait_idle(deadline)
        leftovers = [t for t in list(self._tokens.values()) if not t.done()]
        abandoned = [t for t in leftovers if t._state is EXECUTING]
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
        for domain in self._domains:
            for token in domain.drain_backlog():
                token.kill("coordinator stopped")
            for worker in domain.workers:
                worker.mailbox.put(None)
        current = threading.current_thread()
        for domain in self._domains:
            for worker in domain.workers:
                thread = worker.thread
                if thread is None or thread is current:
                    continue
                thread.join(bounded_wait(max(0.05, deadline - time.monotonic())))
                if thread.is_alive():
                    _worker_log.warning(
                        "%s: worker thread %s did not return (a body that never returns); "
                        "it is abandoned as a daemon thread",
                        self._name,
                        thread.name,
                    )
        # After the workers: none of them can hand a token to a backend (or make one) any more.
        for domain in self._domains:
            if domain.backend is not None:
                try:
                    domain.backend.shutdown(
                        max(0.5, min(deadline - time.monotonic(), _LONGEST_BACKEND_WAIT))
                    )
                except Exception:
                    _log.exception("shutting down the backend of core %d failed", domain.core_id)
        # A call that passed the running check just before stop may have registered since.
        for token in list(self._tokens.values()):
            token.kill("coordinator stopped")
        plugin_manager().coordinator_stopped(self)
        _log.info("%s stopped", self._name)

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
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    # ------------------------------------------------------------------ the hot path
    def _submit(
        self, plan: OperationPlan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskToken[Any]:
        if not self._running:
            raise CoordinatorNotRunningError(
                f"{plan.operation_type} was called but {self._name} is not running; start it first"
            )
        token: TaskToken[Any] = TaskToken(plan, args, kwargs, self, next(_TOKEN_IDS))
        try:
            if plan.broken is not None:
                raise plan.broken
            if plan.ext_create or plan.on_created is not None:
                self._run_create_hooks(token, plan)
            if token._state is not CREATED:  # an extension ended it already
                return token
            token._state = WAITING  # not yet visible to any other thread: no gate needed
            self._tokens[token.seq] = token
            if self._stopped_meanwhile():  # stop() began after the check above
                token.kill("coordinator stopped before the token was routed")
                return token
            if plan.timeout is not None:
                self._deadlines.add(token, plan.timeout)
            paused = self._paused or (self._paused_ops and plan.operation_type in self._paused_ops)
            if paused and self._hold(token):
                return token
            self._route(token)
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
        token._finish(FAILED, exc=error)

    def _hold(self, token: TaskToken[Any]) -> bool:
        with self._lock:
            if self._paused or token.operation_type in self._paused_ops:
                if len(self._held) >= self._held_sweep_at:
                    self._sweep_held()  # tokens killed one by one while held
                self._held.append(token)
                return True
        return False

    def _candidate(self, cores: tuple[int, ...]) -> int:
        counters = self._counters
        best = cores[0]
        low = counters[best]
        for core in cores:
            if counters[core] < low:
                best = core
                low = counters[core]
        return best

    def _cores_for(self, plan: OperationPlan) -> tuple[int, ...]:
        cores = self._core_cache.get(plan)
        if cores is None:
            total = self._config.cores
            try:
                chosen = tuple(plan.policy.cores_for(plan.weight, total))
            except Exception as exc:
                raise PluginError(
                    f"routing policy {plan.policy!r} failed for {plan.operation_type}: {exc!r}"
                ) from exc
            if not chosen or any(not isinstance(c, int) or not 1 <= c <= total for c in chosen):
                raise PluginError(
                    f"routing policy {plan.policy!r} gave cores {chosen!r} for "
                    f"{plan.weight.value} on {total} cores; expected a non-empty subset of "
                    f"1..{total}"
                )
            cores = self._core_cache[plan] = chosen
        return cores

    def _route(self, token: TaskToken[Any]) -> None:
        plan = token._plan
        cores = self._cores_for(plan)
        core: int | None = None
        if plan.ext_route:
            candidate = self._candidate(cores)
            for ext in plan.ext_route:
                try:
                    core = ext.route(token, candidate)
                except Exception as exc:
                    raise PluginError(
                        f"extension {ext!r} failed routing {token.token_id}: {exc!r}"
                    ) from exc
                if core is not None:
                    break
        if core is None and plan.chooses_cores:
            try:
                core = plan.policy.choose_core(token, self._candidate(cores), self._config.cores)
            except Exception as exc:
                raise PluginError(
                    f"routing policy {plan.policy!r} failed for {token.token_id}: {exc!r}"
                ) from exc
        key: Hashable = None
        pin: Hashable = None
        if core is None:
            if plan.key_fn is not None:
                # Outside the routing lock: fingerprinting and hashing run user code
                # (__hash__, __eq__), which must not stall other threads' routing. The pin is
                # what release needs, fixed now: a body that mutates its argument later
                # cannot strand it.
                fingerprint = plan.key_fn(token.args, token.kwargs)
                key = (plan.anchor, fingerprint)
                pin = (plan.anchor, hash(fingerprint))
        elif not isinstance(core, int) or not 1 <= core <= self._config.cores:
            raise RoutingError(
                f"a plugin routed token {token.token_id} to core {core!r}; this coordinator "
                f"has cores 1..{self._config.cores}"
            )
        counters = self._counters
        with self._route_lock:
            if core is None:
                core = self._candidate(cores)
                if pin is not None:
                    token._pin = pin  # before the hold: releasing a pin never taken is a no-op
                    core = self._sticky.acquire(pin, core)
                    token.sticky_key = key
            position = counters[core]
            counters[core] = position + 1
        if pin is not None and token._state in TERMINAL:
            # killed or timed out while being routed: its terminal move may have missed the pin
            self._release_sticky(token)
            return
        token.core_id = core
        self._domains[core - 1].dispatch(token, position)

    def _release_sticky(self, token: TaskToken[Any]) -> None:
        """Release the token's pin exactly once (routing and the terminal move may race)."""
        with self._route_lock:
            self._sticky.release_token(token)

    def _worker_main(self, domain: CoreDomain, worker: Worker) -> None:
        CURRENT.set(self)
        if domain.cpu is not None:
            try:
                os.sched_setaffinity(0, {domain.cpu})
            except (AttributeError, OSError) as exc:
                _worker_log.warning("pinning %s to CPU %s failed: %r", worker, domain.cpu, exc)
        get = worker.mailbox.get
        qsize = worker.mailbox.qsize
        backlog = domain.backlog
        execute = self._execute
        while True:
            token = get()
            if token is None:
                return
            worker.busy = True
            try:
                execute(token, worker, domain)
            except BaseException:
                _worker_log.exception("worker %s failed on %s", worker.index, token.token_id)
            worker.busy = False
            if backlog or not qsize():
                domain.refill(worker)

    def _execute(self, token: TaskToken[Any], worker: Worker, domain: CoreDomain) -> None:
        plan = token._plan
        if plan.plain:
            if token._move(_ADMITTED_ONLY, EXECUTING):
                token.worker_id = worker.index
                _run_body(token, plan)
            return
        if plan.storage is not None and not token._holds_slot:
            if token.done():
                return
            if not self._storage.try_acquire(plan.storage, token):
                _storage_log.debug("token %s waits for a %s slot", token.token_id, plan.storage)
                return
            token._holds_slot = True
        if plan.process:  # stays ADMITTED (not started) until the backend starts the body
            token.worker_id = worker.index
            self._process_backend(domain).submit(token)
            return
        if not token._move(_ADMITTED_ONLY, EXECUTING):
            if token._holds_slot:
                self._release_slot(token)
            return
        token.worker_id = worker.index
        states: list[object] = []
        try:
            try:
                for ext in plan.ext_around:
                    states.append(ext.before_execute(token))
                if plan.on_started is not None:
                    plan.on_started(token=token)
            except BaseException as exc:
                token._finish(
                    FAILED,
                    exc=PluginError(f"a plugin failed before {token.token_id} ran: {exc!r}"),
                )
            else:
                _run_body(token, plan)
        finally:
            # Whatever the terminal move raised (a done-callback's SystemExit): the extensions
            # leave this thread (no conductor domain stays active on it) and the slot frees.
            for ext, state in zip(plan.ext_around, states, strict=False):
                try:
                    ext.after_execute(token, state)
                except BaseException:  # every extension must leave the thread
                    _log.exception("after_execute of %r failed for %s", ext, token.token_id)
            if token._holds_slot:
                self._release_slot(token)

    def _release_slot(self, token: TaskToken[Any]) -> None:
        plan = token._plan
        if plan.storage is None:
            return
        with token._lock:  # a kill may race the worker here: exactly one of them releases
            if not token._holds_slot:
                return
            token._holds_slot = False
        nxt = self._storage.release(plan.storage)
        if nxt is not None:
            nxt._holds_slot = True
            core = nxt.core_id or 1
            self._domains[core - 1].requeue(nxt)

    def _process_backend(self, domain: CoreDomain) -> Any:
        backend = domain.backend
        if backend is None:
            with self._lock:
                backend = domain.backend
                if backend is None:
                    from ._process import ProcessBackend

                    backend = domain.backend = ProcessBackend(
                        self, domain.core_id, domain.cpu, self._config.process_start_method
                    )
        return backend

    def _on_terminal(self, token: TaskToken[Any]) -> None:
        """The release steps of a terminal move (run exactly once per token).

        Re-entrant: when an asynchronous exception (``KeyboardInterrupt``) interrupts it, the
        token calls it again. Forgetting the token and releasing its pin are idempotent; the
        other steps are marked in ``token._release_step`` before they run, so none runs twice.
        A ``BaseException`` that is not an ``Exception`` from a hook does not skip the later
        steps: it is re-raised after them.
        """
        plan = token._plan
        self._tokens.pop(token.seq, None)
        if token._pin is not None:
            self._release_sticky(token)
        interrupt: BaseException | None = None
        if token._release_step < 1:
            token._release_step = 1
            if not plan.plain_terminal:
                for ext in plan.ext_terminal:
                    try:
                        ext.on_terminal(token)
                    except BaseException as exc:  # every step must run
                        _log.exception("on_terminal of %r failed for %s", ext, token.token_id)
                        if interrupt is None and not isinstance(exc, Exception):
                            interrupt = exc
        if token._release_step < 2:
            token._release_step = 2
            if token._holds_slot and token.started_at is None:
                self._release_slot(token)
        if token._release_step < 3:
            token._release_step = 3
            try:
                self._record(token, plan)
            except Exception:
                _log.exception("recording the execution of %s failed", token.token_id)
        if token._release_step < 4:
            token._release_step = 4
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

    def _record(self, token: TaskToken[Any], plan: OperationPlan) -> None:
        state = token._state
        started = token.started_at
        finished = token.finished_at or 0.0
        duration = None if started is None else finished - started
        self._metrics.record(plan.operation_type, state, duration)
        if self._records.maxlen:
            exc = token._exc
            self._records.append(
                (
                    token.seq,
                    plan.operation_type,
                    state,
                    duration,
                    finished - token.created_at,
                    token.core_id,
                    token.worker_id,
                    None if exc is None else error_text(exc),
                )
            )

    def _bridge_for(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        last = self._last_pair
        if last is not None and last[0]() is loop:
            return last[1]
        bridge = self._bridges.get(loop)
        if bridge is None:
            with self._lock:
                bridge = self._bridges.get(loop)
                if bridge is None:
                    bridge = self._bridges[loop] = LoopBridge(loop)
        self._last_pair = (weakref.ref(loop), bridge)
        return bridge

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
            if token._state in NOT_STARTED and (
                operation_type is None or token.operation_type == operation_type
            ):
                killed += token.kill("drained")
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
        for token in ready:
            if token.done():
                continue
            try:
                self._route(token)
            except BaseException as exc:
                self._fail_before_start(token, exc)

    # ------------------------------------------------------------------ introspection
    def stats(self) -> CoordinatorStats:
        """A typed snapshot: per-core depth and busy workers, counts by state and operation."""
        by_state = {state.value: 0 for state in TokenState}
        for token in list(self._tokens.values()):
            state = token._state
            if state not in TERMINAL:
                by_state[state.value] += 1
        for state, count in self._metrics.totals().items():
            by_state[state.value] = count
        cores = tuple(
            CoreStats(
                domain.core_id,
                len(domain.workers),
                domain.busy(),
                domain.depth(),
                len(domain.backlog),
                None if domain.backend is None else domain.backend.alive,
            )
            for domain in self._domains
        )
        submitted = sum(self._metrics.totals().values()) + len(self._tokens)
        return CoordinatorStats(
            running=self._running,
            paused=self._paused,
            paused_operations=tuple(sorted(self._paused_ops)),
            cores=cores,
            in_flight=len(self._tokens),
            submitted=submitted,
            by_state=by_state,
            operations=self._metrics.snapshot(),
            sticky_pins=len(self._sticky),
        )

    def in_flight(self) -> list[TaskToken[Any]]:
        """Every token not yet terminal."""
        return [t for t in list(self._tokens.values()) if not t.done()]

    def sticky_snapshot(self) -> Mapping[str, int]:
        """Live sticky pins: readable key → core. Empty once every token is terminal.

        Only a copy is taken under the routing lock; the keys' text (user ``__repr__``) is
        made outside it, from the in-flight tokens that hold each pin.
        """
        with self._route_lock:
            entries = self._sticky.entries()
        if not entries:
            return {}
        keys: dict[Hashable, Hashable] = {}
        wanted = {pin for pin, _ in entries}
        for token in list(self._tokens.values()):
            pin = token._pin
            if pin is not None and pin in wanted and pin not in keys:
                keys[pin] = token.sticky_key
        snapshot: dict[str, int] = {}
        for pin, core in entries:
            key = keys.get(pin)
            if key is None:  # its last holder is ending right now
                if not isinstance(pin, tuple) or len(pin) != 2:
                    continue
                key = (pin[0], f"#{pin[1] & 0xFFFFFFFFFFFF:x}")
            snapshot[StickyRegistry.describe(key)] = core
        return snapshot

    def recent_executions(self, limit: int = 50) -> list[ExecutionRecord]:
        """The newest ``limit`` execution records, newest first."""
        rows = list(self._records)[-limit:] if limit > 0 else []
        return [
            ExecutionRecord(
                token_id=f"{row[1]}#{row[0]}",
                operation_type=row[1],
                state=row[2].value,
                success=row[2] is COMPLETED,
                duration=row[3],
                latency=row[4],
                core_id=row[5],
                worker_id=row[6],
                error=row[7],
            )
            for row in reversed(rows)
        ]

    def dump_execution_history(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every kept execution record to a JSON file; returns its path.

        The file holds ``{"timestamp", "coordinator", "total_executions", "executions"}``.
        Without ``path`` it is ``execution_history_<unix time>.json`` in the working directory.
        """
        target = (
            Path(path) if path is not None else Path(f"execution_history_{int(time.time())}.json")
        )
        records = self.recent_executions(len(self._records))
        payload = {
            "timestamp": time.time(),
            "coordinator": self._name,
            "total_executions": len(records),
            "executions": [r.as_dict() for r in records],
        }
        target.write_text(json.dumps(payload, indent=2))
        return target

    def storage_in_use(self, tier: StorageSpeed | str) -> int:
        """Slots of a storage tier taken now."""
        return self._storage.in_use(StorageSpeed.parse(tier))

    def storage_peak(self, tier: StorageSpeed | str) -> int:
        """Most slots of a storage tier ever taken at once."""
        return self._storage.peak(StorageSpeed.parse(tier))

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<OperationsCoordinator {self._name} {state} cores={self.cores}>"


def _run_body(token: TaskToken[Any], plan: OperationPlan) -> None:
    """Run an ``EXECUTING`` token's body on this thread and make its terminal move."""
    try:
        result = plan.func(*token.args, **token.kwargs)
    except BaseException as exc:
        token._finish(FAILED, exc=exc)
    else:
        token._finish(COMPLETED, result)
