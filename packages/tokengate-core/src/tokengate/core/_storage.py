"""Storage tiers: caps on concurrent calls per IO class, without holding workers."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._enums import StorageSpeed

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("StorageGate",)


#: Parked tokens that ended (killed, timed out) are dropped in amortised batches once the
#: queue reaches this size or twice what the last sweep kept.
_SWEEP_MIN = 1024


class _Tier:
    __slots__ = ("in_use", "limit", "lock", "peak", "sweep_at", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self.waiting: deque[TaskToken[Any]] = deque()
        self.lock = threading.Lock()
        self.sweep_at = _SWEEP_MIN


class StorageGate:
    """One slot counter per tier. A token that finds its tier full is parked here (it does
    not occupy a worker); when a slot frees, the slot passes to the oldest parked token that
    has not ended, which goes back to its core domain. Ended parked tokens are dropped in
    amortised sweeps, so the queue follows the live tokens."""

    def __init__(self, limits: Mapping[StorageSpeed, int]) -> None:
        self._tiers = {tier: _Tier(limits[tier]) for tier in StorageSpeed}

    def try_acquire(self, tier: StorageSpeed, token: TaskToken[Any]) -> bool:
        """Take a slot for ``token``, or park it and return False."""
        state = self._tiers[tier]
        with state.lock:
            if state.in_use < state.limit:
                state.in_use += 1
                state.peak = max(state.peak, state.in_use)
                return True
            waiting = state.waiting
            if len(waiting) >= state.sweep_at:
                live = [t for t in waiting if not t.done()]
                waiting.clear()
                waiting.extend(live)
                state.sweep_at = max(_SWEEP_MIN, 2 * len(live))
            waiting.append(token)
            return False

    def release(self, tier: StorageSpeed) -> TaskToken[Any] | None:
        """Free a slot; returns the parked token the slot passes to, if any."""
        state = self._tiers[tier]
        with state.lock:
            while state.waiting:
                token = state.waiting.popleft()
                if not token.done():
                    return token
            state.in_use -= 1
            return None

    def in_use(self, tier: StorageSpeed) -> int:
        """Slots of ``tier`` taken now."""
        return self._tiers[tier].in_use

    def peak(self, tier: StorageSpeed) -> int:
        """Most slots of ``tier`` ever taken at once."""
        return self._tiers[tier].peak

    def waiting(self, tier: StorageSpeed) -> int:
        """Tokens parked for a slot of ``tier``."""
        return len(self._tiers[tier].waiting)
