"""``TokenExtension.only_with_state``: the phases after ``on_create`` run only for tokens that
carry extension state; other tokens pay nothing for the extension."""

from __future__ import annotations

import threading
from typing import Any

from tokengate.core import (
    OperationInfo,
    OperationsCoordinator,
    TaskToken,
    TokenExtension,
    hookimpl,
    task_token_guard,
)
from tokengate.core.testing import PluginRegistrar

WAIT = 10.0


class Marking(TokenExtension):
    """Marks tokens whose first argument is ``"mark"``; records every later phase."""

    def __init__(self, *, only_with_state: bool, mark: bool = True) -> None:
        self.only_with_state = only_with_state  # type: ignore[misc]
        self.mark = mark
        self.lock = threading.Lock()
        self.seen: dict[str, set[str]] = {}

    def _note(self, phase: str, token: TaskToken[Any]) -> None:
        with self.lock:
            self.seen.setdefault(phase, set()).add(str(token.args[0]))

    def on_create(self, token: TaskToken[Any]) -> None:
        self._note("on_create", token)
        if self.mark and token.args[0] == "mark":
            self.set_state(token, "marked")

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        self._note("route", token)
        return None

    def before_execute(self, token: TaskToken[Any]) -> object:
        self._note("before_execute", token)
        return self.get_state(token)

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        assert state == self.get_state(token)
        self._note("after_execute", token)

    def on_terminal(self, token: TaskToken[Any]) -> None:
        self._note("on_terminal", token)


class Plugin:
    def __init__(self, prefix: str, extension: TokenExtension) -> None:
        self.prefix = prefix
        self.extension = extension

    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return self.extension if operation.operation_type.startswith(self.prefix) else None


PHASES = ("route", "before_execute", "after_execute", "on_terminal")


def _run(prefix: str) -> None:
    @task_token_guard(operation_type=f"{prefix}.op", tags={"hash_policy": "none"})
    def body(label: str) -> str:
        return label

    tokens = [body(label) for label in ("mark", "plain-1", "plain-2")]
    assert [t.get(WAIT) for t in tokens] == ["mark", "plain-1", "plain-2"]


def test_stateful_extension_runs_only_for_the_tokens_it_marked(
    register_plugin: PluginRegistrar,
) -> None:
    stateful = Marking(only_with_state=True)
    everyone = Marking(only_with_state=False, mark=False)
    register_plugin(Plugin("ext.state.a", stateful), "test-ext-state-a")
    register_plugin(Plugin("ext.state.a", everyone), "test-ext-state-a2")
    with OperationsCoordinator(cores=2):
        _run("ext.state.a")
    assert stateful.seen["on_create"] == {"mark", "plain-1", "plain-2"}
    for phase in PHASES:
        assert stateful.seen[phase] == {"mark"}, phase
        assert everyone.seen[phase] == {"mark", "plain-1", "plain-2"}, phase


def test_tokens_marked_by_another_extension_reach_every_extension(
    register_plugin: PluginRegistrar,
) -> None:
    # ``first`` marks "mark"; ``second`` (only_with_state, marks nothing) still sees that
    # token's phases, because the token carries state: it reads None for itself.
    first = Marking(only_with_state=False)
    second = Marking(only_with_state=True, mark=False)
    register_plugin(Plugin("ext.state.b", first), "test-ext-state-b")
    register_plugin(Plugin("ext.state.b", second), "test-ext-state-b2")
    with OperationsCoordinator(cores=2):
        _run("ext.state.b")
    for phase in PHASES:
        assert second.seen[phase] == {"mark"}, phase


def test_without_the_flag_every_token_sees_every_phase(register_plugin: PluginRegistrar) -> None:
    plain = Marking(only_with_state=False)
    register_plugin(Plugin("ext.state.c", plain), "test-ext-state-c")
    with OperationsCoordinator(cores=2):
        _run("ext.state.c")
    for phase in PHASES:
        assert plain.seen[phase] == {"mark", "plain-1", "plain-2"}, phase
