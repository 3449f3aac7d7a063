"""Enumerations of the public API: token states, weights and storage tiers."""

from __future__ import annotations

import enum
from typing import Self

__all__ = ("StorageSpeed", "TokenState", "Weight")


class _ParseableEnum(enum.StrEnum):
    @classmethod
    def parse(cls, value: object) -> Self:
        """Return the member for ``value``: a member, or its value or name in any case.

        Raises:
            ValueError: ``value`` names no member; the message lists the allowed values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            for member in cls:
                if member.value == lowered or member.name.lower() == lowered:
                    return member
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{value!r} is not a valid {cls.__name__}; allowed: {allowed}")


class TokenState(_ParseableEnum):
    """The life cycle of a token.

    ``CREATED → WAITING → ADMITTED → EXECUTING → COMPLETED | FAILED``; ``KILLED`` and
    ``TIMEOUT`` can be reached from any non-terminal state, and so can ``FAILED`` when an
    error happens before the body runs (routing, a plugin, pickling for a process domain).
    """

    CREATED = "created"
    WAITING = "waiting"
    ADMITTED = "admitted"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    TIMEOUT = "timeout"

    @property
    def is_terminal(self) -> bool:
        """True for ``COMPLETED``, ``FAILED``, ``KILLED`` and ``TIMEOUT``."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {TokenState.COMPLETED, TokenState.FAILED, TokenState.KILLED, TokenState.TIMEOUT}
)


class Weight(_ParseableEnum):
    """The routing class of an operation: HEAVY → core 1, MEDIUM → cores 2..N, LIGHT → 3..N."""

    HEAVY = "heavy"
    MEDIUM = "medium"
    LIGHT = "light"


class StorageSpeed(_ParseableEnum):
    """IO class of an operation: caps its concurrent calls per tier (10/25/50/70 by default)."""

    SLOW = "slow"
    MODERATE = "moderate"
    FAST = "fast"
    INSANE = "insane"
