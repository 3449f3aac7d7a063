"""The executor interface: the registry, the ``tokengate_register_executors`` hook, the
``executor`` tag and ``OperationsCoordinator(executor=...)``."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tokengate.core import (
    ExecutorBackend,
    ExecutorDomain,
    ExecutorRegistry,
    ExecutorStats,
    TagValidationError,
    TaskToken,
    hookimpl,
    plugin_manager,
    task_token_guard,
)
from tokengate.core._guard import get_operation_plan

WAIT = 30.0
PluginRegistrar = Callable[[object, str], str]


class InlineThreadBackend(ExecutorBackend):
    """One thread per batch; records what it was given (a backend written for the tests)."""

    def __init__(self, domain: ExecutorDomain) -> None:
        self.domain = domain
        self.batches: list[int] = []
        self.threads: list[threading.Thread] = []
        self.shut = False

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        self.batches.append(len(tokens))
        batch = list(tokens)

        def run() -> None:
            for token in batch:
                if not token.set_running():
                    continue
                try:
                    result = token.func(*token.args, **token.kwargs)
                except BaseException as exc:
                    token.set_exception(exc)
                else:
                    token.set_result(result)

        thread = threading.Thread(target=run, name=f"inline-core{self.domain.core_id}")
        self.threads.append(thread)
        thread.start()

    def shutdown(self, timeout: float) -> None:
        self.shut = True
        for thread in self.threads:
            thread.join(timeout)

    def stats(self) -> ExecutorStats:
        return ExecutorStats(workers=len(self.threads), busy=0, queued=0)


class InlinePlugin:
    @hookimpl
    def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.register("Inline", InlineThreadBackend)
        registry.register("thread", InlineThreadBackend)  # taken by the core: ignored


# --------------------------------------------------------------------------- the registry
def test_builtin_executors_are_registered_first_by_reference() -> None:
    executors = plugin_manager().state().executors
    assert {"thread", "process"} <= set(executors)
    registry = ExecutorRegistry()
    registry.register("lazy", "tokengate.core.conformance:square")
    factory = registry.get("LAZY")
    assert callable(factory)
    assert registry.get("lazy") is factory  # resolved once


def test_registry_rejects_bad_names_and_factories() -> None:
    registry = ExecutorRegistry()
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register("  ", InlineThreadBackend)
    with pytest.raises(ValueError, match="reserved"):
        registry.register("Auto", InlineThreadBackend)
    with pytest.raises(ValueError, match="callable"):
        registry.register("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"package\.module:Name"):
        registry.register("x", "no-colon-here")
    registry.register("lazy", "tokengate.core.conformance:does_not_exist")
    with pytest.raises(ImportError, match="lazy"):
        registry.get("lazy")
    with pytest.raises(KeyError, match="registered: lazy"):
        registry.get("missing")
    assert "LAZY" in registry
    assert registry.names() == ("lazy",)


def test_the_hook_registers_a_plugin_executor(register_plugin: PluginRegistrar) -> None:
    register_plugin(InlinePlugin(), "inline-executor")
    executors = plugin_manager().state().executors
    assert executors.get("inline") is InlineThreadBackend
    assert executors.get("thread") is not InlineThreadBackend  # the core's name stays its own


# --------------------------------------------------------------------------- the tag
def test_executor_tag_takes_registered_names(register_plugin: PluginRegistrar) -> None:
    def body() -> None:
        return None

    for name in ("thread", "PROCESS", "auto"):
        plan = get_operation_plan(task_token_guard(tags={"executor": name})(body))
        assert plan is not None
        assert plan.executor == name.lower()
    plan = get_operation_plan(task_token_guard()(body))
    assert plan is not None
    assert plan.executor is None
    with pytest.raises(TagValidationError, match=r"not a registered executor.*thread"):
        task_token_guard(tags={"executor": "inline"})(body)
    register_plugin(InlinePlugin(), "inline-executor")
    plan = get_operation_plan(task_token_guard(tags={"executor": "inline"})(body))
    assert plan is not None
    assert plan.executor == "inline"


def test_process_pool_is_an_alias_of_executor_process() -> None:
    def body() -> None:
        return None

    plan = get_operation_plan(task_token_guard(tags={"process_pool": True})(body))
    assert plan is not None
    assert plan.executor == "process"
    assert plan.process
    plan = get_operation_plan(
        task_token_guard(tags={"process_pool": True, "executor": "process"})(body)
    )
    assert plan is not None
    assert plan.executor == "process"
    with pytest.raises(TagValidationError, match="process_pool=True means executor 'process'"):
        task_token_guard(tags={"process_pool": True, "executor": "thread"})(body)


def test_storage_speed_forces_threads_with_a_warning() -> None:
    def body() -> None:
        return None

    with pytest.warns(UserWarning, match="storage_speed with executor='process' runs in threads"):
        decorated = task_token_guard(tags={"storage_speed": "slow", "executor": "process"})(body)
    plan = get_operation_plan(decorated)
    assert plan is not None
    assert plan.executor == "thread"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = get_operation_plan(
            task_token_guard(tags={"storage_speed": "slow", "executor": "thread"})(body)
        )
    assert plan is not None
    assert plan.executor == "thread"
