"""Settling a batch of outcomes at once (``finish_many``, what the process executor does with
each batch it reads): the same ends, records, metrics and releases as token by token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tokengate.core import (
    ExecutorBackend,
    ExecutorDomain,
    ExecutorRegistry,
    ExecutorStats,
    OperationsCoordinator,
    TaskToken,
    TokenExtension,
    TokenState,
    hookimpl,
    task_token_guard,
)
from tokengate.core._token import finish_many

PluginRegistrar = Callable[[object, str], str]
HELD: list[TaskToken[Any]] = []


class HoldBackend(ExecutorBackend):
    """Keeps every token it is given; the test settles them."""

    def __init__(self, domain: ExecutorDomain) -> None:
        self.domain = domain

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        HELD.extend(tokens)

    def shutdown(self, timeout: float) -> None:
        for token in HELD:
            token.kill("the test's executor shut down")

    def stats(self) -> ExecutorStats:
        return ExecutorStats(workers=1, busy=0, queued=len(HELD), alive=True)


class HoldPlugin:
    @hookimpl
    def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.register("hold", HoldBackend)


def _double(x: int) -> int:
    return 2 * x


class Ops:
    """The operations on the holding executor (decorated once the executor is registered)."""

    sticky: Callable[[int], TaskToken[int]]
    free: Callable[[int], TaskToken[int]]


@pytest.fixture
def hold(register_plugin: PluginRegistrar) -> Any:
    register_plugin(HoldPlugin(), "finish-many-hold")
    Ops.sticky = task_token_guard("finish_many.sticky", tags={"executor": "hold"})(_double)
    Ops.free = task_token_guard(
        "finish_many.free", tags={"executor": "hold", "hash_policy": "none"}
    )(_double)
    HELD.clear()
    with OperationsCoordinator(cores=2, history_size=1000) as coordinator:
        yield coordinator
    HELD.clear()


def _ended(coordinator: OperationsCoordinator, state: str) -> int:
    return coordinator.stats().by_state[state]


def _start(tokens: list[TaskToken[Any]]) -> None:
    for token in tokens:
        assert token.set_running()


def test_a_batch_ends_like_one_by_one(hold: OperationsCoordinator) -> None:
    tokens = [Ops.sticky(i % 5) for i in range(40)] + [Ops.free(i) for i in range(40)]
    assert len(HELD) == 80
    _start(tokens)
    assert sum(hold._router._counters) == 80
    error = ValueError("boom")
    outcomes = [
        (token, index % 7 != 0, 2 * index if index % 7 else error)
        for index, token in enumerate(tokens)
    ]
    finish_many(outcomes)
    for index, token in enumerate(tokens):
        assert token.done()
        if index % 7:
            assert token.state is TokenState.COMPLETED
            assert token.get(0) == 2 * index
        else:
            assert token.state is TokenState.FAILED
            assert token.exception(0) is error
    assert _ended(hold, "completed") == sum(1 for i in range(80) if i % 7)
    assert _ended(hold, "failed") == sum(1 for i in range(80) if not i % 7)
    assert len(hold.recent_executions(limit=1000)) == 80
    assert hold.in_flight() == []
    assert sum(hold._router._counters) == 0
    assert hold.stats().sticky_pins == 0


def test_a_token_ended_before_the_batch_keeps_its_end(hold: OperationsCoordinator) -> None:
    tokens = [Ops.free(i) for i in range(6)]
    _start(tokens)
    assert tokens[2].kill("first")
    finish_many([(token, True, index) for index, token in enumerate(tokens)])
    assert tokens[2].state is TokenState.KILLED
    assert tokens[2].kill_reason == "first"
    assert [t.get(0) for i, t in enumerate(tokens) if i != 2] == [0, 1, 3, 4, 5]
    assert (_ended(hold, "completed"), _ended(hold, "killed")) == (5, 1)
    assert len(hold.recent_executions(limit=100)) == 6  # once each, the killed one too


def test_awaiters_and_callbacks_are_told_once(hold: OperationsCoordinator) -> None:
    calls: list[int] = []

    async def main() -> list[int]:
        tokens = [Ops.free(i) for i in range(50)]
        for token in tokens:
            token.add_done_callback(lambda t: calls.append(t.seq))
        _start(tokens)
        thread = threading.Thread(
            target=finish_many, args=([(t, True, i) for i, t in enumerate(tokens)],)
        )
        thread.start()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*tokens), 30))
        finally:
            thread.join(30)

    assert asyncio.run(main()) == list(range(50))
    assert len(calls) == 50
    assert len(set(calls)) == 50


def test_an_interrupt_in_the_batch_leaves_no_token_unsettled(
    hold: OperationsCoordinator,
) -> None:
    tokens = [Ops.free(i) for i in range(8)]
    told: list[int] = []

    def interrupt(token: TaskToken[Any]) -> None:
        raise KeyboardInterrupt

    for index, token in enumerate(tokens):
        if index == 3:
            token.add_done_callback(interrupt)
        token.add_done_callback(lambda t: told.append(t.seq))
    _start(tokens)
    with pytest.raises(KeyboardInterrupt):
        finish_many([(token, True, index) for index, token in enumerate(tokens)])
    assert all(token.done() for token in tokens)
    assert [token.get(0) for token in tokens] == list(range(8))
    assert sorted(told) == sorted(token.seq for token in tokens)  # each once, none lost
    assert _ended(hold, "completed") == 8
    assert len(hold.recent_executions(limit=100)) == 8
    assert hold.in_flight() == []


def test_tokens_that_need_more_take_the_one_by_one_path(
    hold: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    """An extension marks odd arguments and acts on their terminal moves only: in one batch,
    the marked tokens take the one-by-one path (their ``on_terminal`` runs), the others the
    batch path; every token is recorded once."""
    ended: list[int] = []

    class MarkOdd(TokenExtension):
        only_with_state = True

        def on_create(self, token: TaskToken[Any]) -> None:
            if token.args[0] % 2:
                self.set_state(token, "odd")

        def on_terminal(self, token: TaskToken[Any]) -> None:
            ended.append(token.args[0])

    class Plugin:
        @hookimpl
        def tokengate_token_extension(self, operation: Any) -> Any:
            return MarkOdd() if operation.operation_type == "finish_many.marked" else None

    register_plugin(Plugin(), "finish-many-mark")
    marked = task_token_guard(
        "finish_many.marked", tags={"executor": "hold", "hash_policy": "none"}
    )(_double)
    tokens = [marked(i) for i in range(10)]
    _start(tokens)
    finish_many([(token, True, index) for index, token in enumerate(tokens)])
    assert [token.get(0) for token in tokens] == list(range(10))
    assert sorted(ended) == [1, 3, 5, 7, 9]
    assert _ended(hold, "completed") == 10
    assert len(hold.recent_executions(limit=100)) == 10
    assert hold.in_flight() == []
