"""``OperationsCoordinator.submit`` / ``map``: undecorated callables, the concurrent.futures way."""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    _calls,
    _plan,
)
from tokengate.core._calls import plan_for

CoordinatorFactory = Callable[..., OperationsCoordinator]


def double(x: int) -> int:
    return 2 * x


def add(x: int, y: int, *, scale: int = 1) -> int:
    return (x + y) * scale


@pytest.fixture
def counted_compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every plan compiled from now on (the real compiler, counted)."""
    calls: list[str] = []
    real = _plan.compile_plan

    @functools.wraps(real)
    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(_calls, "compile_plan", counting)
    return calls


def test_submit_runs_an_undecorated_function_with_args_kwargs_and_tags(
    coordinator: OperationsCoordinator,
) -> None:
    token = coordinator.submit(add, 2, 3, scale=10, tags={"weight": "light"})
    assert isinstance(token, TaskToken)
    assert token.get(timeout=30) == 50
    assert token.state is TokenState.COMPLETED
    assert token.operation_type.endswith("add")


def test_submit_routes_to_the_coordinator_it_is_called_on(
    coordinator_factory: CoordinatorFactory,
) -> None:
    first = coordinator_factory(cores=1)
    second = coordinator_factory(cores=1)  # the current one for plain calls
    token = first.submit(double, 21)
    assert token.get(timeout=30) == 42
    assert first.stats().submitted == 1
    assert second.stats().submitted == 0
    second.stop(timeout=30)
    # `first` still takes calls although it is not the most recently started one.
    assert first.submit(double, 5).get(timeout=30) == 10


def test_tags_are_validated_once_per_function_and_tags(
    coordinator: OperationsCoordinator, counted_compiles: list[str]
) -> None:
    def local(x: int) -> int:  # a fresh function: nothing cached for it yet
        return x + 1

    tokens = [coordinator.submit(local, i, tags={"weight": "light"}) for i in range(50)]
    assert [t.get(timeout=30) for t in tokens] == list(range(1, 51))
    assert len(counted_compiles) == 1
    list(coordinator.map(local, range(20), tags={"weight": "light"}))
    assert len(counted_compiles) == 1  # map reuses the same operation
    coordinator.submit(local, 1, tags={"weight": "heavy"}).get(timeout=30)
    coordinator.submit(local, 1).get(timeout=30)
    assert len(counted_compiles) == 3  # other tags: another operation each
    assert plan_for(local, {"weight": "light"}) is plan_for(local, {"weight": "light"})


def test_lambdas_closures_builtins_and_partials(coordinator: OperationsCoordinator) -> None:
    offset = 7

    def closure(x: int) -> int:
        return x + offset

    assert coordinator.submit(lambda: "hi").get(timeout=30) == "hi"
    assert coordinator.submit(closure, 1).get(timeout=30) == 8
    assert coordinator.submit(sum, [1, 2, 3]).get(timeout=30) == 6
    assert coordinator.submit(functools.partial(add, 1), 2).get(timeout=30) == 3
    assert coordinator.submit(str.upper, "x").get(timeout=30) == "X"


def test_a_failing_call_reraises_from_get(coordinator: OperationsCoordinator) -> None:
    token = coordinator.submit(operator.truediv, 1, 0)
    with pytest.raises(ZeroDivisionError):
        token.get(timeout=30)
    assert token.state is TokenState.FAILED


def test_bad_callables_and_tags_are_clear_errors(coordinator: OperationsCoordinator) -> None:
    with pytest.raises(TypeError, match="callable"):
        coordinator.submit(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        coordinator.map(None, [1])  # type: ignore[arg-type]

    async def coro() -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        coordinator.submit(coro)
    with pytest.raises(TypeError, match="mapping"):
        coordinator.submit(double, 1, tags=["weight"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="weight"):
        coordinator.submit(double, 1, tags={"weight": "hevy"})
    with pytest.raises(ValueError, match="buffersize"):
        coordinator.map(double, [1], buffersize=0)


def test_submit_on_a_stopped_coordinator_is_refused() -> None:
    coord = OperationsCoordinator(cores=1)
    with pytest.raises(RuntimeError, match="not running"):
        coord.submit(double, 1)


def test_map_keeps_the_order_and_zips_iterables(coordinator: OperationsCoordinator) -> None:
    assert list(coordinator.map(double, range(30))) == [2 * i for i in range(30)]
    assert list(coordinator.map(add, [1, 2, 3], [10, 20])) == [11, 22]
    assert list(coordinator.map(pow, [2, 3], [3, 2], buffersize=1)) == [8, 9]
    assert list(coordinator.map(double, [])) == []


def test_map_without_buffersize_submits_everything_at_once(
    coordinator: OperationsCoordinator,
) -> None:
    seen: list[int] = []
    results = coordinator.map(double, _recording(range(10), seen))
    assert seen == list(range(10))  # like Executor.map: the iterable is read at the call
    assert list(results) == [2 * i for i in range(10)]


def _recording(values: range, seen: list[int]) -> Iterator[int]:
    for value in values:
        seen.append(value)
        yield value


def test_map_with_buffersize_reads_lazily_and_bounds_the_look_ahead(
    coordinator: OperationsCoordinator,
) -> None:
    seen: list[int] = []
    results = coordinator.map(double, _recording(range(100), seen), buffersize=3)
    assert seen == [0, 1, 2]
    assert next(results) == 0
    assert seen == [0, 1, 2, 3]  # one more submitted per result taken
    assert next(results) == 2
    assert len(seen) == 5
    assert list(results) == [2 * i for i in range(2, 100)]
    assert len(seen) == 100


def test_map_reads_an_endless_iterable_with_buffersize(
    coordinator: OperationsCoordinator,
) -> None:
    def naturals() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    results = coordinator.map(double, naturals(), buffersize=4)
    assert [next(results) for _ in range(10)] == [2 * i for i in range(10)]
    results.close()  # type: ignore[attr-defined]


def test_closing_map_early_kills_the_calls_not_started(
    coordinator_factory: CoordinatorFactory,
) -> None:
    coord = coordinator_factory(cores=1, workers_per_core=1, max_blocking_threads=1)
    release = threading.Event()
    started: list[int] = []

    def body(i: int) -> int:
        started.append(i)
        if i:
            release.wait(30)
        return i

    coord.pause()  # the eight tokens exist (held) before any of them can run and end
    results = coord.map(body, range(8))
    tokens = sorted(coord.in_flight(), key=lambda t: t.created_at)
    assert len(tokens) == 8
    coord.resume()
    assert next(results) == 0
    # calls 1 and 2 fill the single domain (one blocking slot, max_blocking_threads=1, and
    # the CPU slot, both held by blocked bodies): nothing else can start meanwhile
    deadline = time.monotonic() + 30
    while len(started) < 3:
        assert time.monotonic() < deadline, f"only calls {started} started"
        time.sleep(0.005)
    results.close()  # type: ignore[attr-defined]
    release.set()
    for token in tokens:
        token.exception(30)
        assert token.done()
    killed = [i for i, t in enumerate(tokens) if t.state is TokenState.KILLED]
    ran = [i for i, t in enumerate(tokens) if t.state is TokenState.COMPLETED]
    assert sorted(started) == [0, 1, 2]
    assert ran == [0, 1, 2]  # running bodies finish
    assert killed == [3, 4, 5, 6, 7]  # the calls not started never run
    with pytest.raises(TaskKilledError, match=r"map\(\) was closed"):
        tokens[killed[0]].get(timeout=0)


def test_map_timeout_raises_timeout_error_and_kills_the_calls_not_started(
    coordinator_factory: CoordinatorFactory,
) -> None:
    coord = coordinator_factory(cores=1, workers_per_core=1, max_blocking_threads=1)
    release = threading.Event()
    started: list[int] = []

    def slow(i: int) -> int:
        started.append(i)
        release.wait(30)
        return i

    results = coord.map(slow, range(6), timeout=0.2)
    tokens = sorted(coord.in_flight(), key=lambda t: t.created_at)
    try:
        with pytest.raises(TimeoutError):
            next(results)
    finally:
        release.set()
    for token in tokens:
        token.exception(30)
    killed = [i for i, t in enumerate(tokens) if t.state is TokenState.KILLED]
    assert killed
    assert set(killed).isdisjoint(started)
    assert tokens[0].state is TokenState.COMPLETED  # the call waited for is left alone


def test_submit_from_many_threads(coordinator: OperationsCoordinator) -> None:
    out: list[int] = []
    lock = threading.Lock()

    def caller(base: int) -> None:
        values = [coordinator.submit(add, base, i).get(timeout=30) for i in range(25)]
        with lock:
            out.extend(values)

    threads = [threading.Thread(target=caller, args=(100 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(out) == sorted(100 * k + i for k in range(4) for i in range(25))
