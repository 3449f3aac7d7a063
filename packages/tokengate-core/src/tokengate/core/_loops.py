"""Loop bridges: token completions delivered to event loops, one wake-up per batch.

A :class:`LoopBridge` carries done-callbacks from worker threads to one event loop. An idle
loop is woken at once by the first completion (one ``call_soon_threadsafe``); completions
that arrive while that wake-up is still queued (the loop is busy) join the same batch. No
completion ever waits for a timer.

:class:`BridgeRegistry` finds the bridge of a loop for one coordinator and retains no loop:
bridges hold their loop by weak reference and the registry is keyed weakly, so a finished
``asyncio.run`` frees its loop and its bridge.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ("BridgeRegistry", "LoopBridge", "deferring", "flush_deferred")

_log = logging.getLogger("tokengate.coordinator")
_get_running_loop = asyncio._get_running_loop

DoneCallback = Callable[[Any], object]

#: Callbacks run per drain before the loop gets a turn for its other work.
MAX_BATCH = 4096


class _Deferred(threading.local):
    """Per thread: whether loop wake-ups are held back, and the bridges to wake later."""

    def __init__(self) -> None:
        self.on = False
        self.bridges: list[LoopBridge] = []
        self.since = 0.0


_DEFERRED = _Deferred()


def deferring(on: bool) -> None:
    """Hold back (True) or stop holding back (False) the loop wake-ups of this thread.

    An executor's runner thread that goes on to the next short body right away turns this on:
    its completions then wake each loop once, at :func:`flush_deferred`, instead of once per
    completion (each wake-up is a socket write that hands the GIL to the loop and back).
    Turning it off flushes.
    """
    state = _DEFERRED
    state.on = on
    if not on and state.bridges:
        flush_deferred()


def deferred_since() -> float | None:
    """When this thread first held back a wake-up since its last flush, or None."""
    state = _DEFERRED
    return state.since if state.bridges else None


def flush_deferred() -> None:
    """Wake every loop whose wake-up this thread holds back."""
    state = _DEFERRED
    bridges = state.bridges
    if bridges:
        state.bridges = []
        for bridge in bridges:
            bridge._wake()


class LoopBridge:
    """Delivers ``fn(token)`` callbacks to one event loop, from any thread.

    ``push`` appends ``fn``, the token and the context to a flat deque in one ``extend``
    (atomic, and no per-completion tuple is left for the garbage collector to count); the
    first push to a dormant bridge schedules one drain (``call_soon`` from the loop's own
    thread, ``call_soon_threadsafe`` from any other). The
    drain runs what is pending and goes dormant, so the next completion wakes the loop again
    at once; completions pushed while a drain is already scheduled ride along with it.
    """

    __slots__ = ("__weakref__", "_loop_ref", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref: Callable[[], asyncio.AbstractEventLoop | None] = _loop_reference(loop)
        self._pending: deque[Any] = deque()  # fn, token, ctx, fn, token, ctx, ...
        self._scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The bridge's loop, or None once it has been garbage-collected."""
        return self._loop_ref()

    @property
    def pending(self) -> int:
        """Callbacks waiting for the next drain."""
        return len(self._pending) // 3

    def push(self, fn: DoneCallback, token: Any, ctx: contextvars.Context | None) -> None:
        """Queue ``fn(token)`` (run in ``ctx`` when given) on the bridge's loop."""
        self._pending.extend((fn, token, ctx))
        if self._scheduled:
            return
        self._scheduled = True
        deferred = _DEFERRED
        if deferred.on:  # the wake-up is this thread's to make, at its next flush
            if not deferred.bridges:
                deferred.since = time.perf_counter()
            deferred.bridges.append(self)
            return
        self._wake()

    def _wake(self) -> None:
        loop = self._loop_ref()
        if loop is None:  # the loop is gone: nobody is left to notify
            self._pending.clear()
            return
        try:
            if _get_running_loop() is loop:
                loop.call_soon(self._drain)
            else:
                loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed
            self._scheduled = False
            self._pending.clear()

    def _drain(self) -> None:
        pending = self._pending
        pop = pending.popleft
        loop = self._loop_ref()
        for _ in range(min(len(pending) // 3, MAX_BATCH)):
            fn = pop()
            token = pop()
            ctx = pop()
            try:
                if ctx is None:
                    fn(token)
                else:
                    ctx.run(fn, token)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if loop is not None:
                    loop.call_exception_handler(
                        {
                            "message": f"exception in a done-callback of {token!r}",
                            "exception": exc,
                        }
                    )
        if pending and loop is not None:  # more than one batch: let the loop breathe first
            loop.call_soon(self._drain)
            return
        # Dormant first, then re-check: a push that appended after the last pop but saw the
        # flag still set did not schedule anything, so this drain must pick it up.
        self._scheduled = False
        if pending and loop is not None and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)


def _loop_reference(loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
    try:
        return weakref.ref(loop)
    except TypeError:  # a loop type without weak references: hold it, drop it when closed
        return lambda: None if loop.is_closed() else loop


class BridgeRegistry:
    """The loop bridges of one coordinator, one per event loop, retaining no loop."""

    __slots__ = ("_bridges", "_last", "_lock", "_strong")

    def __init__(self) -> None:
        self._bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge] = (
            weakref.WeakKeyDictionary()
        )
        # loops without weak references: id -> bridge, dropped once the loop is closed
        self._strong: dict[int, LoopBridge] = {}
        self._last: LoopBridge | None = None
        self._lock = threading.Lock()

    def bridge_for(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        """The bridge of ``loop`` (made on first use)."""
        last = self._last
        if last is not None and last._loop_ref() is loop:
            return last
        with self._lock:
            try:
                bridge = self._bridges.get(loop)
            except TypeError:
                bridge = self._strong_bridge(loop)
            else:
                if bridge is None:
                    bridge = self._bridges[loop] = LoopBridge(loop)
        self._last = bridge
        return bridge

    def _strong_bridge(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        for key in [k for k, b in self._strong.items() if b._loop_ref() is None]:
            del self._strong[key]
        bridge = self._strong.get(id(loop))
        if bridge is None or bridge._loop_ref() is not loop:
            bridge = self._strong[id(loop)] = LoopBridge(loop)
        return bridge

    def __len__(self) -> int:
        """Bridges whose loop is still alive."""
        return len(self._bridges) + sum(1 for b in self._strong.values() if b.loop is not None)
