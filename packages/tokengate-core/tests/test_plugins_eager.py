"""Eager mode: a decorated call runs inline, in the caller's thread, and returns a finished
token; the coordinator is real (routing, lifecycle hooks, leak check)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, TokenState, plugin_manager, task_token_guard
from tokengate.core.plugin import Plugin, hookimpl
from tokengate.core.testing import EAGER_EXECUTOR, PluginRegistrar, eager_coordinator


@task_token_guard("eager.where")
def where(x: int) -> tuple[str, int]:
    return threading.current_thread().name, x


@task_token_guard("eager.boom")
def boom() -> None:
    raise ValueError("boom")


def test_calls_run_inline_in_the_callers_thread(
    tokengate_eager_coordinator: OperationsCoordinator,
) -> None:
    me = threading.current_thread().name
    tokens = [where(i) for i in range(5)]
    assert [t.state for t in tokens] == [TokenState.COMPLETED] * 5  # done before returning
    assert [t.get(timeout=0) for t in tokens] == [(me, i) for i in range(5)]
    failed = boom()
    assert failed.state is TokenState.FAILED
    assert isinstance(failed.exception(timeout=0), ValueError)


def test_lifecycle_hooks_run_around_each_eager_call(tokengate_plugin: PluginRegistrar) -> None:
    seen: list[tuple[str, str]] = []

    class Recorder(Plugin):
        @hookimpl
        def tokengate_token_started(self, token: Any) -> None:
            seen.append(("started", threading.current_thread().name))

        @hookimpl
        def tokengate_token_finished(self, token: Any) -> None:
            seen.append(("finished", threading.current_thread().name))

    tokengate_plugin(Recorder(), "eager-recorder")
    me = threading.current_thread().name
    with eager_coordinator() as coordinator:
        assert where(1).get(timeout=0) == (me, 1)
        assert coordinator.stats().in_flight == 0
    assert seen == [("started", me), ("finished", me)]


def test_the_eager_executor_is_registered_through_the_hook() -> None:
    with eager_coordinator():
        assert EAGER_EXECUTOR in plugin_manager().executors()
        info = {p.name: p for p in plugin_manager().plugins()}["tokengate.core.testing.eager"]
        assert info.hooks == ("tokengate_register_executors",)


@pytest.mark.tokengate(cores=3)
def test_eager_settings_come_from_the_marker(
    tokengate_eager_coordinator: OperationsCoordinator,
) -> None:
    assert tokengate_eager_coordinator.config.cores == 3
    assert tokengate_eager_coordinator.config.executor == EAGER_EXECUTOR
    assert where(2).get(timeout=0) == (threading.current_thread().name, 2)


def test_a_conductor_lead_and_its_child_run_inline_in_one_domain(
    tokengate_eager_coordinator: OperationsCoordinator,
) -> None:
    pytest.importorskip("tokengate.conductor")
    from tokengate.conductor import get_active_seed

    @task_token_guard("eager.child")
    def child() -> str | None:
        return get_active_seed()

    @task_token_guard("eager.lead", tags={"external_calls": ["eager.child"]})
    def lead() -> tuple[str | None, str | None, str]:
        return get_active_seed(), child().get(timeout=0), threading.current_thread().name

    token = lead()
    seed, child_seed, thread = token.get(timeout=0)
    assert seed is not None
    assert child_seed == seed == token.conductor_seed
    assert thread == threading.current_thread().name
