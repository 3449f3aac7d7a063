"""Every hook of the plugin contract, plugin loading, and the meta-tests (every hook has a
test and a docs section)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from tokengate.core import (
    DigestPolicyRegistry,
    HashPolicyRegistry,
    OperationInfo,
    OperationsCoordinator,
    PluginError,
    RoutingPolicy,
    TagRegistry,
    TagValidationError,
    TaskToken,
    TokenExtension,
    TokenState,
    Weight,
    hookimpl,
    plugin_manager,
    task_token_guard,
)
from tokengate.core._hookspecs import HookSpecs
from tokengate.core.plugin import HOOK_NAMES as HOOKS
from tokengate.core.plugin import PluginResultError
from tokengate.hashing import HandlerRegistry, default_registry, make_hashable

WAIT = 10.0
ROOT = Path(__file__).resolve().parents[3]
HOOK_NAMES = sorted(HOOKS)

PluginRegistrar = Callable[[object, str], str]


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def state_of(token: TaskToken[Any]) -> TokenState:
    return token.state


# ------------------------------------------------------- tokengate_classify_weight
class BulkyClassifier:
    @hookimpl
    def tokengate_classify_weight(
        self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
    ) -> Weight | None:
        if operation_type.startswith("plug.bulky"):
            return Weight.HEAVY
        if operation_type.startswith("plug.tiny"):
            return "LIGHT"  # type: ignore[return-value]  # strings are parsed too
        return None  # let the next plugin (finally the built-in) answer


def test_tokengate_classify_weight_first_answer_wins(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    register_plugin(BulkyClassifier(), "test-plug-classifier")

    @task_token_guard(operation_type="plug.bulky.resize")
    def resize() -> int:
        return 1

    @task_token_guard(operation_type="plug.tiny.ping")
    def ping() -> int:
        return 2

    @task_token_guard(operation_type="plug.bulky.tagged", tags={"weight": "light"})
    def tagged() -> int:
        return 3

    @task_token_guard(operation_type="plug.plain")
    def plain() -> int:
        return 4

    token = resize()
    assert token.weight is Weight.HEAVY
    assert token.get(WAIT) == 1
    assert token.core_id == 1
    assert ping().weight is Weight.LIGHT
    assert tagged().weight is Weight.LIGHT  # a weight tag beats every classifier
    assert plain().weight is Weight.MEDIUM  # the built-in answered


def test_tokengate_classify_weight_bad_answer_fails_the_decoration(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    class Nonsense:
        @hookimpl
        def tokengate_classify_weight(self, operation_type: str) -> object:
            return "enormous" if operation_type == "plug.nonsense" else None

    register_plugin(Nonsense(), "test-plug-nonsense")

    with pytest.raises(PluginResultError) as caught:

        @task_token_guard(operation_type="plug.nonsense")
        def nonsense() -> int:
            return 1

    message = str(caught.value)
    assert "plugin 'test-plug-nonsense', hook tokengate_classify_weight" in message
    assert "'enormous'" in message
    assert "plug.nonsense" in message


# ------------------------------------------------------- tokengate_routing_policy
class PinnedPolicy(RoutingPolicy):
    """MEDIUM uses core 3 only; tokens whose first argument is "to-4" go to core 4."""

    chooses_cores = True

    def cores_for(self, weight: Weight, total_cores: int) -> Sequence[int]:
        return (3,) if weight is Weight.MEDIUM else super().cores_for(weight, total_cores)

    def choose_core(self, token: TaskToken[Any], candidate: int, total_cores: int) -> int | None:
        assert candidate == 3
        return 4 if token.args and token.args[0] == "to-4" else None


class PolicyPlugin:
    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        self.asked.append(operation.operation_type)
        return PinnedPolicy() if operation.operation_type.startswith("plug.routed") else None


def test_tokengate_routing_policy_cores_for_and_choose_core(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar, gate: threading.Event
) -> None:
    plugin = PolicyPlugin()
    register_plugin(plugin, "test-plug-policy")

    @task_token_guard(operation_type="plug.routed")
    def routed(where: str) -> str:
        gate.wait(WAIT)
        return where

    @task_token_guard(operation_type="plug.unrouted")
    def unrouted(i: int) -> int:
        return i

    assert plugin.asked == ["plug.routed", "plug.unrouted"]  # once, at decoration
    ordinary = [routed(f"x{i}") for i in range(20)]
    chosen = [routed("to-4") for _ in range(5)]
    assert {t.core_id for t in ordinary} == {3}
    assert {t.core_id for t in chosen} == {4}
    # while they run: a token whose core the policy chose takes no sticky pin
    assert all(t.sticky_key is None for t in chosen)
    assert all(t.sticky_key is not None for t in ordinary)
    assert set(coordinator.sticky_snapshot().values()) == {3}
    gate.set()
    assert [t.get(WAIT) for t in chosen] == ["to-4"] * 5
    assert {unrouted(i).core_id for i in range(20)} <= {2, 3, 4}
    assert plugin.asked == ["plug.routed", "plug.unrouted"], "the hook ran again on a call"


def test_tokengate_routing_policy_must_return_a_policy(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    class Wrong:
        @hookimpl
        def tokengate_routing_policy(self, operation: OperationInfo) -> object:
            return "core 2 please" if operation.operation_type == "plug.wrong_policy" else None

    register_plugin(Wrong(), "test-plug-wrong-policy")

    with pytest.raises(PluginResultError) as caught:

        @task_token_guard(operation_type="plug.wrong_policy")
        def wrong() -> None:
            return None

    assert "plugin 'test-plug-wrong-policy', hook tokengate_routing_policy" in str(caught.value)
    assert "RoutingPolicy" in str(caught.value)


# ------------------------------------------------------- tokengate_register_hash_handlers
class Opaque:
    """Unhashable, with a value the handler exposes."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value


