"""Managed blocking: a worker that waits for another token hands its slot back meanwhile.

The lowest layer of the core (it imports nothing of it). An executor installs a
:class:`BlockingHandler` on each of its worker threads with :func:`install`; the token's wait
path wraps its wait in :func:`blocking`, so a body that blocks on another token (``get``,
``result``, ``exception``, ``concurrent.futures.wait``) tells its executor, which may let a
compensating worker run meanwhile (as Dask's ``secede``/``rejoin`` or Java's
``ForkJoinPool.ManagedBlocker``). Outside such a worker :func:`blocking` costs one
thread-local read and does nothing.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Protocol, SupportsIndex

__all__ = ("BlockingHandler", "ManagedWaiters", "blocking", "current_handler", "install")


class BlockingHandler(Protocol):
    """What an executor does when one of its workers is about to block, and after.

    ``begin_blocking`` and ``end_blocking`` are called in pairs, from the blocking thread,
    possibly nested (a wait inside a wait); the executor counts the depth.
    """

    def begin_blocking(self) -> None:
        """The calling worker is about to wait; its slot may go to another worker."""

    def end_blocking(self) -> None:
        """The calling worker's wait is over; it runs its body again."""


class _Local(threading.local):
    handler: BlockingHandler | None = None


_LOCAL = _Local()


def install(handler: BlockingHandler | None) -> None:
    """Make ``handler`` the blocking handler of the calling thread (None removes it)."""
    _LOCAL.handler = handler


def current_handler() -> BlockingHandler | None:
    """The calling thread's blocking handler, or None outside managed workers."""
    return _LOCAL.handler


class _Section:
    """Context manager around one wait: tells the handler before and after."""

    __slots__ = ("_handler",)

    def __init__(self, handler: BlockingHandler) -> None:
        self._handler = handler

    def __enter__(self) -> None:
        self._handler.begin_blocking()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handler.end_blocking()


class _NoSection:
    """The context manager of threads without a handler: does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_SECTION = _NoSection()


def blocking() -> _Section | _NoSection:
    """``with blocking(): event.wait(timeout)`` — wrap a wait for another token.

    On an executor's worker thread the executor learns that the worker waits (and may run a
    compensating worker, within its configured bound); anywhere else it does nothing.
    """
    handler = _LOCAL.handler
    if handler is None:
        return _NO_SECTION
    return _Section(handler)


class ManagedWaiters(list[Any]):
    """A future's ``_waiters`` list that tells the blocking handler of the waiting thread.

    ``concurrent.futures.wait`` and ``as_completed`` append a waiter to each pending future's
    ``_waiters`` in the waiting thread before they block, and remove it in the same thread
    afterwards. A token whose ``_waiters`` is a ``ManagedWaiters`` turns that into
    ``begin_blocking`` / ``end_blocking`` on an executor's worker (nested per future; the
    handler acts on the outermost pair), and into nothing elsewhere.
    """

    __slots__ = ()

    def append(self, waiter: Any, /) -> None:
        """Add ``waiter``; on a managed worker, the thread is about to block."""
        handler = _LOCAL.handler
        if handler is not None:
            handler.begin_blocking()
        super().append(waiter)

    def remove(self, waiter: Any, /) -> None:
        """Remove ``waiter``; on a managed worker, that wait is over."""
        super().remove(waiter)
        handler = _LOCAL.handler
        if handler is not None:
            handler.end_blocking()

    def pop(self, index: SupportsIndex = -1, /) -> Any:
        """Not used by ``concurrent.futures``; refused so the begin/end pairs stay paired."""
        raise TypeError("ManagedWaiters entries are removed with remove(waiter)")
