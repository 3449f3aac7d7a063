"""The blocking-IO workload (``tokengate bench --io``).

``calls`` calls that each sleep ``sleep`` seconds (a stand-in for a database or HTTP call),
submitted at once from an event loop and awaited; in the *mixed* variant every other call is
one of the seed workload's CPU-bound bodies instead. Three sides run the same calls in one
process, alternating (the order rotates every round):

* ``tokengate`` — a default :class:`~tokengate.core.OperationsCoordinator`, tokens gathered;
* ``anyio`` — ``anyio.to_thread.run_sync`` with its default limiter (40 threads);
* ``run_in_executor`` — ``loop.run_in_executor(None, ...)`` (the loop's default executor).

The figure is throughput (calls per second of the submit-and-await span); each side's
median over the rounds is compared.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from tokengate.core import OperationsCoordinator, task_token_guard

__all__ = ("IO_SIDES", "IoResult", "IoSide", "io_call_body", "run_io_workload")

#: The sides, in the order of the first round.
IO_SIDES = ("tokengate", "anyio", "run_in_executor")


def io_call_body(index: int, seconds: float) -> int:
    """One blocking call: sleeps ``seconds`` and returns ``index``."""
    time.sleep(seconds)
    return index


io_call = task_token_guard("bench.io_call")(io_call_body)


@dataclass(frozen=True, slots=True)
class IoSide:
    """One side's rounds.

    Attributes:
        name: ``tokengate``, ``anyio`` or ``run_in_executor``.
        seconds: elapsed time of each round (submission to the last result).
        throughput: calls per second, median over the rounds.
    """

    name: str
    seconds: tuple[float, ...]
    throughput: float


@dataclass(frozen=True, slots=True)
class IoResult:
    """The IO workload's figures, all sides measured in one process.

    Attributes:
        calls: calls per round.
        sleep: seconds each blocking call sleeps.
        mixed: whether every other call was a seed CPU-bound body.
        rounds: rounds per side.
        sides: per side name, its rounds.
        ratios: TokenGate's throughput over each baseline's (``vs_anyio``,
            ``vs_run_in_executor``).
    """

    calls: int
    sleep: float
    mixed: bool
    rounds: int
    sides: Mapping[str, IoSide]
    ratios: Mapping[str, float] = field(default_factory=dict)


_Call = tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]


def _seed_operations() -> Sequence[Any]:
    """The seed workload's operations (wherever the bench package keeps them)."""
    for module in ("tokengate.bench._workload",):
        try:
            found: Sequence[Any] = importlib.import_module(module).OPERATIONS
        except (ImportError, AttributeError):
            continue
        return found
    raise RuntimeError("the seed workload's operations were not found")


def _calls(calls: int, sleep: float, mixed: bool) -> list[_Call]:
    """(decorated, plain body, args) per call; built before anything is timed."""
    operations = _seed_operations() if mixed else ()
    made: list[_Call] = []
    for i in range(calls):
        if mixed and i % 2 == 1:
            op = operations[(i // 2) % len(operations)]
            made.append((op.submit, op.body, tuple(op.arguments(i // 2))))
        else:
            made.append((io_call, io_call_body, (i, sleep)))
    return made


async def _tokengate(calls: list[_Call]) -> None:
    await asyncio.gather(*[submit(*args) for submit, _, args in calls])


async def _anyio(calls: list[_Call]) -> None:
    async with anyio.create_task_group() as group:
        for _, body, args in calls:
            group.start_soon(_to_thread, body, args)


async def _to_thread(body: Callable[..., Any], args: tuple[Any, ...]) -> None:
    await anyio.to_thread.run_sync(body, *args)


async def _run_in_executor(calls: list[_Call]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.run_in_executor(None, body, *args) for _, body, args in calls])


_RUNNERS: dict[str, Callable[[list[_Call]], Awaitable[None]]] = {
    "tokengate": _tokengate,
    "anyio": _anyio,
    "run_in_executor": _run_in_executor,
}


async def _measure(calls: list[_Call], rounds: int, sides: Sequence[str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in sides}
    warm = calls[: max(1, min(len(calls), 64))]
    for name in sides:  # warm-up: threads started, operations measured, imports done
        await _RUNNERS[name](warm)
    for index in range(rounds):
        shift = index % len(sides)
        for name in list(sides[shift:]) + list(sides[:shift]):
            start = time.perf_counter()
            await _RUNNERS[name](calls)
            timings[name].append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
    return timings


def run_io_workload(
    *,
    calls: int = 2000,
    sleep: float = 0.01,
    mixed: bool = False,
    rounds: int = 3,
    sides: Sequence[str] = IO_SIDES,
    coordinator: Mapping[str, Any] | None = None,
) -> IoResult:
    """Run the IO workload on every side in this process and return the figures.

    Args:
        calls: calls per round (2,000 by default).
        sleep: seconds each blocking call sleeps (10 ms by default).
        mixed: make every other call one of the seed workload's CPU-bound bodies.
        rounds: rounds per side; sides alternate, the order rotating every round.
        sides: which of :data:`IO_SIDES` to run (``tokengate`` always runs).
        coordinator: settings of the coordinator (default: the default configuration).

    Raises:
        ValueError: a count is below 1, ``sleep`` is negative or a side is unknown.
    """
    if calls < 1 or rounds < 1:
        raise ValueError(f"calls and rounds must be >= 1, got calls={calls}, rounds={rounds}")
    if sleep < 0:
        raise ValueError(f"sleep must be >= 0 seconds, got {sleep}")
    unknown = [name for name in sides if name not in _RUNNERS]
    if unknown:
        raise ValueError(f"unknown side(s) {unknown}; choose from {', '.join(IO_SIDES)}")
    chosen = ["tokengate", *[name for name in sides if name != "tokengate"]]
    plan = _calls(calls, sleep, mixed)
    with OperationsCoordinator(**dict(coordinator or {})):
        timings = asyncio.run(_measure(plan, rounds, chosen))
    result_sides = {
        name: IoSide(name, tuple(values), calls / statistics.median(values))
        for name, values in timings.items()
    }
    ours = result_sides["tokengate"].throughput
    ratios = {
        f"vs_{name}": ours / side.throughput
        for name, side in result_sides.items()
        if name != "tokengate"
    }
    return IoResult(calls, sleep, mixed, rounds, result_sides, ratios)
