"""task_token_guard: decoration rules, the no-coordinator error and the compiled hot path."""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import pytest

from tokengate.core import (
    CoordinatorNotRunningError,
    OperationsCoordinator,
    TaskToken,
    TokenGateError,
    TokenState,
    current_coordinator,
    hookimpl,
    task_token_guard,
)
from tokengate.core._guard import get_operation_plan

WAIT = 10.0

PluginRegistrar = Callable[[object, str], str]


def add(a: int, b: int = 10, *, scale: int = 1) -> int:
    """Add two numbers and scale."""
    return (a + b) * scale


guarded_add = task_token_guard(operation_type="guard.add")(add)


def test_decoration_keeps_the_function_identity() -> None:
    assert guarded_add.__name__ == "add"
    assert guarded_add.__qualname__ == add.__qualname__
    assert guarded_add.__doc__ == add.__doc__
    assert guarded_add.__wrapped__ is add
    assert inspect.signature(guarded_add) == inspect.signature(add)
    plan = get_operation_plan(guarded_add)
    assert plan is not None
    assert plan.operation_type == "guard.add"
    assert get_operation_plan(add) is None


def test_calls_return_tokens_at_once_and_pass_arguments(
    coordinator: OperationsCoordinator,
) -> None:
    gate = threading.Event()

    @task_token_guard()
    def blocked(value: int) -> int:
        gate.wait(WAIT)
        return value

    try:
        token = blocked(9)
        assert isinstance(token, TaskToken)
        assert not token.done()  # returned before the body could finish
    finally:
        gate.set()
    assert token.get(WAIT) == 9
    assert guarded_add(1).get(WAIT) == 11
    assert guarded_add(1, 2, scale=3).get(WAIT) == 9
    assert guarded_add(a=2, b=3).get(WAIT) == 5


def test_methods_can_be_decorated(coordinator: OperationsCoordinator) -> None:
    class Counter:
        def __init__(self) -> None:
            self.base = 100

        @task_token_guard()
        def plus(self, n: int) -> int:
            return self.base + n

    counter = Counter()
    assert counter.plus(5).get(WAIT) == 105
    assert counter.plus(5).operation_type.endswith("Counter.plus")


async def _coroutine() -> int:
    return 1


async def _agen() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    "target",
    [_coroutine, _agen, functools.partial(_coroutine), 42, "text", int],
    ids=["coroutine", "async-generator", "partial-coroutine", "int", "str", "class"],
)
def test_async_and_non_callables_are_refused_at_decoration(target: Any) -> None:
    with pytest.raises(TypeError):
        task_token_guard()(target)


def test_async_refusal_explains() -> None:
    with pytest.raises(TypeError, match="async"):
        task_token_guard()(_coroutine)


def test_decorator_without_parentheses_is_explained() -> None:
    with pytest.raises(TypeError, match="parentheses"):
        task_token_guard(add)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", 3])
def test_bad_operation_type(bad: Any) -> None:
    with pytest.raises(TypeError, match="operation_type"):
        task_token_guard(operation_type=bad)


def test_no_running_coordinator_raises_instead_of_hanging() -> None:
    assert current_coordinator() is None, "another test left a coordinator running"
    with pytest.raises(CoordinatorNotRunningError, match="OperationsCoordinator") as info:
        guarded_add(1)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, TokenGateError)
    assert "guard.add" in str(info.value)


def test_calls_after_stop_raise(coordinator_factory: Callable[..., OperationsCoordinator]) -> None:
    coord = coordinator_factory(cores=2, workers_per_core=1)
    assert guarded_add(1).get(WAIT) == 11
    coord.stop()
    with pytest.raises(CoordinatorNotRunningError):
        guarded_add(1)


def test_storage_speed_with_process_pool_warns_at_the_decoration_site() -> None:
    def io_bound() -> None:
        return None

    with pytest.warns(UserWarning, match="storage_speed") as record:
        decorated = task_token_guard(tags={"storage_speed": "slow", "process_pool": True})(io_bound)
    assert record[0].filename == __file__, "the warning must point at the decorating line"
    plan = get_operation_plan(decorated)
    assert plan is not None
    assert plan.process is False  # storage tiers cap threads: it runs in threads


def test_decisions_are_compiled_once_per_operation(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    calls: list[str] = []

    class Classifier:
        @hookimpl
        def tokengate_classify_weight(self, operation_type: str) -> None:
            calls.append(operation_type)

    register_plugin(Classifier(), "test-guard-classifier")

    @task_token_guard(operation_type="guard.compiled")
    def compiled(x: int) -> int:
        return x

    assert calls == ["guard.compiled"]
    tokens = [compiled(i) for i in range(50)]
    assert [t.get(WAIT) for t in tokens] == list(range(50))
    assert calls == ["guard.compiled"], "the weight hook ran again on a call"


class _Lifecycle:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _note(self, kind: str, token: TaskToken[Any]) -> None:
        with self.lock:
            self.events.append((kind, token.token_id))

    @hookimpl
    def tokengate_token_created(self, token: TaskToken[Any]) -> None:
        self._note("created", token)

    @hookimpl
    def tokengate_token_started(self, token: TaskToken[Any]) -> None:
        self._note("started", token)

    @hookimpl
    def tokengate_token_finished(self, token: TaskToken[Any]) -> None:
        self._note("finished", token)


def test_a_call_does_no_pluggy_dispatch_and_no_pydantic_validation(
    register_plugin: PluginRegistrar,
) -> None:
    """Even with lifecycle plugins registered, the hot path (call → token → worker → result)
    runs no pluggy and no pydantic code: both were consulted at decoration."""
    lifecycle = _Lifecycle()
    register_plugin(lifecycle, "test-guard-lifecycle")

    @task_token_guard(operation_type="guard.hot", tags={"weight": "light", "timeout": 60})
    def hot(x: int) -> int:
        return x + 1

    offenders: list[str] = []
    lock = threading.Lock()

    def profiler(frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if module.startswith(("pluggy", "pydantic")):
            with lock:
                offenders.append(f"{module}.{frame.f_code.co_name}")

    coord = OperationsCoordinator(cores=3, workers_per_core=2)
    threading.setprofile(profiler)  # worker threads started from now on are profiled
    try:
        coord.start()
        threading.setprofile(None)
        sys.setprofile(profiler)
        try:
            tokens = [hot(i) for i in range(200)]
            results = [t.get(WAIT) for t in tokens]
        finally:
            sys.setprofile(None)
    finally:
        threading.setprofile(None)
        coord.stop()
    assert results == [i + 1 for i in range(200)]
    assert offenders == [], f"hot path called {sorted(set(offenders))[:10]}"
    kinds = [kind for kind, _ in lifecycle.events]
    assert kinds.count("created") == kinds.count("started") == kinds.count("finished") == 200


def test_lifecycle_hook_wrappers_still_work(register_plugin: PluginRegistrar) -> None:
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def tokengate_token_created(self, token: TaskToken[Any]) -> Any:
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    register_plugin(Wrapper(), "test-guard-wrapper")

    @task_token_guard(operation_type="guard.wrapped")
    def wrapped() -> int:
        return 1

    with OperationsCoordinator(cores=2, workers_per_core=1):
        token = wrapped()
        assert token.get(WAIT) == 1
    assert seen == ["before", "after"]
    assert token.state is TokenState.COMPLETED


def test_decoration_does_not_need_a_coordinator() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @task_token_guard(operation_type="guard.offline", tags={"weight": "heavy"})
        def offline() -> None:
            return None

    plan = get_operation_plan(offline)
    assert plan is not None
    assert plan.weight.value == "heavy"