class LazyOpaque(Opaque):
    pass


class HandlerPlugin:
    @hookimpl
    def tokengate_register_hash_handlers(self, registry: HandlerRegistry) -> None:
        registry.register(Opaque, lambda obj: ("Opaque", obj.value))
        registry.register_lazy(
            f"{LazyOpaque.__module__}.{LazyOpaque.__qualname__}",
            lambda obj: ("LazyOpaque", obj.value),
        )


def test_tokengate_register_hash_handlers_apply_at_once(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar, gate: threading.Event
) -> None:
    before = make_hashable(Opaque(3))
    assert before != ("Opaque", 3)
    register_plugin(HandlerPlugin(), "test-plug-handlers")
    assert make_hashable(Opaque(3)) == ("Opaque", 3)
    assert make_hashable(LazyOpaque(5)) == ("LazyOpaque", 5)

    @task_token_guard(operation_type="plug.opaque")
    def use(obj: Opaque) -> int:
        gate.wait(WAIT)
        return obj.value

    tokens = [use(Opaque(3)) for _ in range(5)]
    # while they are in flight: one key, from the handler, pinned to one core
    assert {t.sticky_key for t in tokens} == {("plug.opaque", (("Opaque", 3),))}
    assert len({t.core_id for t in tokens}) == 1
    ((pin, core),) = coordinator.sticky_snapshot().items()
    assert pin.startswith("plug.opaque:")
    assert "Opaque" in pin
    assert core == tokens[0].core_id
    gate.set()
    assert [t.get(WAIT) for t in tokens] == [3] * 5
    plugin_manager().unregister(name="test-plug-handlers")
    assert make_hashable(Opaque(3)) != ("Opaque", 3)
    assert make_hashable(LazyOpaque(5)) != ("LazyOpaque", 5)


def test_handlers_registered_by_hand_survive_plugin_changes(
    register_plugin: PluginRegistrar,
) -> None:
    class Manual:
        __hash__ = None  # type: ignore[assignment]

    registry = default_registry()
    registry.register(Manual, lambda obj: "manual")
    try:
        register_plugin(HandlerPlugin(), "test-plug-handlers-2")
        plugin_manager().unregister(name="test-plug-handlers-2")
        assert make_hashable(Manual()) == "manual"
    finally:
        registry.unregister(Manual)


# ------------------------------------------------------- tokengate_register_hash_policies
class FirstArgPolicy:
    @hookimpl
    def tokengate_register_hash_policies(self, registry: HashPolicyRegistry) -> None:
        def first_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Hashable:
            return args[0] if args else None

        registry.register("by_first", first_arg)


