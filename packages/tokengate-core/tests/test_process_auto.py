"""``executor: "auto"`` with a real coordinator, real threads and real worker processes.

A CPU-bound operation moves to the process executor and its tokens then run in a worker
process; an operation whose bodies mostly sleep, or are too short for the hop to pay, ends on
threads; every decision carries its reason. The review runs every quarter of a second, so
each test calls until the decision shows (bounded by ``WAIT``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, task_token_guard

WAIT = 60.0
AUTO = {"executor": "auto", "hash_policy": "none"}


def spin(n: int) -> int:
    """About a millisecond of pure-Python CPU work; returns the pid that ran it."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return os.getpid() + 0 * total


def nap(seconds: float) -> int:
    """Sleep (no CPU); returns the pid that ran it."""
    time.sleep(seconds)
    return os.getpid()


def spin_with(n: int, extra: object) -> int:
    """:func:`spin`, with an argument the body ignores (to send something unpicklable)."""
    return spin(n)


def tiny() -> int:
    """A body far too short for a process hop to pay."""
    return os.getpid()


auto_spin = task_token_guard("auto_spin", tags=AUTO)(spin)
auto_nap = task_token_guard("auto_nap", tags=AUTO)(nap)
auto_tiny = task_token_guard("auto_tiny", tags=AUTO)(tiny)
auto_spin_with = task_token_guard("auto_spin_with", tags=AUTO)(spin_with)


pytestmark = pytest.mark.skipif(
    not hasattr(OperationsCoordinator, "auto_decisions"),
    reason="the coordinator does not wire executor auto yet",
)


@pytest.fixture(scope="module")
def coordinator() -> Iterator[OperationsCoordinator]:
    coord = OperationsCoordinator(cores=1, stop_timeout=30).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=30)


def _until(
    coordinator: OperationsCoordinator,
    call: Callable[[], Any],
    operation: str,
    done: Callable[[Any], bool],
) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for _ in range(16):
            call()
        decision = coordinator.auto_decisions().get(operation)
        if decision is not None and done(decision):
            return decision
    pytest.fail(f"no decision for {operation}: {coordinator.auto_decisions().get(operation)}")


def test_a_cpu_bound_operation_moves_to_processes(coordinator: OperationsCoordinator) -> None:
    decision = _until(
        coordinator,
        lambda: auto_spin(20_000).get(WAIT),
        "auto_spin",
        lambda d: d.executor == "process",
    )
    assert decision.moves >= 1
    assert "on processes" in decision.reason
    # Until the domain's worker process is ready its tokens still run on threads; then
    # they run in the process.
    deadline = time.monotonic() + WAIT
    while auto_spin(1).get(WAIT) == os.getpid():
        assert time.monotonic() < deadline, "its tokens do not run in a worker process"
        time.sleep(0.01)


def test_sleeping_bodies_end_on_threads(coordinator: OperationsCoordinator) -> None:
    decision = _until(
        coordinator,
        lambda: auto_nap(0.002).get(WAIT),
        "auto_nap",
        lambda d: d.executor == "thread" and ("wait" in d.reason or "CPU time" in d.reason),
    )
    assert "thread" in decision.reason
    assert auto_nap(0.0).get(WAIT) == os.getpid()


def test_bodies_too_short_for_the_hop_end_on_threads(coordinator: OperationsCoordinator) -> None:
    decision = _until(
        coordinator,
        lambda: [t.get(WAIT) for t in [auto_tiny() for _ in range(64)]],
        "auto_tiny",
        lambda d: d.executor == "thread" and (d.settled or "mostly wait" in d.reason),
    )
    assert decision.executor == "thread"
    assert auto_tiny().get(WAIT) == os.getpid()


def test_a_moved_operation_runs_a_call_that_cannot_cross_on_threads(
    coordinator: OperationsCoordinator,
) -> None:
    """Once on processes, a call whose argument cannot be pickled runs on the domain's
    threads instead of failing; plain values and picklable containers still cross."""
    _until(
        coordinator,
        lambda: auto_spin_with(20_000, 1).get(WAIT),
        "auto_spin_with",
        lambda d: d.executor == "process",
    )
    deadline = time.monotonic() + WAIT
    while auto_spin_with(1, "ready?").get(WAIT) == os.getpid():
        assert time.monotonic() < deadline, "its tokens do not run in a worker process"
        time.sleep(0.01)
    assert auto_spin_with(1, threading.Lock()).get(WAIT) == os.getpid()
    assert auto_spin_with(1, 2.5).get(WAIT) != os.getpid()
    assert auto_spin_with(1, [1, "two", (3,)]).get(WAIT) != os.getpid()
    assert auto_spin_with(1, None).get(WAIT) != os.getpid()
