"""Even placement of keys and leads over the cores of a weight class.

The router asks :class:`CorePlacement` where a *new* sticky key, a new conductor lead or a
free token should go; tokens that must follow a pin or a domain never come here, so the
locality contracts are untouched. Two strategies:

* :meth:`CorePlacement.place` — the core with the fewest tokens in flight (placed and not yet
  ended), ties broken by a rotating start so that equal cores take turns;
* :meth:`CorePlacement.rendezvous` — rendezvous (highest-random-weight) hashing of a key,
  for callers that want a key's core to be stable while it is not pinned.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence

__all__ = ("CorePlacement",)

_MASK = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finaliser: a fast 64-bit avalanche."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


class CorePlacement:
    """In-flight counts per core and the choice of the least-loaded core.

    Thread-safe. ``place`` counts the token it placed; call ``release(core)`` exactly once
    when that token ends (its terminal move), or the core looks busier than it is.
    """

    __slots__ = ("_cores", "_in_flight", "_lock", "_turn")

    def __init__(self, cores: int) -> None:
        """Track ``cores`` cores, numbered 1..cores.

        Raises:
            ValueError: ``cores`` is not an int >= 1.
        """
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise ValueError(f"CorePlacement needs a number of cores >= 1, got {cores!r}")
        self._cores = cores
        self._in_flight = [0] * (cores + 1)  # index 0 unused: cores are numbered from 1
        self._turn = 0
        self._lock = threading.Lock()

    @property
    def cores(self) -> int:
        """How many cores are tracked."""
        return self._cores

    def _check(self, candidates: Sequence[int]) -> None:
        if not candidates:
            raise ValueError("CorePlacement needs at least one candidate core, got none")
        for core in candidates:
            if not isinstance(core, int) or not 1 <= core <= self._cores:
                raise ValueError(
                    f"candidate core {core!r} is not one of the cores 1..{self._cores}"
                )

    def choose(self, candidates: Sequence[int]) -> int:
        """The least-loaded of ``candidates`` (not counted: see :meth:`place`).

        Raises:
            ValueError: ``candidates`` is empty or names a core outside 1..cores.
        """
        self._check(candidates)
        with self._lock:
            return self._least(candidates)

    def place(self, candidates: Sequence[int]) -> int:
        """Choose the least-loaded of ``candidates`` and count one token in flight there.

        Raises:
            ValueError: ``candidates`` is empty or names a core outside 1..cores.
        """
        self._check(candidates)
        with self._lock:
            core = self._least(candidates)
            self._in_flight[core] += 1
        return core

    def _least(self, candidates: Sequence[int]) -> int:
        counts = self._in_flight
        count = len(candidates)
        start = self._turn % count
        self._turn = start + 1
        best = candidates[start]
        low = counts[best]
        for offset in range(1, count):
            core = candidates[(start + offset) % count]
            if counts[core] < low:
                best = core
                low = counts[core]
        return best

    def add(self, core: int) -> None:
        """Count one more token in flight on ``core`` (a token placed by someone else,
        e.g. a child following its lead)."""
        with self._lock:
            self._in_flight[core] += 1

    def release(self, core: int) -> None:
        """One token placed on ``core`` ended."""
        with self._lock:
            if self._in_flight[core] > 0:
                self._in_flight[core] -= 1

    def rendezvous(self, key: Hashable, candidates: Sequence[int]) -> int:
        """The core of ``key`` by rendezvous hashing: stable for a key and a candidate set,
        spread evenly over many keys, and only ~1/n of the keys move when a core is added.

        Raises:
            ValueError: ``candidates`` is empty or names a core outside 1..cores.
            TypeError: ``key`` is not hashable.
        """
        self._check(candidates)
        base = hash(key) & _MASK
        best = candidates[0]
        high = -1
        for core in candidates:
            weight = _mix(base ^ _mix(core))
            if weight > high:
                high = weight
                best = core
        return best

    def in_flight(self, core: int) -> int:
        """Tokens counted in flight on ``core``."""
        return self._in_flight[core]

    def snapshot(self) -> dict[int, int]:
        """In-flight count per core, ``{core: count}``."""
        with self._lock:
            return {core: self._in_flight[core] for core in range(1, self._cores + 1)}
