"""Awaiting tokens: several loops in several threads, gather, and batched completions."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    task_token_guard,
)
from tokengate.core._loops import LoopBridge

WAIT = 10.0


@task_token_guard(operation_type="loops.gated", tags={"hash_policy": "none"})
def gated(gate: threading.Event, value: int) -> int:
    if not gate.wait(WAIT):
        raise RuntimeError("never released")
    return value


@task_token_guard(operation_type="loops.fails")
def fails(value: int) -> int:
    raise ArithmeticError(f"bad {value}")


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def state_of(token: TaskToken[Any]) -> TokenState:
    return token.state


def run_loops_in_threads(
    count: int, main: Callable[[int, threading.Barrier], Any], barrier_parties: int
) -> tuple[list[Any], threading.Barrier, list[threading.Thread]]:
    """Run ``asyncio.run(main(i, barrier))`` in ``count`` threads; the test thread is one of
    the barrier's parties so it can act once every loop is ready."""
    barrier = threading.Barrier(barrier_parties)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def thread_main(index: int) -> None:
        try:
            results[index] = asyncio.run(main(index, barrier))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return results, barrier, threads


def join_loops(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), "an event loop thread hung"


def test_the_same_tokens_awaited_from_several_loops(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    tokens = [gated(gate, i) for i in range(40)]
    loops = 4

    async def main(index: int, barrier: threading.Barrier) -> tuple[list[int], list[int], int]:
        # two styles at once: a gather over every token, and one task per token
        gathered = asyncio.gather(*tokens)

        async def one(token: TaskToken[int]) -> int:
            return await token

        tasks = [asyncio.ensure_future(one(t)) for t in tokens]
        await asyncio.sleep(0)  # let every task reach its await
        barrier.wait(WAIT)  # every loop is now waiting on every token
        direct = [await t for t in tasks]
        return list(await gathered), direct, threading.get_ident()

    results, barrier, threads = run_loops_in_threads(loops, main, loops + 1)
    barrier.wait(WAIT)
    assert not any(t.done() for t in tokens), "tokens ended before every loop awaited them"
    gate.set()
    join_loops(threads)
    expected = list(range(40))
    assert len(results) == loops
    for gathered, direct, _ in results:
        assert gathered == expected
        assert direct == expected
    assert len({ident for _, _, ident in results}) == loops


def test_a_kill_releases_awaiters_on_every_loop(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = gated(gate, 1)

    async def main(index: int, barrier: threading.Barrier) -> str:
        async def wait_for_it() -> str:
            try:
                await token
            except TaskKilledError as exc:
                return str(exc)
            return "completed"

        task = asyncio.ensure_future(wait_for_it())
        await asyncio.sleep(0)
        barrier.wait(WAIT)
        return await task

    results, barrier, threads = run_loops_in_threads(3, main, 4)
    barrier.wait(WAIT)
    assert token.kill("enough")
    join_loops(threads)
    assert all(isinstance(r, str) and "enough" in r for r in results)
    assert state_of(token) is TokenState.KILLED


@pytest.mark.asyncio
async def test_gather_with_return_exceptions(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    ok = [gated(gate, i) for i in range(5)]
    bad = [fails(i) for i in range(3)]
    killed = gated(gate, 99)
    killed.kill("not wanted")
    gathered = asyncio.gather(*ok, *bad, killed, return_exceptions=True)
    gate.set()
    results = await gathered
    assert results[:5] == [0, 1, 2, 3, 4]
    assert all(isinstance(r, ArithmeticError) for r in results[5:8])
    assert [str(r) for r in results[5:8]] == ["bad 0", "bad 1", "bad 2"]
    assert isinstance(results[8], TaskKilledError)


@pytest.mark.asyncio
async def test_gather_without_return_exceptions_raises_the_first_error(
    coordinator: OperationsCoordinator,
) -> None:
    with pytest.raises(ArithmeticError, match="bad 7"):
        await asyncio.gather(fails(7))


@pytest.mark.asyncio
async def test_wait_for_timeout_raises_timeout_error(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = gated(gate, 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(token, timeout=0.01)


@pytest.mark.asyncio
async def test_a_cancelled_awaiter_does_not_kill_the_token(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = gated(gate, 5)

    async def awaiter() -> int:
        return await token

    task = asyncio.ensure_future(awaiter())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not token.done()
    gate.set()
    assert await token == 5  # other awaiters still get the result


@pytest.mark.asyncio
async def test_gather_creates_no_asyncio_futures_per_token(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    loop = asyncio.get_running_loop()
    original = loop.create_future
    created = [0]

    def counting_create_future() -> asyncio.Future[Any]:
        created[0] += 1
        return original()

    loop.create_future = counting_create_future  # type: ignore[method-assign]
    try:
        tokens = [gated(gate, i) for i in range(500)]
        gathered = asyncio.gather(*tokens)
        gate.set()
        assert await gathered == list(range(500))
        assert created[0] == 0, "gather over tokens must not create a future per token"
        assert await tokens[0] == 0  # awaiting a done token creates nothing either
        assert created[0] == 0
    finally:
        loop.create_future = original  # type: ignore[method-assign]


def _count_wakeups(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    original = loop.call_soon_threadsafe
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    return lambda: calls[0]


@pytest.mark.asyncio
async def test_completions_while_the_loop_is_busy_cost_one_wakeup(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    wakeups = _count_wakeups(asyncio.get_running_loop())
    tokens = [gated(gate, i) for i in range(10_000)]
    gathered = asyncio.gather(*tokens)  # one done-callback per token, on this loop
    gate.set()
    with warnings.catch_warnings():  # blocking the loop is the point here
        warnings.simplefilter("ignore", RuntimeWarning)
        for token in tokens:  # keep the loop busy (blocked) until every token has completed
            token.get(timeout=WAIT)
    assert await gathered == list(range(10_000))
    assert wakeups() == 1, f"{wakeups()} loop wake-ups for 10,000 completions"


@pytest.mark.asyncio
async def test_completions_are_batched_while_the_loop_runs(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    wakeups = _count_wakeups(asyncio.get_running_loop())
    tokens = [gated(gate, i) for i in range(10_000)]
    gathered = asyncio.gather(*tokens)
    gate.set()
    assert await gathered == list(range(10_000))
    # one wake-up per batch, not per token (reported, not timed: counts only)
    assert 0 < wakeups() * 4 < len(tokens), f"{wakeups()} wake-ups for {len(tokens)} tokens"


def test_a_loop_bridge_delivers_in_order_in_one_drain() -> None:
    loop = asyncio.new_event_loop()
    try:
        bridge = LoopBridge(loop)
        wakeups = _count_wakeups(loop)
        seen: list[int] = []
        items = [threading.Event() for _ in range(5)]

        class Fake:
            token_id = "fake"

        def recorder(i: int) -> Callable[[Any], None]:
            return lambda _token: seen.append(i)

        for i, _ in enumerate(items):
            bridge.push(recorder(i), Fake(), None)
        assert wakeups() == 1
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == [0, 1, 2, 3, 4]
    finally:
        loop.close()


def test_bridge_for_never_pairs_a_loop_with_another_loops_bridge() -> None:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=1)
    loops = [asyncio.new_event_loop() for _ in range(4)]
    errors: list[str] = []

    def look_up(loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(2_000):
            if coordinator.bridge_for(loop).loop is not loop:
                errors.append("a loop was handed another loop's bridge")
                return

    try:
        threads = [threading.Thread(target=look_up, args=(loop,)) for loop in loops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert errors == []
        assert coordinator.bridge_for(loops[0]) is coordinator.bridge_for(loops[0])
    finally:
        for loop in loops:
            loop.close()