def test_tokengate_register_hash_policies_named_policy_by_tag(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar, gate: threading.Event
) -> None:
    with pytest.raises(TagValidationError, match="by_first"):
        task_token_guard(tags={"hash_policy": "by_first"})(lambda x: x)
    register_plugin(FirstArgPolicy(), "test-plug-hash-policy")

    @task_token_guard(operation_type="plug.by_first", tags={"hash_policy": "BY_FIRST"})
    def keyed(group: str, item: int) -> int:
        gate.wait(WAIT)
        return item

    tokens = [keyed("g1", i) for i in range(6)] + [keyed("g2", i) for i in range(6)]
    assert {t.sticky_key for t in tokens[:6]} == {("plug.by_first", "g1")}
    assert {t.sticky_key for t in tokens[6:]} == {("plug.by_first", "g2")}
    assert len({t.core_id for t in tokens[:6]}) == 1
    assert len({t.core_id for t in tokens[6:]}) == 1
    assert sorted(coordinator.sticky_snapshot()) == ["plug.by_first:'g1'", "plug.by_first:'g2'"]
    gate.set()
    assert [t.get(WAIT) for t in tokens] == list(range(6)) * 2
    assert "by_first" in plugin_manager().state().hash_policies


# ------------------------------------------------------- tokengate_register_digest_policies
class ReverseDigest:
    @hookimpl
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        registry.register("reverse", lambda data: data[::-1].hex())


def test_tokengate_register_digest_policies(register_plugin: PluginRegistrar) -> None:
    register_plugin(ReverseDigest(), "test-plug-digest")
    policies = plugin_manager().state().digest_policies
    assert policies.get("Reverse")(b"\x01\x02") == "0201"
    assert {"full", "short", "fast", "minimal"} <= set(policies.names())  # built-ins too
    if "digest_policy" in plugin_manager().state().tags.specs:  # the conductor owns the tag

        @task_token_guard(tags={"external_calls": ["child"], "digest_policy": "reverse"})
        def lead() -> None:
            return None

        assert lead is not None
    plugin_manager().unregister(name="test-plug-digest")
    assert "reverse" not in plugin_manager().state().digest_policies


# ------------------------------------------------------- tokengate_register_tags
class PriorityTags:
    @hookimpl
    def tokengate_register_tags(self, registry: TagRegistry) -> None:
        registry.add(
            "priority",
            Annotated[int, Field(ge=0, le=9, strict=True)] | None,
            allowed="an int from 0 to 9",
            description="scheduling priority",
            owner="test-priority",
        )

        def urgent_is_heavy(tags: Mapping[str, object]) -> None:
            priority = tags.get("priority")
            if isinstance(priority, int) and priority > 7 and tags.get("weight") is None:
                raise ValueError("priority above 7 needs an explicit weight")

        registry.add_rule("test-priority", urgent_is_heavy)


def test_tokengate_register_tags_plugin_tag_validates(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    def body() -> str:
        return "ok"

    with pytest.raises(TagValidationError, match=r"'priority'.*not a tag"):
        task_token_guard(tags={"priority": 3})(body)
    register_plugin(PriorityTags(), "test-plug-tags")
    decorated = task_token_guard(tags={"priority": 3})(body)
    token = decorated()
    assert token.get(WAIT) == "ok"
    assert token.tags["priority"] == 3
    with pytest.raises(TagValidationError) as info:
        task_token_guard(tags={"priority": 12})(body)
    assert "an int from 0 to 9" in str(info.value)
    assert body.__qualname__ in str(info.value)
    with pytest.raises(TagValidationError, match=r"explicit weight.*test-priority"):
        task_token_guard(tags={"priority": 8})(body)
    assert task_token_guard(tags={"priority": 8, "weight": "heavy"})(body) is not None
    with pytest.raises(TagValidationError, match="did you mean 'priority'"):
        task_token_guard(tags={"priorty": 3})(body)
    plugin_manager().unregister(name="test-plug-tags")
    with pytest.raises(TagValidationError, match="not a tag"):
        task_token_guard(tags={"priority": 3})(body)


def test_a_plugin_cannot_take_over_a_core_tag(register_plugin: PluginRegistrar) -> None:
    class Thief:
        @hookimpl
        def tokengate_register_tags(self, registry: TagRegistry) -> None:
            registry.add("weight", int, owner="thief")

    register_plugin(Thief(), "test-plug-thief")
    errors = plugin_manager().state().errors
    assert any("thief" in e.lower() or "test-plug-thief" in e for e in errors)
    # the core's weight tag still works
    assert task_token_guard(tags={"weight": "heavy"})(lambda: None) is not None


# ------------------------------------------------------- tokengate_token_extension
class Recorder(TokenExtension):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, str]] = []
        self.route_to: int | None = None

    def _note(self, phase: str, token: TaskToken[Any]) -> None:
        with self.lock:
            self.calls.append((phase, token.token_id, threading.current_thread().name))

    def on_create(self, token: TaskToken[Any]) -> None:
        self._note("on_create", token)

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        self._note("route", token)
        return self.route_to

    def before_execute(self, token: TaskToken[Any]) -> object:
        self._note("before_execute", token)
        return ("state-of", token.token_id)

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        assert state == ("state-of", token.token_id)
        self._note("after_execute", token)

    def on_terminal(self, token: TaskToken[Any]) -> None:
        self._note("on_terminal", token)


