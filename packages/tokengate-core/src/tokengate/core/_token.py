"""``TaskToken``: the awaitable handle of one call, and its single state gate."""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._blocking import blocking
from ._enums import TokenState, Weight
from ._errors import PluginError, TaskKilledError, TokenCancelledError, TokenTimeoutError
from ._timeouts import check_timeout
from ._trio import in_trio, wait_in_trio

if TYPE_CHECKING:
    from ._protocols import CompletionBridge, CoordinatorView, PlanView, TokenOwner

__all__ = ("TaskToken", "finish_many")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_log = logging.getLogger("tokengate.coordinator")
_perf = time.perf_counter
_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_allocate_lock = _thread.allocate_lock

CREATED = TokenState.CREATED
WAITING = TokenState.WAITING
ADMITTED = TokenState.ADMITTED
EXECUTING = TokenState.EXECUTING
COMPLETED = TokenState.COMPLETED
FAILED = TokenState.FAILED
KILLED = TokenState.KILLED
TIMEOUT = TokenState.TIMEOUT

TERMINAL = frozenset({COMPLETED, FAILED, KILLED, TIMEOUT})
#: Seconds a timed-out wait still gives a token that ended meanwhile to finish its release steps.
_SETTLE_GRACE = 0.5
NOT_STARTED = frozenset({CREATED, WAITING, ADMITTED})
_ADMITTED_ONLY = frozenset({ADMITTED})

DoneCallback = Callable[["TaskToken[Any]"], object]

# State-gate locks are striped: a token takes one of these by its sequence number instead of
# allocating its own. Safe because no code path holds a token's lock while taking another's.
_LOCK_STRIPES = 256
_NO_KEY: Any = object()  # ``_sticky_key`` of a token not routed by a sticky key
_LOCKS = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

# What ``concurrent.futures.wait`` / ``as_completed`` read of a future's ``_state``.
_CF_PENDING = "PENDING"
_CF_RUNNING = "RUNNING"
_CF_FINISHED = "FINISHED"


class _Backend(Protocol):
    """The executor backend a token was handed to (an ``ExecutorBackend``)."""

    def submit(self, tokens: Sequence[TaskToken[Any]], /) -> None: ...

    def cancel(self, token: TaskToken[Any], /) -> None: ...


class _FuturesWaiter(Protocol):
    """A ``concurrent.futures`` waiter (``wait`` / ``as_completed`` install them)."""

    def add_result(self, future: Any, /) -> None: ...

    def add_exception(self, future: Any, /) -> None: ...


class _FuturesLink:
    """What ``concurrent.futures.wait`` and ``as_completed`` need of a future: a condition
    (its own reentrant lock: ``wait`` takes the conditions of all its futures at once) and a
    list of waiters. Made on first use only, so tokens nobody waits for that way pay nothing."""

    __slots__ = ("condition", "waiters")

    def __init__(self) -> None:
        self.condition = threading.Condition(threading.RLock())
        self.waiters: list[_FuturesWaiter] = []


#: ``_release_step`` once the coordinator's release steps have all run.
_RELEASED = 1_000


