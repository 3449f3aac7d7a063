"""``concurrent.futures.wait`` over tokens that end while it installs its waiter: a token is
reported finished only together with its waiters' notification (as a Future is), so an
ALL_COMPLETED wait never returns early with tokens still pending."""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, cast

import pytest

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard

WAIT = 10.0


@task_token_guard("cfrace.value", tags={"hash_policy": "none"})
def value(x: int) -> int:
    return x


@task_token_guard("cfrace.nap", tags={"hash_policy": "none"})
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch after a few bytecodes: the race is common
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _futures(tokens: list[TaskToken[Any]]) -> list[Future[Any]]:
    return cast("list[Future[Any]]", tokens)


@pytest.mark.usefixtures("fast_switching")
def test_all_completed_wait_never_returns_with_tokens_pending() -> None:
    with OperationsCoordinator(cores=2, workers_per_core=2):
        for round_ in range(300):
            # quick tokens end while wait() installs its waiter; the nap is still pending
            tokens: list[TaskToken[Any]] = [value(round_ * 10 + i) for i in range(5)]
            tokens.append(nap(0.002))
            done, pending = concurrent.futures.wait(_futures(tokens), timeout=WAIT)
            assert not pending, f"round {round_}: {len(pending)} still pending"
            assert len(done) == len(tokens)
