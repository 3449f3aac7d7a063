"""The sticky registry: in-flight sticky keys pinned to core domains."""

from __future__ import annotations

import reprlib
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("CORE_BITS", "StickyRegistry")

#: Bits of a pin's entry that hold its core (the rest count its holders).
CORE_BITS = 20
_CORE_MASK = (1 << CORE_BITS) - 1
_ONE = 1 << CORE_BITS
_TWO = 2 << CORE_BITS

_key_repr = reprlib.Repr()
_key_repr.maxstring = 60
_key_repr.maxother = 60
_key_repr.maxlevel = 3


class StickyRegistry:
    """Maps each in-flight sticky key to its core, counting the tokens that hold it.

    Not locked by itself: the coordinator calls it under its routing lock, so pinning and
    releasing are atomic with respect to routing.

    The coordinator pins *pin identities* — an int, the hash of ``(anchor, hash of the
    fingerprint)``, computed at routing outside the lock — not the live arguments: no user
    ``__hash__``/``__eq__`` runs under the lock, and a body that mutates its argument cannot
    make its pin unreleasable. Two keys whose fingerprints hash alike share a pin (they share
    a core; nothing else).

    Each pin maps to one int, ``holders << CORE_BITS | core``: plain values, so a registry of
    many in-flight keys holds no container objects for the garbage collector to traverse.
    """

    __slots__ = ("_pins",)

    def __init__(self) -> None:
        self._pins: dict[Hashable, int] = {}

    def acquire(self, key: Hashable, candidate: int) -> int:
        """Return the key's pinned core, pinning it to ``candidate`` if it has none."""
        pins = self._pins
        entry = pins.get(key)
        if entry is None:
            pins[key] = _ONE | candidate
            return candidate
        pins[key] = entry + _ONE
        return entry & _CORE_MASK

    def release_token(self, token: TaskToken[Any]) -> None:
        """Drop the hold of ``token`` (its ``_pin``, cleared here) exactly once.

        Plain subscript operations only, no call: an asynchronous exception cannot land
        between clearing the token's pin and dropping its hold.
        """
        pin = token._pin
        if pin is None:
            return
        pins = self._pins
        entry = pins[pin] if pin in pins else None  # noqa: SIM401 - no call (see above)
        token._pin = None
        if entry is not None:
            if entry < _TWO:
                del pins[pin]
            else:
                pins[pin] = entry - _ONE

    def entries(self) -> list[tuple[Hashable, int]]:
        """Live pins as ``(pin, core)`` pairs: a copy, cheap enough to take under the lock."""
        return [(key, entry & _CORE_MASK) for key, entry in list(self._pins.items())]

    def release(self, key: Hashable) -> None:
        """Drop one holder of ``key``; the pin goes with its last holder."""
        entry = self._pins.get(key)
        if entry is None:
            return
        if entry < _TWO:
            del self._pins[key]
        else:
            self._pins[key] = entry - _ONE

    def core_of(self, key: Hashable) -> int | None:
        """The core ``key`` is pinned to, or None."""
        entry = self._pins.get(key)
        return None if entry is None else entry & _CORE_MASK

    def snapshot(self) -> dict[str, int]:
        """Live pins as ``readable key → core``."""
        return {self.describe(key): e & _CORE_MASK for key, e in list(self._pins.items())}

    def holders(self) -> dict[Hashable, int]:
        """Live pins as ``key → number of in-flight holders``."""
        return {key: e >> CORE_BITS for key, e in list(self._pins.items())}

    @staticmethod
    def describe(key: Hashable) -> str:
        """A short readable form of a sticky key (``anchor:fingerprint``, cut at 60 chars)."""
        if isinstance(key, tuple) and len(key) == 2:
            return f"{key[0]}:{_key_repr.repr(key[1])}"
        return _key_repr.repr(key)

    def __len__(self) -> int:
        return len(self._pins)
