"""Core domains, their workers and bounded mailboxes (SPEC §4 layers 1, 3, 10)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from ._enums import TokenState

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("CoreDomain", "Worker")

_log = logging.getLogger("tokengate.routing")

_WAITING_ONLY = frozenset({TokenState.WAITING})
_ADMITTED = TokenState.ADMITTED


class Worker:
    """One worker thread of a core domain, with its own mailbox."""

    __slots__ = ("busy", "core_id", "index", "mailbox", "thread")

    def __init__(self, core_id: int, index: int) -> None:
        self.core_id = core_id
        self.index = index
        self.mailbox: SimpleQueue[TaskToken[Any] | None] = SimpleQueue()
        self.busy = False
        self.thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Tokens waiting in this worker's mailbox."""
        return self.mailbox.qsize()


class CoreDomain:
    """A core domain: ``workers_per_core`` workers, each with a mailbox bounded by
    ``capacity``, and a backlog for the domain's tokens when every mailbox is full.

    A full domain only makes its own tokens wait: routing for other domains never blocks.
    """

    __slots__ = ("_backlog_lock", "backend", "backlog", "capacity", "core_id", "cpu", "workers")

    def __init__(self, core_id: int, workers: int, capacity: int, cpu: int | None) -> None:
        self.core_id = core_id
        self.workers = [Worker(core_id, i) for i in range(workers)]
        self.capacity = capacity
        self.cpu = cpu
        self.backlog: deque[TaskToken[Any]] = deque()
        self._backlog_lock = threading.Lock()
        self.backend: Any = None  # the legacy process backend, until executors are wired

    def dispatch(self, token: TaskToken[Any], position: int) -> None:
        """Place a routed (``WAITING``) token.

        It goes to the position's worker when that worker is idle with an empty mailbox,
        otherwise to the least-loaded worker (load = queued tokens + 1 while running a body,
        so a child never queues behind a busy parent while a sibling idles), and to the
        domain's backlog when every mailbox is full.
        """
        workers = self.workers
        worker = workers[position % len(workers)]
        if worker.busy or worker.mailbox.qsize():
            best = worker.mailbox.qsize() + worker.busy
            for other in workers:
                load = other.mailbox.qsize() + other.busy
                if load < best:
                    best = load
                    worker = other
            if worker.mailbox.qsize() >= self.capacity:
                # the least-loaded worker's mailbox is full: the shortest one with room, or
                # the backlog when every mailbox is full (decided under the backlog lock,
                # which a worker also takes before it sleeps on an empty mailbox)
                capacity = self.capacity
                with self._backlog_lock:
                    roomy = [w for w in workers if w.mailbox.qsize() < capacity]
                    if not roomy:
                        self.backlog.append(token)
                        return
                worker = min(roomy, key=lambda w: w.mailbox.qsize())
        if token._move(_WAITING_ONLY, _ADMITTED):
            worker.mailbox.put(token)

    def requeue(self, token: TaskToken[Any]) -> None:
        """Put an already admitted token back (a storage slot freed for it)."""
        worker = min(self.workers, key=lambda w: w.mailbox.qsize() + w.busy)
        worker.mailbox.put(token)

    def refill(self, worker: Worker) -> None:
        """Move backlog tokens into ``worker``'s mailbox (called by the worker).

        A worker calls it after each token while the backlog is not empty, and always before
        it would sleep on an empty mailbox: the check is made under the backlog lock, which
        ``dispatch`` holds while it finds every mailbox full and appends, so a token can never
        be appended after the last worker looked.
        """
        mailbox = worker.mailbox
        with self._backlog_lock:
            room = self.capacity - mailbox.qsize()
            backlog = self.backlog
            while room > 0 and backlog:
                token = backlog.popleft()
                if token._move(_WAITING_ONLY, _ADMITTED):
                    mailbox.put(token)
                    room -= 1

    def depth(self) -> int:
        """Tokens queued in the domain's mailboxes and backlog."""
        return sum(w.mailbox.qsize() for w in self.workers) + len(self.backlog)

    def busy(self) -> int:
        """Workers running a body now."""
        return sum(1 for w in self.workers if w.busy)

    def drain_backlog(self) -> list[TaskToken[Any]]:
        """Remove and return every backlog token (used by stop)."""
        with self._backlog_lock:
            tokens = list(self.backlog)
            self.backlog.clear()
        return tokens
