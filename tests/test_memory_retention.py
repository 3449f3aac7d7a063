"""Nothing a coordinator keeps grows with the work it has done.

One test per class of object that was once retained without bound: event loops that awaited
tokens, tracebacks of re-raised stored exceptions, tokens drained while admission is paused,
and the text of execution records. Each measures the memory still allocated (``tracemalloc``,
after a full garbage collection) after a workload of size N and after 4N: a leak of anything
per unit of work grows four-fold, bounded state does not grow at all. The assertion allows
twice the first growth plus a small constant for allocator and interpreter noise, far below
the four-fold growth of a leak.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, task_token_guard

WAIT = 20.0
#: Growth allowed beyond twice the first measurement (bytes): interpreter caches, free lists.
SLACK = 96 * 1024


@task_token_guard("rel2.mem.echo", tags={"weight": "light", "hash_policy": "none"})
def echo(value: int) -> int:
    return value


@task_token_guard("rel2.mem.fail", tags={"weight": "light", "hash_policy": "none"})
def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def coordinator() -> Iterator[OperationsCoordinator]:
    with OperationsCoordinator(
        cores=2, workers_per_core=2, stop_timeout=WAIT, history_size=64
    ) as running:
        yield running


def _allocated() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def growth_at_n_and_4n(work: Callable[[int], None], n: int) -> tuple[int, int]:
    """Bytes still allocated after ``work(n)`` and after ``work(n)`` plus ``work(3n)``,
    each relative to the start (one warm-up round first, so caches are full)."""
    work(max(1, n // 4))  # warm-up: first-use caches, plans, free lists
    tracemalloc.start()
    try:
        base = _allocated()
        work(n)
        first = _allocated() - base
        work(3 * n)
        second = _allocated() - base
    finally:
        tracemalloc.stop()
    return first, second


def assert_sublinear(first: int, second: int, what: str) -> None:
    assert second < 2 * max(first, 0) + SLACK, (
        f"{what}: {first:,} bytes retained after N, {second:,} after 4N (grows with the work)"
    )


def test_event_loops_that_awaited_tokens_do_not_accumulate(
    coordinator: OperationsCoordinator,
) -> None:
    async def await_one(value: int) -> int:
        return await echo(value)

    def work(n: int) -> None:
        for value in range(n):
            assert asyncio.run(await_one(value)) == value

    first, second = growth_at_n_and_4n(work, 150)
    assert_sublinear(first, second, "event loops")


def test_tracebacks_of_re_raised_exceptions_do_not_accumulate(
    coordinator: OperationsCoordinator,
) -> None:
    failed = fail("stored")
    failed.exception(WAIT)
    killed = echo(0)
    killed.kill("stored")

    def work(n: int) -> None:
        for _ in range(n):
            for token in (failed, killed):
                try:
                    token.get(0)
                except Exception:
                    pass
        asyncio.run(_await_quietly(failed, n))

    first, second = growth_at_n_and_4n(work, 400)
    assert_sublinear(first, second, "tracebacks")


async def _await_quietly(token: Any, times: int) -> None:
    for _ in range(times):
        try:
            await token
        except Exception:
            pass


def test_tokens_drained_while_paused_do_not_accumulate(
    coordinator: OperationsCoordinator,
) -> None:
    coordinator.pause()

    def work(n: int) -> None:
        for value in range(n):
            echo(value)
        assert coordinator.drain() == n
        for value in range(n // 4):  # and some killed one by one while held
            echo(value).kill("while paused")

    try:
        first, second = growth_at_n_and_4n(work, 1_500)
    finally:
        coordinator.resume()
    assert_sublinear(first, second, "drained held tokens")
    assert coordinator.in_flight() == []


def test_execution_records_are_bounded_by_size_not_only_by_count(
    coordinator: OperationsCoordinator,
) -> None:
    """The history is full (64 records) both times; only the failures' message size grows
    four-fold: what is kept per record must not follow it."""
    sizes = {"n": 0}

    def work(n: int) -> None:
        sizes["n"] += n
        message = "m" * (400 * sizes["n"])  # the messages grow with the work done so far
        tokens = [fail(message) for _ in range(80)]
        for token in tokens:
            token.exception(WAIT)
        del tokens

    first, second = growth_at_n_and_4n(work, 100)
    assert_sublinear(first, second, "execution records")
    assert all(len(r.error or "") <= 500 for r in coordinator.recent_executions(64))
