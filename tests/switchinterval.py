"""pytest plugin: run the session with a tiny thread switch interval, to shake out races.

Enabled with ``-p tests.switchinterval`` (``make pytest-switch``); the interval in seconds is
read from ``TOKENGATE_SWITCH_INTERVAL`` (default 1e-6). CPython then hands the interpreter to
another thread after every few bytecodes instead of every 5 ms, so interleavings that are rare
at the default interval become common.
"""

from __future__ import annotations

import os
import sys

import pytest

#: Environment variable holding the switch interval (seconds).
ENV = "TOKENGATE_SWITCH_INTERVAL"

_previous: list[float] = []


def pytest_configure(config: pytest.Config) -> None:
    """Set the switch interval for the whole session."""
    raw = os.environ.get(ENV, "1e-6")
    try:
        interval = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{ENV} must be a number of seconds, got {raw!r}") from None
    if not 0 < interval <= 1:
        raise pytest.UsageError(f"{ENV} must be more than 0 and at most 1 second, got {raw!r}")
    _previous.append(sys.getswitchinterval())
    sys.setswitchinterval(interval)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the interval the session started with."""
    if _previous:
        sys.setswitchinterval(_previous.pop())


def pytest_report_header(config: pytest.Config) -> str:
    """Say in the header that this run switches threads unusually often."""
    return f"thread switch interval: {sys.getswitchinterval():g} s ({ENV})"
