"""The deadline watcher behind the ``timeout`` tag: one thread, a heap, no polling."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("DeadlineWatcher",)

_log = logging.getLogger("tokengate.coordinator")


class DeadlineWatcher:
    """Ends tokens ``TIMEOUT`` when their deadline passes. Sleeps until the earliest deadline
    (a condition wait), so it costs nothing while nothing is due."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, weakref.ref[TaskToken[Any]], float]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._name = name

    def add(self, token: TaskToken[Any], limit: float) -> None:
        """Watch ``token``: it times out ``limit`` seconds after its submission."""
        deadline = token.created_at + limit
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(token), limit))
            if earliest is None or deadline < earliest:
                self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        while True:
            due: list[tuple[weakref.ref[TaskToken[Any]], float]] = []
            with self._cond:
                if self._stopped:
                    return
                now = time.perf_counter()
                while heap and heap[0][0] <= now:
                    _, _, ref, limit = heapq.heappop(heap)
                    due.append((ref, limit))
                if not due:
                    self._cond.wait(None if not heap else heap[0][0] - now)
                    continue
            for ref, limit in due:
                token = ref()
                if token is not None and not token.done():
                    try:
                        token._timeout(limit)
                    except Exception:
                        _log.exception("timing out token %s failed", token.token_id)

    def stop(self) -> None:
        """Stop the thread (pending deadlines are dropped: stop() ends their tokens)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
