"""The built-in executors pass the public backend conformance suite
(``tokengate.core.conformance``): kill before and while running, timeout, drain, stop with
pending and hung bodies, and for processes a crashed worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, conformance


def _maker(executor: str, **fixed: Any) -> Callable[..., OperationsCoordinator]:
    def make(**settings: Any) -> OperationsCoordinator:
        return OperationsCoordinator(executor=executor, stop_timeout=30, **fixed, **settings)

    return make


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__)
def test_the_thread_executor_conforms(check: Callable[..., None]) -> None:
    # the thread executor is elastic: a domain runs one body on the CPU slot and blocked
    # bodies on up to max_blocking_threads more, so two held bodies fill it with a cap of 1
    check(_maker("thread", workers_per_core=2, max_blocking_threads=1), concurrency=2)


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__)
def test_the_process_executor_conforms(check: Callable[..., None]) -> None:
    check(_maker("process"), concurrency=1)


def test_the_process_executor_survives_a_crashed_worker() -> None:
    conformance.check_worker_crash(_maker("process"), concurrency=1)