class TaskToken(Generic[R_co]):
    """The awaitable result of one call of a ``@task_token_guard`` function.

    A token is returned at once by the call; the function runs later on a worker of the
    coordinator. Reach the result with ``await token`` (from asyncio, trio, or anyio on either
    backend, any number of awaiters; ``asyncio.gather`` accepts tokens directly and cheaply;
    cancelling an awaiting task stops its wait and leaves the token alone), or block with
    ``token.get(timeout)`` / ``token.result(timeout)``. Tokens do not proxy their results
    through operators.

    Every state change goes through one gate under the token's lock; the terminal move happens
    exactly once, and its release steps (sticky pin, conductor domain, execution record,
    waiters) run exactly once.
    """

    __slots__ = (
        "__weakref__",
        "_asyncio_future_blocking",
        "_backend",
        "_callbacks",
        "_cb_bridge",
        "_cb_ctx",
        "_cb_fn",
        "_cf",
        "_cf_finished",
        "_core_id",
        "_exc",
        "_exc_tb",
        "_ext",
        "_finisher",
        "_gate",
        "_holds_slot",
        "_kill_reason",
        "_lock",
        "_next_callback",
        "_owner",
        "_pin",
        "_plan",
        "_release_step",
        "_result",
        "_seed",
        "_settled",
        "_sticky_key",
        "_tstate",
        "_worker_id",
        "args",
        "created_at",
        "finished_at",
        "kwargs",
        "seq",
        "started_at",
    )

    _cancel_message: str | None = None

    def __init__(
        self,
        plan: PlanView,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        owner: TokenOwner[TaskToken[Any]],
        seq: int,
    ) -> None:
        self._plan = plan
        self.args = args
        self.kwargs = kwargs
        self._owner = owner
        self.seq = seq
        self._tstate = CREATED
        self._lock = _LOCKS[seq % _LOCK_STRIPES]
        self._result: Any = None
        self._exc: BaseException | None = None
        self._exc_tb: TracebackType | None = None
        # The first done-callback is kept in three slots (almost every token has exactly one:
        # ``await`` or ``gather``), the others in a list: a token then adds no container
        # object of its own for the cyclic garbage collector to count and traverse.
        self._cb_fn: DoneCallback | None = None
        self._cb_bridge: CompletionBridge[TaskToken[Any]] | None = None
        self._cb_ctx: Any = None
        self._callbacks: (
            list[tuple[DoneCallback, CompletionBridge[TaskToken[Any]] | None, Any]] | None
        ) = None
        self._gate: _thread.LockType | None = None
        self._pin: Hashable = None
        self._release_step = 0
        self._next_callback = 0
        self._kill_reason: str | None = None
        self._asyncio_future_blocking = False
        self._holds_slot = False
        self._settled = False
        self._finisher: int | None = None
        self._core_id: int | None = None
        self._worker_id: int | None = None
        self._seed: str | None = None
        self._sticky_key: Hashable = _NO_KEY  # the fingerprint, once routed by a sticky key
        self._ext: dict[object, object] | None = None
        self._backend: _Backend | None = None
        self._cf: _FuturesLink | None = None
        # What concurrent.futures reads as FINISHED: set with the waiters' notification under
        # the link's condition (or at the settle when no link exists yet), so that a waiter
        # installed between the settle and that notification is counted pending, then told.
        self._cf_finished = False
        self.created_at = _perf()
        self.started_at: float | None = None
        self.finished_at: float | None = None

    # ------------------------------------------------------------------ identity
    @property
    def token_id(self) -> str:
        """Unique in the process: ``<operation_type>#<sequence number>``."""
        return f"{self._plan.operation_type}#{self.seq}"

    @property
    def operation_type(self) -> str:
        """The operation this token belongs to (``operation_type`` or the function's qualname)."""
        return self._plan.operation_type

    @property
    def weight(self) -> Weight:
        """The routing class decided for the operation at decoration time."""
        return self._plan.weight

    @property
    def state(self) -> TokenState:
        """The current state (a snapshot: it may change right after you read it).

        The state turns terminal at the terminal move, just before its release steps run;
        :meth:`done`, ``get`` and ``await`` report the end only once those steps are complete.
        """
        return self._tstate

    @property
    def coordinator(self) -> CoordinatorView:
        """The coordinator that owns this token (an ``OperationsCoordinator``)."""
        return self._owner

    @property
    def core_id(self) -> int | None:
        """The core domain the token was routed to (None until routed). Read-only."""
        return self._core_id

    @property
    def worker_id(self) -> int | None:
        """The executor's worker that ran the body, when the executor numbers its workers
        (None until then, and for executors that do not). Read-only."""
        return self._worker_id

    @property
    def conductor_seed(self) -> str | None:
        """The seed of the conductor domain the token belongs to, or None. Read-only."""
        return self._seed

    @property
    def sticky_key(self) -> Hashable:
        """``(sticky anchor, argument fingerprint)`` of a token routed by a sticky key (None
        for free routing, conductor members and plugin routes). Read-only."""
        fingerprint = self._sticky_key
        if fingerprint is _NO_KEY:
            return None
        return (self._plan.anchor, fingerprint)

    @property
    def process_pool(self) -> bool:
        """True when the operation runs on the process executor (``executor: process``)."""
        return self._plan.process

    @property
    def func(self) -> Callable[..., Any]:
        """The undecorated function this token calls."""
        return self._plan.func

    @property
    def tags(self) -> Mapping[str, object]:
        """Read-only tags: the validated tags plus the routing stamps.

        ``sticky_core`` is the core the token was routed to (once routed) and
        ``conductor_seed`` the seed of its conductor domain (domain members only).
        """
        stamped = dict(self._plan.public_tags)
        if self._core_id is not None:
            stamped["sticky_core"] = self._core_id
        if self._seed is not None:
            stamped["conductor_seed"] = self._seed
        return MappingProxyType(stamped)

    @property
    def kill_reason(self) -> str | None:
        """Why the token was killed or timed out, or None."""
        return self._kill_reason

    @property
    def duration(self) -> float | None:
        """Seconds the body ran (start to terminal move), or None if it never started."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def __repr__(self) -> str:
        return f"<TaskToken {self.token_id} {self._tstate.value} core={self._core_id}>"

    # ------------------------------------------------------------------ the state gate
    def _move(self, allowed: frozenset[TokenState], new: TokenState) -> bool:
        """Move to a non-terminal state if the current state is in ``allowed``."""
        with self._lock:
            if self._tstate not in allowed:
                return False
            self._tstate = new
            if new is EXECUTING:  # stamped inside the gate: a kill cannot slip in between
                self.started_at = _perf()
        return True

    def _finish(
        self,
        state: TokenState,
        result: Any = None,
        exc: BaseException | None = None,
        reason: str | None = None,
        unstarted_only: bool = False,
        batch: list[TaskToken[Any]] | None = None,
    ) -> bool:
        """The one terminal move. Returns False (and changes nothing) if already terminal, or,
        with ``unstarted_only``, if the body has started (``EXECUTING``).

        With ``batch`` (:func:`finish_many`), a committed token is appended there instead of
        completed here: the batch completes its tokens together.

        Atomic with respect to asynchronous exceptions (a ``KeyboardInterrupt`` from Ctrl-C,
        ``PyThreadState_SetAsyncExc``): the move is committed by plain stores under the lock,
        with no call between the state write and the ``try``/``finally`` that completes it, so
        an interrupt landing anywhere after the commit still gets the release steps run and
        the waiters released before it propagates. An interrupt before the commit changes
        nothing.
        """
        now = _perf()
        ident = _get_ident()
        tb = None if exc is None else exc.__traceback__
        committed = False
        try:
            with self._lock:
                if self._tstate in TERMINAL or (unstarted_only and self._tstate is EXECUTING):
                    return False
                self._result = result
                self._exc = exc
                self._exc_tb = tb
                self._kill_reason = reason
                self.finished_at = now
                self._finisher = ident
                # From the state write to the end of the block: plain stores, no call, so no
                # asynchronous exception can land between the move and ``committed``.
                self._tstate = state
                committed = True
        finally:
            if committed and batch is not None:
                batch.append(self)  # an interrupt before this: finish_many completes it
            elif committed:
                # Entering _complete is itself a point where an interrupt can land: a second
                # attempt resumes where the first stopped (every step is resumable).
                try:
                    interrupt = self._complete()
                except BaseException as exc:
                    interrupt = exc
                    try:
                        self._complete()
                    except BaseException:
                        self._complete()
                if interrupt is not None:
                    raise interrupt
        return True

    def _complete(self) -> BaseException | None:
        """Run (or resume) the release steps, settle and wake the waiters, then the
        done-callbacks; returns the first ``BaseException`` that is not an ``Exception``
        (``SystemExit`` from a callback, an asynchronous ``KeyboardInterrupt``) after
        everything has run, for the caller to re-raise."""
        interrupt: BaseException | None = None
        while True:
            try:
                self._release_and_settle()
                return interrupt
            except BaseException as exc:
                if interrupt is None:
                    interrupt = exc

    def _release_and_settle(self) -> None:
        """Resumable: each step records its progress on the token before or as it runs."""
        if self._release_step < _RELEASED:
            try:
                self._owner.token_ended(self)
            except Exception:
                _log.exception("release steps of token %s failed", self.token_id)
            self._release_step = _RELEASED
        if not self._settled:
            # Waiters are released only after the release steps: whoever sees the token done
            # also sees its sticky pin released, its record written and the token table
            # updated. Plain stores and one C call under the lock: nothing can interrupt it
            # half-way.
            with self._lock:
                self._settled = True
                gate = self._gate
                self._gate = None
                if gate is not None:
                    gate.release()
                if self._cf is None:
                    self._cf_finished = True
        link = self._cf
        if link is not None and not self._cf_finished:
            # concurrent.futures.wait / as_completed; resumed here after an interrupt
            self._notify_futures_waiters(link)
        # Frozen since the token settled (later registrations run at once); delivered by
        # position (0: the first callback, 1..: the list) so that an interrupted delivery
        # resumes with the next callback. Between marking a position and its ``try`` there
        # are only plain loads and stores (no call), where no asynchronous exception lands.
        while True:
            index = self._next_callback
            if index == 0:
                fn = self._cb_fn
                bridge = self._cb_bridge
                ctx = self._cb_ctx
            else:
                callbacks = self._callbacks
                if callbacks is None or index > len(callbacks):
                    break
                fn, bridge, ctx = callbacks[index - 1]
            self._next_callback = index + 1
            if fn is None:
                continue
            try:
                if bridge is not None:
                    bridge.push(fn, self, ctx)
                else:
                    fn(self)
            except Exception:
                _log.exception("a done-callback of token %s raised", self.token_id)
            except BaseException as exc:
                _log.error(
                    "a done-callback of token %s raised %r; the remaining callbacks still run",
                    self.token_id,
                    exc,
                )
                raise
        self._cb_fn = self._cb_bridge = self._cb_ctx = None
        self._callbacks = None

    def _notify_futures_waiters(self, link: _FuturesLink) -> None:
        with link.condition:
            self._cf_finished = True
            waiters = list(link.waiters)
            failed = self._exc is not None
            for waiter in waiters:
                if failed:
                    waiter.add_exception(self)
                else:
                    waiter.add_result(self)
            link.condition.notify_all()

    # ------------------------------------------------------------------ the backend surface
    def set_running(self) -> bool:
        """Move an ``ADMITTED`` token to ``EXECUTING`` right before its body starts.

        Executors call this (or :func:`tokengate.core.run_token`, which calls it) once per
        token. The ``tokengate_token_started`` hooks run here; if one fails, the token ends
        ``FAILED`` with a ``PluginError``.

        Returns:
            False when the token was killed, drained or timed out while it waited (or a start
            hook failed): its body must never run.
        """
        if not self._move(_ADMITTED_ONLY, EXECUTING):
            return False
        on_started = self._plan.on_started
        if on_started is not None:
            try:
                on_started(token=self)
            except BaseException as exc:
                self._finish(
                    FAILED,
                    exc=PluginError(
                        f"a tokengate_token_started hook failed for {self.token_id}: {exc!r}"
                    ),
                )
                return False
        return True

    def set_result(self, value: Any) -> bool:
        """Complete the token with the body's return value (executors only).

        Returns:
            False when a kill or timeout got there first; the late result is dropped.
        """
        return self._finish(COMPLETED, value)

    def set_exception(self, exc: BaseException) -> bool:
        """Fail the token with the body's exception (executors only).

        Returns:
            False when a kill or timeout got there first; the late outcome is dropped.
        """
        return self._finish(FAILED, exc=exc)

    def kill(self, reason: str = "killed") -> bool:
        """End the token ``KILLED``.

        A token not yet running never runs. A running one ends ``KILLED`` at once for its
        awaiters (they get ``TaskKilledError``); its body finishes on its own, its result is
        discarded and its worker counts as busy until it returns.

        Returns:
            False if the token was already terminal.
        """
        return self._finish(
            KILLED, exc=TaskKilledError(f"token {self.token_id} killed: {reason}"), reason=reason
        )

    def _kill_unstarted(self, reason: str) -> bool:
        """End the token ``KILLED`` only if its body has not started (one atomic check and
        move: a body cannot start in between). False if it started or already ended."""
        return self._finish(
            KILLED,
            exc=TaskKilledError(f"token {self.token_id} killed: {reason}"),
            reason=reason,
            unstarted_only=True,
        )

    def _timeout(self, limit: float) -> bool:
        return self._finish(
            TIMEOUT,
            exc=TokenTimeoutError(
                f"token {self.token_id} ({self.operation_type}) missed its {limit:g} s deadline"
            ),
            reason=f"timeout after {limit:g} s",
        )

    def remote_contexts(self) -> list[tuple[type[Any], object]]:
        """For executors that run the body in another process or machine: each extension's
        ``(extension class, value)``, to enter as ``extension_class.remote_scope(value)``
        around the body there. Call it in this process, before the call leaves; extensions
        whose ``remote_context`` gives None are left out. An extension that raises fails the
        token with a ``PluginError`` (and the list is then empty: do not run the body)."""
        contexts: list[tuple[type[Any], object]] = []
        plan = self._plan
        for ext in plan.ext_remote if self._ext is not None else plan.ext_remote_free:
            try:
                value = ext.remote_context(self)
            except Exception as exc:
                self._finish(
                    FAILED,
                    exc=PluginError(
                        f"extension {ext!r} failed preparing {self.token_id} for a remote "
                        f"executor: {exc!r}"
                    ),
                )
                return []
            if value is not None:
                contexts.append((type(ext), value))
        return contexts

    # ------------------------------------------------------------------ concurrent.futures
    @property
    def _state(self) -> str:
        """The token as ``concurrent.futures`` reads a future's state (``wait``,
        ``as_completed``): ``FINISHED`` once done and its futures-waiters were told (the two
        happen together under the waiters' condition, as a Future's do), else ``RUNNING``
        or ``PENDING``."""
        if self._cf_finished:
            return _CF_FINISHED
        return _CF_RUNNING if self._tstate is EXECUTING else _CF_PENDING

    def _futures_link(self) -> _FuturesLink:
        link = self._cf
        if link is None:
            with self._lock:  # settle reads it under this lock: made before or seen settled
                link = self._cf
                if link is None:
                    link = self._cf = _FuturesLink()
        return link

    @property
    def _condition(self) -> threading.Condition:
        """The condition ``concurrent.futures.wait`` / ``as_completed`` lock."""
        return self._futures_link().condition

    @property
    def _waiters(self) -> list[_FuturesWaiter]:
        """The waiters ``concurrent.futures.wait`` / ``as_completed`` install."""
        return self._futures_link().waiters

    def running(self) -> bool:
        """True while the body runs (``EXECUTING``)."""
        return self._tstate is EXECUTING and not self._settled

    # ------------------------------------------------------------------ blocking access
    def done(self) -> bool:
        """True once the token is terminal (COMPLETED, FAILED, KILLED or TIMEOUT) and the
        release steps of its terminal move have run."""
        return self._settled

    def _wait(self, timeout: float | None, stacklevel: int = 3) -> None:
        # Checked even when the token is done: a bad timeout is a bug in the caller's code.
        limit = None if timeout is None else check_timeout(timeout, f"token {self.token_id}")
        if self._settled:
            return
        if self._finisher == _get_ident():
            return  # a release step (plugin hook) of this very token asks for its outcome
        if _get_running_loop() is not None:
            if limit is None:
                raise RuntimeError(
                    f"token {self.token_id}: get() without a timeout would block the running "
                    "event loop; use 'await token' instead"
                )
            if limit > 0:  # shown once per call site (the default warnings filter)
                warnings.warn(
                    f"token {self.token_id}: get()/result() with a timeout blocks the running "
                    "event loop while it waits; use 'await token' (or asyncio.wait_for) instead",
                    RuntimeWarning,
                    stacklevel=stacklevel,
                )
        with self._lock:
            if self.done():  # settled meanwhile (a call, so the check above does not narrow it)
                return
            gate = self._gate
            if gate is None:
                gate = self._gate = _allocate_lock()
                gate.acquire()  # held until the terminal move settles the token
        # Each waiter takes the gate and hands it on at once, so one release wakes them all.
        # On an executor's worker the wait is managed: its slot goes to another worker meanwhile.
        with blocking():
            if limit is None:
                with gate:  # an interrupt cannot land between taking and handing it on
                    return
            if gate.acquire(True, limit):
                gate.release()
                return
        if self.done():  # it ended just as the wait timed out: not a timeout
            return
        state = self._tstate
        if state in TERMINAL:
            # It ended as the wait timed out and its release steps are running: they are
            # short, so give them a moment rather than report a finished token as waiting.
            with blocking():
                if gate.acquire(True, _SETTLE_GRACE):
                    gate.release()
                    return
            raise TimeoutError(
                f"token {self.token_id} ended {state.value} but its release steps were still "
                f"running after waiting {timeout} s (the token itself is unaffected)"
            )
        raise TimeoutError(
            f"token {self.token_id} is still {state.value} after waiting {timeout} s "
            "(the token itself is unaffected)"
        )

    def get(self, timeout: float | None = None) -> R_co:
        """Block until the token is terminal and return the function's result.

        Args:
            timeout: seconds to wait at most: ``None`` or ``math.inf`` waits as long as it
                takes, ``0`` only looks. Negative, NaN and finite values above
                ``threading.TIMEOUT_MAX`` are rejected.

        Raises:
            TimeoutError: the wait timed out (the token is unaffected).
            TaskKilledError: the token was killed.
            TokenTimeoutError: the token missed its ``timeout`` tag's deadline.
            RuntimeError: called without a timeout from inside a running event loop (with
                a timeout there it warns, ``RuntimeWarning``, once per call site: the wait
                blocks the loop).
            ValueError: ``timeout`` is negative, NaN or too large (``TypeError``: not a number).
            Exception: whatever the function raised.
        """
        self._wait(timeout)
        return self._outcome()

    def _outcome(self) -> R_co:
        exc = self._exc
        if exc is not None:
            # As asyncio.Future does: raise with the traceback stored at the terminal move, so
            # that re-raising never lengthens it.
            raise exc.with_traceback(self._exc_tb)
        result: R_co = self._result
        return result

    def result(self, timeout: float | None = None) -> R_co:
        """Alias of :meth:`get`."""
        self._wait(timeout)
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Block like :meth:`get` and return the token's exception, or None if it completed."""
        self._wait(timeout)
        return self._exc

    def add_done_callback(
        self, fn: Callable[[TaskToken[R_co]], object], *, context: Any = None
    ) -> None:
        """Call ``fn(token)`` once the token is terminal (at once if it already is).

        From a thread running an asyncio event loop, ``fn`` runs on that loop (as with
        ``asyncio.Future``); completions are delivered in batches, one loop wake-up per batch.
        From any other thread, ``fn`` runs in the thread that completes the token (as with
        ``concurrent.futures.Future``).
        """
        loop = _get_running_loop()
        bridge = self._owner.bridge_for(loop) if loop is not None else None
        with self._lock:
            if not self._settled:
                if self._cb_fn is None and self._callbacks is None:
                    self._cb_fn = fn
                    self._cb_bridge = bridge
                    self._cb_ctx = context
                elif self._callbacks is None:
                    self._callbacks = [(fn, bridge, context)]
                else:
                    self._callbacks.append((fn, bridge, context))
                return
        if bridge is not None:
            bridge.push(fn, self, context)
        else:
            fn(self)

    def remove_done_callback(self, fn: Callable[[TaskToken[R_co]], object]) -> int:
        """Remove every pending registration of ``fn``; return how many were removed."""
        with self._lock:
            if self._settled:  # being delivered: frozen
                return 0
            removed = 0
            if self._cb_fn is not None and self._cb_fn == fn:
                self._cb_fn = self._cb_bridge = self._cb_ctx = None
                removed = 1
            if self._callbacks:
                kept = [entry for entry in self._callbacks if entry[0] != fn]
                removed += len(self._callbacks) - len(kept)
                self._callbacks = kept
        return removed

    # ------------------------------------------------------------------ asyncio protocol
    def __await__(self) -> Generator[Any, None, R_co]:
        if not self._settled:
            if in_trio():  # a trio task (plain trio, anyio on trio, trio guest mode)
                yield from wait_in_trio(self)
                return self._outcome()
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            wake = _make_waker(waiter)
            self.add_done_callback(wake)
            try:
                yield from waiter
            except BaseException:
                # The awaiting task was cancelled (or its loop is closing): do not leave a
                # callback behind on a token that may live on.
                self.remove_done_callback(wake)
                raise
        return self._outcome()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop of the caller: a token belongs to whichever loop awaits it."""
        return asyncio.get_running_loop()

    def cancelled(self) -> bool:
        """Always False: a killed token ends ``KILLED`` with ``TaskKilledError``, not cancelled."""
        return False

    def cancel(self, msg: object = None) -> bool:
        """asyncio's cancellation: kills the token (``reason="cancelled"``).

        Its error is a :class:`~tokengate.core.TokenCancelledError`, a ``TaskKilledError`` that
        is also an ``asyncio.CancelledError``, as asyncio expects of a cancelled awaitable.
        """
        reason = "cancelled" if msg is None else f"cancelled: {msg}"
        return self._finish(
            KILLED,
            exc=TokenCancelledError(f"token {self.token_id} killed: {reason}"),
            reason=reason,
        )

    def _make_cancelled_error(self) -> asyncio.CancelledError:
        return asyncio.CancelledError()


def finish_many(outcomes: Sequence[tuple[TaskToken[Any], bool, Any]]) -> None:
    """Settle a batch of executor outcomes, ``(token, ok, value)`` each: ``value`` is the
    body's result when ``ok``, else its exception.

    The same as ``set_result`` / ``set_exception`` token by token (a token a kill or timeout
    ended first keeps that end), but the owner's release steps run once for the batch
    (:meth:`~._protocols.TokenOwner.tokens_ended`), then each token settles and its waiters
    and done-callbacks are told. An interrupt part-way (an asynchronous exception) finishes
    the rest of the batch one by one before it propagates: no token is left unsettled.
    """
    ident = _get_ident()
    committed: list[TaskToken[Any]] = []
    try:
        for token, ok, value in outcomes:
            if ok:
                token._finish(COMPLETED, value, batch=committed)
            else:
                token._finish(FAILED, exc=value, batch=committed)
        if not committed:
            return
        owner = committed[0]._owner
        if all(token._owner is owner for token in committed):
            owner.tokens_ended(committed)
        else:
            for token in committed:
                token._owner.tokens_ended([token])
        for token in committed:
            token._release_step = _RELEASED
        for token in committed:
            token._release_and_settle()
    except BaseException:
        # Finish what the batch did not: tokens it committed complete their (resumable)
        # steps; the others take the one-by-one terminal move (a no-op if already ended).
        for token, ok, value in outcomes:
            if token._tstate in TERMINAL:
                if token._finisher == ident:
                    token._complete()
            elif ok:
                token._finish(COMPLETED, value)
            else:
                token._finish(FAILED, exc=value)
        raise


def _make_waker(waiter: asyncio.Future[None]) -> Callable[[TaskToken[Any]], None]:
    # Weak: a completion queued for a loop that has gone away must not keep that loop alive
    # (the awaiting task holds the future while it waits).
    ref = weakref.ref(waiter)

    def wake(_token: TaskToken[Any]) -> None:
        future = ref()
        if future is not None and not future.done():
            future.set_result(None)

    return wake
