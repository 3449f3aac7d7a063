"""Awaiting tokens from trio, from anyio on its trio backend and on its asyncio backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio

from tokengate.core import OperationsCoordinator, TaskKilledError, TokenState, task_token_guard


@task_token_guard(tags={"hash_policy": "none"})
def square(x: int) -> int:
    return x * x


@task_token_guard(tags={"hash_policy": "none"})
def fails() -> int:
    raise LookupError("nothing here")


@task_token_guard(tags={"hash_policy": "none"})
def wait_for(event: threading.Event) -> str:
    event.wait(30)
    return "released"


async def _many_awaiters() -> list[int]:
    tokens = [square(i) for i in range(40)]
    results: list[int] = [0] * 80

    async def take(slot: int) -> None:
        results[slot] = await tokens[slot % 40]  # every token has two awaiters

    async with anyio.create_task_group() as group:
        for slot in range(80):
            group.start_soon(take, slot)
    return results


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_anyio_awaits_tokens_on_either_backend(
    coordinator: OperationsCoordinator, backend: str
) -> None:
    results = anyio.run(_many_awaiters, backend=backend)
    assert results == [(slot % 40) ** 2 for slot in range(80)]


def test_plain_trio_awaits_results_errors_and_done_tokens(
    coordinator: OperationsCoordinator,
) -> None:
    async def main() -> tuple[int, int]:
        token = square(7)
        first = await token
        again = await token  # already done: returns at once
        with pytest.raises(LookupError, match="nothing here"):
            await fails()
        return first, again

    assert trio.run(main) == (49, 49)


def test_cancelling_the_waiting_trio_task_leaves_the_token_alone(
    coordinator: OperationsCoordinator,
) -> None:
    release = threading.Event()
    token = wait_for(release)

    async def main() -> bool:
        with trio.move_on_after(0.05) as scope:
            await token
        return scope.cancelled_caught

    try:
        assert trio.run(main) is True
        assert not token.done()
        assert token.state is not TokenState.KILLED
    finally:
        release.set()
    assert token.get(timeout=30) == "released"

    async def later() -> str:
        return await token

    assert trio.run(later) == "released"


def test_a_token_killed_while_trio_awaits_it(coordinator: OperationsCoordinator) -> None:
    release = threading.Event()
    token = wait_for(release)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, _kill_soon, token)
            with pytest.raises(TaskKilledError):
                await token

    try:
        trio.run(main)
    finally:
        release.set()


def _kill_soon(token: Any) -> None:
    while not token.running():
        threading.Event().wait(0.001)
    token.kill("stop")


def test_anyio_trio_backend_cancel_scope_and_many_waiters_on_one_token(
    coordinator: OperationsCoordinator,
) -> None:
    release = threading.Event()
    token = wait_for(release)

    async def main() -> list[str]:
        got: list[str] = []

        async def waiter() -> None:
            got.append(await token)

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(waiter)
            with anyio.move_on_after(0.02):
                await token  # one awaiter gives up; the 20 others keep waiting
            await anyio.to_thread.run_sync(release.set)
        return got

    assert anyio.run(main, backend="trio") == ["released"] * 20
    assert token.state is TokenState.COMPLETED


def test_tokens_completed_from_many_threads_wake_trio(
    coordinator_factory: Callable[..., OperationsCoordinator],
) -> None:
    coordinator_factory(cores=2, workers_per_core=4)

    async def main() -> int:
        total = 0
        async with trio.open_nursery() as nursery:
            tokens = [square(i) for i in range(200)]

            async def add(i: int) -> None:
                nonlocal total
                value = await tokens[i]  # read total only after the await
                total += value

            for i in range(200):
                nursery.start_soon(add, i)
        return total

    assert trio.run(main) == sum(i * i for i in range(200))
