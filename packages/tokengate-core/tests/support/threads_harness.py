"""Drive a ``ThreadExecutor`` directly with tokens of a real, started coordinator.

The executor receives ``ADMITTED`` tokens; this harness makes them the way the coordinator's
router does (one token per call, registered in the coordinator's token table so that its
stop ends them) and hands them to the executor under test, without the coordinator's own
workers. Kept in one place because it reaches into the token's construction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken, TokenState
from tokengate.core._executors import ExecutorDomain
from tokengate.core._guard import get_operation_plan
from tokengate.core._threads import ThreadExecutor

_SEQ = itertools.count(10_000_000)


class Harness:
    """A coordinator (started, idle) and thread executors for some of its core domains."""

    def __init__(self, coordinator: OperationsCoordinator) -> None:
        self.coordinator = coordinator
        self.executors: dict[int, ThreadExecutor] = {}

    def executor(self, core: int = 1) -> ThreadExecutor:
        """The executor of ``core`` (made on first use)."""
        executor = self.executors.get(core)
        if executor is None:
            coord = self.coordinator
            executor = self.executors[core] = ThreadExecutor(
                ExecutorDomain(
                    core_id=core,
                    cores=coord.cores,
                    cpu=None,
                    config=coord.config,
                    coordinator_name=coord.name,
                )
            )
        return executor

    def token(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskToken[Any]:
        """An ``ADMITTED`` token of the decorated ``fn`` (not yet submitted)."""
        plan = get_operation_plan(fn)
        assert plan is not None, f"{fn!r} is not decorated with task_token_guard"
        coord = self.coordinator
        token: TaskToken[Any] = TaskToken(plan, args, kwargs, coord, next(_SEQ))
        token._tstate = TokenState.ADMITTED
        coord._tokens[token.seq] = token
        return token

    def submit(
        self, fn: Callable[..., Any], *args: Any, core: int = 1, **kwargs: Any
    ) -> TaskToken[Any]:
        """Make a token of ``fn(*args, **kwargs)`` and submit it to ``core``'s executor."""
        token = self.token(fn, *args, **kwargs)
        token._core_id = core
        self.executor(core).submit([token])
        return token

    def shutdown(self, timeout: float = 10.0) -> None:
        for executor in self.executors.values():
            executor.shutdown(timeout)


@contextmanager
def harness(**settings: Any) -> Iterator[Harness]:
    """A started coordinator with ``settings`` and a harness on it; everything is shut down
    (executors first, then the coordinator) on exit."""
    settings.setdefault("stop_timeout", 20)
    coord = OperationsCoordinator(**settings).start()
    made = Harness(coord)
    try:
        yield made
    finally:
        made.shutdown()
        coord.stop(timeout=20)


def time_out(token: TaskToken[Any], limit: float = 0.01) -> bool:
    """End ``token`` TIMEOUT, as its deadline watcher would."""
    return token._timeout(limit)
