"""Timeouts taken from callers: validated once, clamped to what the platform's locks accept.

The lowest layer (it imports nothing of the core), so the token and the deadline watcher
share it without importing each other.
"""

from __future__ import annotations

import math
import threading

__all__ = ("TIMEOUT_MAX", "bounded_wait", "check_timeout")

#: The longest finite wait the platform's locks accept (about 292 years on Linux).
TIMEOUT_MAX = threading.TIMEOUT_MAX


def check_timeout(value: object, what: str) -> float | None:
    """Validate a timeout taken from a caller: ``None`` or ``math.inf`` mean *wait as long as
    it takes* (returned as None), any other value must be a number of seconds from 0 to
    ``threading.TIMEOUT_MAX``.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is NaN, negative or finite beyond ``threading.TIMEOUT_MAX``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{what}: timeout must be a number of seconds or None, got {value!r} "
            f"({type(value).__name__})"
        )
    seconds = float(value)
    if seconds == math.inf:
        return None
    if math.isnan(seconds) or seconds < 0 or seconds > TIMEOUT_MAX:
        raise ValueError(
            f"{what}: timeout must be between 0 and {TIMEOUT_MAX:g} seconds "
            f"(threading.TIMEOUT_MAX), or None / math.inf to wait as long as it takes; "
            f"got {value!r}"
        )
    return seconds


def bounded_wait(seconds: float) -> float:
    """``seconds`` clamped into what a lock or thread join accepts (0 .. TIMEOUT_MAX)."""
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), TIMEOUT_MAX)
