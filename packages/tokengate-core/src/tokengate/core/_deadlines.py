"""The deadline watcher behind the ``timeout`` tag: one thread, a heap, no polling."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ._timeouts import TIMEOUT_MAX as TIMEOUT_MAX
from ._timeouts import bounded_wait as bounded_wait
from ._timeouts import check_timeout as check_timeout

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("TIMEOUT_MAX", "DeadlineWatcher", "bounded_wait", "check_timeout")

_log = logging.getLogger("tokengate.coordinator")

#: The heap is compacted (ended tokens dropped) when it reaches this size or twice the number
#: of entries kept by the last compaction, so it stays proportional to the live deadlines.
_COMPACT_MIN = 1024


class DeadlineWatcher:
    """Ends tokens ``TIMEOUT`` when their deadline passes. Sleeps until the earliest deadline
    (a condition wait), so it costs nothing while nothing is due. Entries of tokens that
    ended early are dropped in amortised batches, so memory follows the live deadlines, not
    every token ever submitted."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, weakref.ref[TaskToken[Any]], float]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._name = name
        self._compact_at = _COMPACT_MIN

    def add(self, token: TaskToken[Any], limit: float) -> None:
        """Watch ``token``: it times out ``limit`` seconds after its submission.

        ``math.inf`` means no deadline (nothing is watched).

        Raises:
            ValueError: ``limit`` is NaN, not positive or finite beyond
                ``threading.TIMEOUT_MAX`` (the watcher itself never fails on it).
        """
        if limit == math.inf:
            return
        if not 0 < limit <= TIMEOUT_MAX:  # NaN fails every comparison
            raise ValueError(
                f"token {token.token_id}: a timeout must be more than 0 and at most "
                f"{TIMEOUT_MAX:g} seconds (threading.TIMEOUT_MAX); got {limit!r}"
            )
        deadline = token.created_at + limit
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if len(self._heap) >= self._compact_at:
                self._compact()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(token), limit))
            if earliest is None or deadline < earliest:
                self._cond.notify()

    def __len__(self) -> int:
        """Deadlines held (live ones plus ended ones not yet dropped)."""
        return len(self._heap)

    def _compact(self) -> None:
        """Drop the entries of ended tokens (called under the condition's lock)."""
        live = [entry for entry in self._heap if (t := entry[2]()) is not None and not t.done()]
        heapq.heapify(live)
        self._heap[:] = live  # in place: the watcher thread holds a reference to the list
        self._compact_at = max(_COMPACT_MIN, 2 * len(live))

    def _run(self) -> None:
        # The watcher must outlive anything a single deadline does: a failure is logged and
        # the loop goes on, or every later deadline would silently never fire.
        while True:
            try:
                if self._watch():
                    return
            except BaseException:  # a callback's SystemExit must not end it
                _log.exception(
                    "the deadline watcher %s hit an error; it keeps watching", self._name
                )

    def _watch(self) -> bool:
        """Fire what is due, then sleep until the next deadline; True once stopped."""
        heap = self._heap
        while True:
            due: list[tuple[weakref.ref[TaskToken[Any]], float]] = []
            with self._cond:
                if self._stopped:
                    return True
                now = time.perf_counter()
                while heap and heap[0][0] <= now:
                    _, _, ref, limit = heapq.heappop(heap)
                    due.append((ref, limit))
                if not due:
                    self._cond.wait(None if not heap else bounded_wait(heap[0][0] - now))
                    continue
            for ref, limit in due:
                token = ref()
                if token is not None and not token.done():
                    try:
                        token._timeout(limit)
                    except BaseException:  # e.g. a done-callback's SystemExit
                        _log.exception("timing out token %s failed", token.token_id)

    def stop(self) -> None:
        """Stop the thread (pending deadlines are dropped: stop() ends their tokens)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