class ExtensionPlugin:
    def __init__(self, prefix: str, extension: TokenExtension) -> None:
        self.prefix = prefix
        self.extension = extension

    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return self.extension if operation.operation_type.startswith(self.prefix) else None


def test_tokengate_token_extension_every_phase(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    recorder = Recorder()
    recorder.route_to = 4
    register_plugin(ExtensionPlugin("plug.ext.phases", recorder), "test-plug-ext")

    @task_token_guard(operation_type="plug.ext.phases")
    def body(x: int) -> int:
        return x

    token = body(5)
    assert token.get(WAIT) == 5
    assert token.core_id == 4  # route() chose the core
    mine = [(phase, thread) for phase, tid, thread in recorder.calls if tid == token.token_id]
    phases = [phase for phase, _ in mine]
    assert phases.count("on_terminal") == 1
    assert phases.index("on_create") < phases.index("route") < phases.index("before_execute")
    assert "after_execute" in phases
    caller = threading.current_thread().name
    threads = dict(mine)
    assert threads["on_create"] == caller
    assert threads["route"] == caller
    assert threads["before_execute"].startswith(f"{coordinator.name}-core4")
    assert threads["after_execute"] == threads["before_execute"]


def test_tokengate_token_extension_terminal_once_for_killed_tokens(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar, gate: threading.Event
) -> None:
    recorder = Recorder()
    register_plugin(ExtensionPlugin("plug.ext.killed", recorder), "test-plug-ext-killed")

    @task_token_guard(operation_type="plug.ext.killed", tags={"weight": "heavy"})
    def body(event: threading.Event) -> None:
        event.wait(WAIT)

    tokens = [body(gate) for _ in range(coordinator.workers_per_core + 3)]
    for token in tokens:
        token.kill("x")
    gate.set()
    for token in tokens:
        token.exception(WAIT)
    terminal = [tid for phase, tid, _ in recorder.calls if phase == "on_terminal"]
    assert sorted(terminal) == sorted(t.token_id for t in tokens)


class Failing(TokenExtension):
    def __init__(self, phase: str) -> None:
        self.phase = phase

    def on_create(self, token: TaskToken[Any]) -> None:
        if self.phase == "on_create":
            raise RuntimeError("on_create failed")

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        if self.phase == "route":
            raise RuntimeError("route failed")
        return None

    def before_execute(self, token: TaskToken[Any]) -> object:
        if self.phase == "before_execute":
            raise RuntimeError("before_execute failed")
        return None

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        if self.phase == "after_execute":
            raise RuntimeError("after_execute failed")

    def on_terminal(self, token: TaskToken[Any]) -> None:
        if self.phase == "on_terminal":
            raise RuntimeError("on_terminal failed")


def _run_failing(phase: str, register: PluginRegistrar) -> tuple[TaskToken[int], list[int]]:
    runs: list[int] = []
    register(ExtensionPlugin(f"plug.fail.{phase}", Failing(phase)), f"test-plug-fail-{phase}")

    @task_token_guard(operation_type=f"plug.fail.{phase}")
    def body(x: int) -> int:
        runs.append(x)
        return x

    token = body(1)
    token.exception(WAIT)
    return token, runs


def test_tokengate_token_extension_before_execute_failure_fails_without_running(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    token, runs = _run_failing("before_execute", register_plugin)
    assert state_of(token) is TokenState.FAILED
    assert isinstance(token.exception(0), PluginError)
    assert "before_execute failed" in str(token.exception(0))
    assert runs == []


@pytest.mark.parametrize("phase", ["on_create", "route"])
def test_tokengate_token_extension_creation_failures_are_plugin_errors(
    phase: str, coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    token, runs = _run_failing(phase, register_plugin)
    assert state_of(token) is TokenState.FAILED
    assert runs == []
    assert isinstance(token.exception(0), PluginError), repr(token.exception(0))


class _ErrorRecords(logging.Handler):
    """Collects error records of the tokengate loggers; ``seen`` is set on the first one
    whose message mentions ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.ERROR)
        self.needle = needle
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.mark.parametrize("phase", ["after_execute", "on_terminal"])
def test_tokengate_token_extension_late_failures_are_logged(
    phase: str, coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    catcher = _ErrorRecords(phase)
    logger = logging.getLogger("tokengate")
    logger.addHandler(catcher)
    try:
        token, runs = _run_failing(phase, register_plugin)
        # after_execute runs on the worker after the terminal move: wait for its log record
        assert catcher.seen.wait(WAIT), f"the {phase} failure was not logged"
    finally:
        logger.removeHandler(catcher)
    assert state_of(token) is TokenState.COMPLETED
    assert token.get(0) == 1
    assert runs == [1]


def test_tokengate_token_extension_must_return_an_extension(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    class Wrong:
        @hookimpl
        def tokengate_token_extension(self, operation: OperationInfo) -> object:
            return object() if operation.operation_type == "plug.wrong_ext" else None

    register_plugin(Wrong(), "test-plug-wrong-ext")

    with pytest.raises(PluginResultError) as caught:

        @task_token_guard(operation_type="plug.wrong_ext")
        def body() -> None:
            return None

    assert "plugin 'test-plug-wrong-ext', hook tokengate_token_extension" in str(caught.value)
    assert "TokenExtension" in str(caught.value)


# --------------------------------------------------------------------------- token lifecycle hooks
class Lifecycle:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str, TokenState]] = []

    def _note(self, kind: str, token: TaskToken[Any]) -> None:
        with self.lock:
            self.events.append((kind, token.token_id, threading.current_thread().name, token.state))

    @hookimpl
    def tokengate_token_created(self, token: TaskToken[Any]) -> None:
        self._note("created", token)

    @hookimpl
    def tokengate_token_started(self, token: TaskToken[Any]) -> None:
        self._note("started", token)

    @hookimpl
    def tokengate_token_finished(self, token: TaskToken[Any]) -> None:
        self._note("finished", token)
        token.exception()  # a finished hook may read the outcome without waiting on itself


def test_tokengate_token_created_started_finished(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar, gate: threading.Event
) -> None:
    lifecycle = Lifecycle()
    register_plugin(lifecycle, "test-plug-lifecycle")

    @task_token_guard(operation_type="plug.life")
    def body(x: int) -> int:
        return x

    @task_token_guard(operation_type="plug.life.blocked", tags={"weight": "heavy"})
    def blocked(event: threading.Event) -> None:
        event.wait(WAIT)

    token = body(3)
    assert token.get(WAIT) == 3
    blockers = [blocked(gate) for _ in range(coordinator.workers_per_core)]
    never = blocked(gate)  # queued behind the blockers
    never.kill("never started")
    gate.set()
    for t in blockers:
        t.get(WAIT)

    def events_of(t: TaskToken[Any]) -> list[tuple[str, str, TokenState]]:
        return [(k, thread, s) for k, tid, thread, s in lifecycle.events if tid == t.token_id]

    created, started, finished = events_of(token)
    assert created == ("created", threading.current_thread().name, TokenState.CREATED)
    assert started[0] == "started"
    assert started[1].startswith(coordinator.name)
    assert started[2] is TokenState.EXECUTING
    assert finished[0] == "finished"
    assert finished[2] is TokenState.COMPLETED
    assert [k for k, _, _ in events_of(never)] == ["created", "finished"]
    assert events_of(never)[1][2] is TokenState.KILLED


# --------------------------------------------------------------------------- coordinator hooks
class CoordinatorWatcher:
    def __init__(self) -> None:
        self.events: list[tuple[str, OperationsCoordinator, bool]] = []

    @hookimpl
    def tokengate_coordinator_started(self, coordinator: OperationsCoordinator) -> None:
        self.events.append(("started", coordinator, coordinator.running))

    @hookimpl
    def tokengate_coordinator_stopped(self, coordinator: OperationsCoordinator) -> None:
        self.events.append(("stopped", coordinator, coordinator.in_flight() == []))


def test_tokengate_coordinator_started_and_stopped(register_plugin: PluginRegistrar) -> None:
    watcher = CoordinatorWatcher()
    register_plugin(watcher, "test-plug-coordinator")
    coordinator = OperationsCoordinator(cores=2, workers_per_core=1)
    coordinator.start()
    coordinator.start()  # idempotent: no second notification
    coordinator.stop()
    coordinator.stop()
    assert watcher.events == [("started", coordinator, True), ("stopped", coordinator, True)]


def test_a_failing_coordinator_hook_is_isolated(
    register_plugin: PluginRegistrar, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def tokengate_coordinator_started(self, coordinator: OperationsCoordinator) -> None:
            raise RuntimeError("plugin bug")

    register_plugin(Broken(), "test-plug-broken-start")
    with (
        caplog.at_level(logging.ERROR, logger="tokengate.plugins"),
        OperationsCoordinator(cores=2, workers_per_core=1) as coordinator,
    ):
        assert coordinator.running
    assert any("test-plug-broken-start" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- the plugin host
def test_the_builtin_plugin_uses_the_same_hooks() -> None:
    infos = {info.name: info for info in plugin_manager().plugins()}
    builtin = infos["tokengate.core.builtin"]
    assert builtin.distribution == "tokengate-core"
    assert set(builtin.hooks) >= {
        "tokengate_classify_weight",
        "tokengate_routing_policy",
        "tokengate_register_hash_policies",
        "tokengate_register_digest_policies",
        "tokengate_register_tags",
    }


def test_register_and_unregister_errors(register_plugin: PluginRegistrar) -> None:
    host = plugin_manager()
    plugin = BulkyClassifier()
    register_plugin(plugin, "test-plug-dup")
    assert host.has_plugin("test-plug-dup")
    assert host.get_plugin("test-plug-dup") is plugin
    with pytest.raises(ValueError, match=r"test-plug-dup|already"):
        host.register(BulkyClassifier(), name="test-plug-dup")
    with pytest.raises(ValueError, match="no plugin"):
        host.unregister(name="test-plug-missing")
    generation = host.generation
    host.unregister(name="test-plug-dup")
    assert host.generation > generation
    assert not host.has_plugin("test-plug-dup")


def test_plugins_apply_to_operations_decorated_before_them(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    @task_token_guard(operation_type="plug.bulky.early")
    def early() -> None:
        return None

    assert early().weight is Weight.MEDIUM
    register_plugin(BulkyClassifier(), "test-plug-late")

    @task_token_guard(operation_type="plug.bulky.late")
    def late() -> None:
        return None

    assert early().weight is Weight.HEAVY  # from its next call
    assert late().weight is Weight.HEAVY
    plugin_manager().unregister(name="test-plug-late")
    assert early().weight is Weight.MEDIUM
    assert late().weight is Weight.MEDIUM


def test_a_failing_registration_hook_is_reported_not_fatal(
    register_plugin: PluginRegistrar,
) -> None:
    class Broken:
        @hookimpl
        def tokengate_register_hash_policies(self, registry: HashPolicyRegistry) -> None:
            raise RuntimeError("cannot register")

    register_plugin(Broken(), "test-plug-broken-policies")
    state = plugin_manager().state()
    assert any("test-plug-broken-policies" in e for e in state.errors)
    assert "standard" in state.hash_policies  # the others still registered


# --------------------------------------------------------------------------- entry points
def _python(code: str, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


_LIST_PLUGINS = """
    import json
    from tokengate.core import plugin_manager
    host = plugin_manager()
    print(json.dumps({
        "plugins": {p.name: [p.distribution, list(p.hooks)] for p in host.plugins()},
        "errors": list(host.load_errors),
    }))
"""


def test_installed_plugins_are_discovered_with_their_distributions() -> None:
    import importlib.metadata

    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="tokengate")}
    infos = {info.name: info for info in plugin_manager().plugins()}
    errors = plugin_manager().load_errors
    if not installed:
        pytest.skip("no tokengate entry points are installed")
    for name, ep in installed.items():
        dist = ep.dist.name if ep.dist is not None else ""
        if name in infos:
            assert infos[name].distribution == dist
            assert infos[name].hooks, f"plugin {name} implements no hook"
        else:
            assert any(repr(name) in e for e in errors), f"{name} neither loaded nor reported"
    for name in ("conductor", "numeric"):
        if name in installed and name in infos:
            assert infos[name].distribution == f"tokengate-{name}"


def _fake_distribution(tmp_path: Path, *, broken: bool = False) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tg_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            from tokengate.core import hookimpl

            @hookimpl
            def tokengate_classify_weight(operation_type):
                return "heavy" if operation_type == "fake.op" else None
            """
        )
    )
    (site / "tg_broken_plugin.py").write_text("raise ImportError('broken on purpose')\n")
    info = site / "tokengate_fake-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tokengate-fake\nVersion: 1.0\n")
    entries = "[tokengate]\nfake = tg_fake_plugin\n"
    if broken:
        entries += "broken = tg_broken_plugin\n"
    (info / "entry_points.txt").write_text(entries)
    return site


