"""The worker-pool thread executor: per-domain worker threads, each with a bounded mailbox.

One :class:`WorkerPoolExecutor` serves one core domain. A token goes to the worker its
domain's position counter points at when that worker is idle with an empty mailbox, else to
the least-loaded worker, and to the domain's backlog when every mailbox is full (backpressure
on that domain only). Each worker runs its tokens with :func:`~tokengate.core.run_token`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from ._enums import TokenState
from ._executors import ExecutorBackend, ExecutorDomain, ExecutorStats
from ._run import run_token

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("CoreDomain", "Worker", "WorkerPoolExecutor")

_log = logging.getLogger("tokengate.worker")
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
    """The workers of one core domain: ``workers`` mailboxes bounded by ``capacity``, and a
    backlog for the domain's tokens when every mailbox is full.

    A full domain only makes its own tokens wait: routing for other domains never blocks.
    """

    __slots__ = ("_backlog_lock", "backlog", "capacity", "core_id", "cpu", "workers")

    def __init__(self, core_id: int, workers: int, capacity: int, cpu: int | None) -> None:
        self.core_id = core_id
        self.workers = [Worker(core_id, i) for i in range(workers)]
        self.capacity = capacity
        self.cpu = cpu
        self.backlog: deque[TaskToken[Any]] = deque()
        self._backlog_lock = threading.Lock()

    def dispatch(self, token: TaskToken[Any], position: int) -> None:
        """Place an ``ADMITTED`` token.

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
        worker.mailbox.put(token)

    def refill(self, worker: Worker) -> None:
        """Move backlog tokens into ``worker``'s mailbox (called by the worker).

        A worker calls it after each token while the backlog is not empty, and always before
        it would sleep on an empty mailbox: the check is made under the backlog lock, which
        ``dispatch`` holds while it finds every mailbox full and appends, so a token can never
        be appended after the last worker looked. Tokens that ended meanwhile are dropped.
        """
        mailbox = worker.mailbox
        with self._backlog_lock:
            room = self.capacity - mailbox.qsize()
            backlog = self.backlog
            while room > 0 and backlog:
                token = backlog.popleft()
                if token.state is _ADMITTED:
                    mailbox.put(token)
                    room -= 1

    def depth(self) -> int:
        """Tokens queued in the domain's mailboxes and backlog."""
        return sum(w.mailbox.qsize() for w in self.workers) + len(self.backlog)

    def busy(self) -> int:
        """Workers running a body now."""
        return sum(1 for w in self.workers if w.busy)

    def drain_backlog(self) -> list[TaskToken[Any]]:
        """Remove and return every backlog token (used by shutdown)."""
        with self._backlog_lock:
            tokens = list(self.backlog)
            self.backlog.clear()
        return tokens


class WorkerPoolExecutor(ExecutorBackend):
    """The thread executor of one core domain: ``workers_per_core`` threads with mailboxes.

    Threads start when the backend is made (the coordinator makes it on the domain's first
    thread token) and are named ``<coordinator>-core<N>-w<i>``. The domain's position counter
    starts staggered at ``(core - 1) * workers_per_core``.
    """

    def __init__(self, domain: ExecutorDomain) -> None:
        """Start the domain's worker threads."""
        config = domain.config
        self.core_id = domain.core_id
        self.domain = CoreDomain(
            domain.core_id, config.workers_per_core, config.mailbox_capacity, domain.cpu
        )
        self._position = (domain.core_id - 1) * config.workers_per_core
        self._closed = False
        self._label = f"{domain.coordinator_name}-core{domain.core_id}"
        for worker in self.domain.workers:
            thread = threading.Thread(
                target=self._worker_main,
                args=(worker,),
                name=f"{self._label}-w{worker.index}",
                daemon=True,
            )
            worker.thread = thread
            thread.start()

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Place each token in a mailbox (or the backlog); returns at once."""
        dispatch = self.domain.dispatch
        for token in tokens:
            if self._closed:
                token.kill(f"the threads of core {self.core_id} shut down before it ran")
                continue
            position = self._position
            self._position = position + 1
            dispatch(token, position)

    def _worker_main(self, worker: Worker) -> None:
        domain = self.domain
        if domain.cpu is not None:
            try:
                os.sched_setaffinity(0, {domain.cpu})
            except (AttributeError, OSError) as exc:
                _log.warning("pinning %s to CPU %s failed: %r", worker, domain.cpu, exc)
        get = worker.mailbox.get
        qsize = worker.mailbox.qsize
        backlog = domain.backlog
        index = worker.index
        while True:
            token = get()
            if token is None:
                return
            worker.busy = True
            try:
                token._worker_id = index
                run_token(token)
            except BaseException:
                _log.exception("worker %s failed on %s", index, token.token_id)
            worker.busy = False
            if backlog or not qsize():
                domain.refill(worker)

    def shutdown(self, timeout: float) -> None:
        """Kill what is still queued, stop the threads; a thread whose body never returns is
        abandoned (a daemon) after about ``timeout`` seconds and reported."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._closed = True
        domain = self.domain
        for token in domain.drain_backlog():
            token.kill("coordinator stopped")
        for worker in domain.workers:
            worker.mailbox.put(None)
        current = threading.current_thread()
        for worker in domain.workers:
            thread = worker.thread
            if thread is None or thread is current:
                continue
            thread.join(max(0.05, deadline - time.monotonic()))
            if thread.is_alive():
                _log.warning(
                    "%s: worker thread %s did not return (a body that never returns); "
                    "it is abandoned as a daemon thread",
                    self._label,
                    thread.name,
                )

    def stats(self) -> ExecutorStats:
        """Workers, busy workers, queued tokens (mailboxes and backlog)."""
        domain = self.domain
        return ExecutorStats(
            workers=len(domain.workers),
            busy=domain.busy(),
            queued=domain.depth(),
            alive=not self._closed,
            details={"backlog": len(domain.backlog)},
        )
