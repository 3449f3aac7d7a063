"""Kills of "what has not started" (drain, map closed early, stop(cancel_pending=True)) are one
atomic check and move: a body that starts meanwhile is never reported KILLED after it ran."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from tokengate.core import (
    ExecutorBackend,
    ExecutorDomain,
    ExecutorStats,
    OperationsCoordinator,
    TaskToken,
    TokenState,
    task_token_guard,
)

WAIT = 10.0
started: set[int] = set()
_lock = threading.Lock()


@task_token_guard("unstarted.body", tags={"hash_policy": "none", "weight": "light"})
def body(i: int) -> int:
    with _lock:
        started.add(i)
    return i


def test_drain_never_kills_a_body_that_started() -> None:
    started.clear()
    everything = []
    with OperationsCoordinator(cores=2) as coordinator:
        for round_ in range(40):
            base = round_ * 200
            tokens = [body(base + i) for i in range(200)]
            everything.extend(tokens)
            drainer = threading.Thread(target=coordinator.drain)
            drainer.start()
            drainer.join(WAIT)
            for token in tokens:
                token.exception(WAIT)  # settled, whatever the outcome
    with _lock:
        ran = set(started)
    assert ran  # some calls ran (the others were drained)
    for token in everything:
        i = token.args[0]
        if i in ran:
            assert token.state is TokenState.COMPLETED, f"call {i} ran but ended {token.state}"


def test_closing_map_never_kills_a_body_that_started() -> None:
    started.clear()
    with OperationsCoordinator(cores=2) as coordinator:
        results = coordinator.map(body, range(10_000, 12_000), tags={"hash_policy": "none"})
        for _ in range(5):
            next(results)
        close = getattr(results, "close")  # noqa: B009 - map returns a generator
        close()
        tokens = coordinator.in_flight()
        for token in tokens:
            token.exception(WAIT)
        history = coordinator.recent_executions(5000)
    with _lock:
        ran = set(started)
    killed_after_running = [
        r for r in history if r.state == TokenState.KILLED.value and r.duration is not None
    ]
    assert not killed_after_running, killed_after_running[:3]
    assert ran  # the map did run some calls


def test_a_started_token_is_not_killed_by_drain_nor_by_an_unstarted_kill() -> None:
    held: list[TaskToken[Any]] = []

    class Starter(ExecutorBackend):
        """Starts each token at once (set_running) and leaves its outcome to the test."""

        def __init__(self, domain: ExecutorDomain) -> None:
            pass

        def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
            for token in tokens:
                assert token.set_running()
                held.append(token)

        def shutdown(self, timeout: float) -> None:
            for token in held:
                token.kill("shut down")

        def stats(self) -> ExecutorStats:
            return ExecutorStats(0, len(held), 0, True, {})

    class Factory:
        name = "thread"

        def __call__(self, domain: ExecutorDomain) -> Starter:
            return Starter(domain)

    with OperationsCoordinator(cores=1, executor=Factory()) as coordinator:
        token = body(99)
        assert token.state is TokenState.EXECUTING
        assert coordinator.drain() == 0
        assert token._kill_unstarted("late") is False
        assert token.state is TokenState.EXECUTING
        token.set_result(99)
        assert token.get(0) == 99
