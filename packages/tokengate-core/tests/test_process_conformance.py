"""The process executor passes the executor conformance suite (one process per domain).

The suite ships with the executor interface of the coordinator; until that coordinator is
in place this module is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator

conformance = pytest.importorskip(
    "tokengate.core.conformance", reason="the executor conformance suite is not in core yet"
)


def make(**settings: Any) -> OperationsCoordinator:
    settings.setdefault("stop_timeout", 30)
    settings.setdefault("processes_per_core", 1)
    return OperationsCoordinator(executor="process", **settings)


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
def test_conformance(check: Callable[..., None]) -> None:
    check(make, concurrency=1)


def test_conformance_worker_crash() -> None:
    conformance.check_worker_crash(make, concurrency=1)