def test_entry_point_discovery_in_group_tokengate(tmp_path: Path) -> None:
    site = _fake_distribution(tmp_path, broken=True)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    result = _python(_LIST_PLUGINS, env={"PYTHONPATH": path})
    assert result["plugins"]["fake"] == ["tokengate-fake", ["tokengate_classify_weight"]]
    assert "tokengate.core.builtin" in result["plugins"]
    assert "broken" not in result["plugins"]
    assert any("broken" in e and "broken on purpose" in e for e in result["errors"])


def test_disable_plugin_autoload(tmp_path: Path) -> None:
    site = _fake_distribution(tmp_path)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    result = _python(
        _LIST_PLUGINS, env={"PYTHONPATH": path, "TOKENGATE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    )
    assert list(result["plugins"]) == ["tokengate.core.builtin"]
    assert result["errors"] == []


# --------------------------------------------------------------------------- meta-tests
def test_every_hookspec_has_a_docstring() -> None:
    assert len(HOOK_NAMES) >= 12
    for name in HOOK_NAMES:
        doc = inspect.getdoc(getattr(HookSpecs, name))
        assert doc, f"{name} has no docstring"


def test_every_hook_has_a_docs_section() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^#{2,3}\s+`?(tokengate_\w+)`?\s*$", text, flags=re.MULTILINE))
    missing = [name for name in HOOK_NAMES if name not in headings]
    assert missing == [], f"docs/plugins.md has no ##/### section for {missing}"
    unknown = headings - set(HOOK_NAMES)
    assert unknown == set(), f"docs/plugins.md documents hooks that do not exist: {unknown}"


def test_every_hook_is_used_in_a_test() -> None:
    test_files = [*ROOT.glob("packages/*/tests/**/*.py"), *ROOT.glob("tests/**/*.py")]
    corpus = "\n".join(path.read_text() for path in test_files)
    missing = [name for name in HOOK_NAMES if f"def {name}(" not in corpus]
    assert missing == [], f"no test implements {missing}"


def _guide() -> str:
    return (ROOT / "docs" / "plugins.md").read_text()


def test_the_plugin_guide_examples_compile() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _guide(), flags=re.DOTALL)
    assert len(blocks) >= 12
    for block in blocks:
        compile(block, "docs/plugins.md", "exec")


def test_the_plugin_guide_hash_handler_example_runs() -> None:
    section = _guide().split("## Registering a custom hash handler", 1)[1]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    code = example + "\nimport json\nprint(json.dumps({'ok': True}))\n"
    assert _python(code, env={"TOKENGATE_DISABLE_PLUGIN_AUTOLOAD": "1"}) == {"ok": True}
