"""Which Dask worker serves which core domain, and how that changes as workers come and go.

The rule (also in the docs):

* A domain is given a worker when it is first used: domain ``k`` takes the ``(k - 1) % W``-th
  live worker in address order (``W`` live workers), so ``cores == W`` gives one domain per
  worker.
* A domain keeps its worker for as long as that worker lives. When the worker leaves (it died
  or was retired), the domain moves to the live worker that serves the fewest domains (ties:
  address order).
* A worker that joins takes no busy domain: an *idle* domain (no call in flight) moves to it
  when the domain's worker serves more domains than the newcomer. So a sticky key or a
  conductor domain never has in-flight calls on two workers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ("WorkerMap",)


class WorkerMap:
    """Core domain → worker address, under one lock."""

    __slots__ = ("_assigned", "_live", "_lock")

    def __init__(self, live: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._live: tuple[str, ...] = tuple(sorted(live))
        self._assigned: dict[int, str] = {}

    @property
    def live(self) -> tuple[str, ...]:
        """The live workers, in address order."""
        return self._live

    def assignments(self) -> dict[int, str]:
        """A copy of the current domain → worker map."""
        with self._lock:
            return dict(self._assigned)

    def worker_of(self, core_id: int) -> str | None:
        """The worker of ``core_id`` (assigned now if it has none); None with no live worker."""
        address = self._assigned.get(core_id)
        if address is not None:
            return address
        with self._lock:
            address = self._assigned.get(core_id)
            if address is None and self._live:
                address = self._assigned[core_id] = self._live[(core_id - 1) % len(self._live)]
            return address

    def _least_loaded(self) -> str:
        load = dict.fromkeys(self._live, 0)
        for address in self._assigned.values():
            if address in load:
                load[address] += 1
        return min(self._live, key=lambda a: (load[a], a))

    def update(self, live: Iterable[str]) -> list[tuple[int, str, str | None]]:
        """Take the new set of live workers; move the domains of workers that left.

        Returns:
            ``(core_id, old_worker, new_worker)`` for every domain that moved (new worker None
            when no worker is left: the domain gets one when a worker joins).
        """
        moved: list[tuple[int, str, str | None]] = []
        with self._lock:
            self._live = tuple(sorted(live))
            alive = set(self._live)
            for core_id in sorted(self._assigned):
                old = self._assigned[core_id]
                if old in alive:
                    continue
                if self._live:
                    new = self._least_loaded()
                    self._assigned[core_id] = new
                    moved.append((core_id, old, new))
                else:
                    del self._assigned[core_id]
                    moved.append((core_id, old, None))
        return moved

    def rebalance(self, core_id: int) -> tuple[str, str] | None:
        """Move an idle domain to a worker serving fewer domains (call only when ``core_id``
        has no call in flight). Returns ``(old, new)`` when it moved."""
        with self._lock:
            old = self._assigned.get(core_id)
            if old is None or not self._live:
                return None
            load = dict.fromkeys(self._live, 0)
            for address in self._assigned.values():
                if address in load:
                    load[address] += 1
            best = min(self._live, key=lambda a: (load[a], a))
            if load.get(old, 0) - load[best] < 2 and old in load:
                return None
            self._assigned[core_id] = best
            return old, best

    def domains_of(self, address: str) -> list[int]:
        """The domains ``address`` serves now."""
        with self._lock:
            return sorted(c for c, a in self._assigned.items() if a == address)
