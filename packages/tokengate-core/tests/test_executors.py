"""The executor interface: the registry, the ``tokengate_register_executors`` hook, the
``executor`` tag and ``OperationsCoordinator(executor=...)``."""

from __future__ import annotations

import concurrent.futures
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

import pytest

from tokengate.core import (
    ConfigurationError,
    ExecutorBackend,
    ExecutorDomain,
    ExecutorRegistry,
    ExecutorStats,
    OperationInfo,
    OperationsCoordinator,
    TagValidationError,
    TaskToken,
    TokenExtension,
    hookimpl,
    plugin_manager,
    run_token,
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


# --------------------------------------------------------------------------- end to end
class RecordingBackend(ExecutorBackend):
    """Runs each batch on a thread of its own with ``run_token``; records batches, cancels
    and its shutdown (a backend written only from the public interface)."""

    def __init__(self, domain: ExecutorDomain) -> None:
        self.domain = domain
        self.batches: list[int] = []
        self.cancelled: list[str] = []
        self.threads: list[threading.Thread] = []
        self.shut = False

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        batch = list(tokens)
        self.batches.append(len(batch))

        def run() -> None:
            for token in batch:
                run_token(token)

        thread = threading.Thread(target=run, name=f"recording-core{self.domain.core_id}")
        self.threads.append(thread)
        thread.start()

    def cancel(self, token: TaskToken[Any]) -> None:
        self.cancelled.append(token.token_id)

    def shutdown(self, timeout: float) -> None:
        self.shut = True
        for thread in self.threads:
            thread.join(timeout)

    def stats(self) -> ExecutorStats:
        return ExecutorStats(workers=len(self.threads), busy=0, queued=0, details={"tag": 1})


class RecordingFactory:
    """A factory object: ``name`` and ``cores`` are read by the coordinator."""

    name = "Recording"

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores
        self.made: list[RecordingBackend] = []

    def __call__(self, domain: ExecutorDomain) -> RecordingBackend:
        backend = RecordingBackend(domain)
        self.made.append(backend)
        return backend


def test_a_factory_object_is_the_default_executor_and_sizes_the_coordinator() -> None:
    factory = RecordingFactory(cores=3)

    @task_token_guard("exec.default", tags={"hash_policy": "none"})
    def where() -> str:
        return threading.current_thread().name

    with OperationsCoordinator(executor=factory) as coordinator:
        assert coordinator.cores == 3
        assert coordinator.executor == "recording"
        assert all(where().get(WAIT).startswith("recording-core") for _ in range(6))
        stats = coordinator.stats()
        made = {core.core_id for core in stats.cores if "recording" in core.executors}
    assert made == {backend.domain.core_id for backend in factory.made}
    assert all(backend.shut for backend in factory.made)


def test_the_executor_tag_reaches_a_factory_named_like_it(
    register_plugin: PluginRegistrar,
) -> None:
    class Plugin:
        @hookimpl
        def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
            registry.register("recording", RecordingFactory())

    register_plugin(Plugin(), "recording-executor")
    own = RecordingFactory()

    @task_token_guard("exec.tagged", tags={"executor": "recording", "weight": "heavy"})
    def tagged(x: int) -> int:
        return x + 1

    @task_token_guard("exec.plain", tags={"weight": "heavy"})
    def plain() -> str:
        return threading.current_thread().name

    with OperationsCoordinator(cores=2, executor="thread"):
        assert tagged(1).get(WAIT) == 2  # the plugin's factory
        assert not plain().get(WAIT).startswith("recording")  # the default stays threads
    with OperationsCoordinator(cores=2, executor=own) as coordinator:
        assert tagged(2).get(WAIT) == 3  # this coordinator's own object under that name
        assert coordinator.backend("recording", 1) is own.made[0]


def test_held_tokens_reach_each_backend_in_one_batch_and_kills_are_cancelled() -> None:
    factory = RecordingFactory()
    release = threading.Event()

    @task_token_guard("exec.batched", tags={"weight": "heavy", "hash_policy": "none"})
    def batched(x: int) -> int:
        release.wait(WAIT)
        return x

    with OperationsCoordinator(cores=2, executor=factory) as coordinator:
        coordinator.pause()
        tokens = [batched(i) for i in range(10)]
        coordinator.resume()
        backend = factory.made[0]
        assert backend.batches == [10]  # resume hands the held tokens over at once
        victim = tokens[-1]
        assert victim.kill("not needed")
        release.set()
        assert [t.get(WAIT) for t in tokens[:-1]] == list(range(9))
    assert backend.cancelled == [victim.token_id]


def test_bad_executor_settings_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(ConfigurationError, match=r"executor 'gpu' is not registered.*thread"):
        OperationsCoordinator(executor="gpu")
    with pytest.raises(ConfigurationError, match="factory object"):
        OperationsCoordinator(executor=42)  # type: ignore[arg-type]
    bad = RecordingFactory(cores=0)
    with pytest.raises(ConfigurationError, match="suggests cores=0"):
        OperationsCoordinator(executor=bad)


def test_process_pool_tokens_run_on_the_process_executor(
    coordinator_factory: Callable[..., OperationsCoordinator],
) -> None:
    import os

    from core_procfuncs import whoami

    coordinator_factory(cores=1)
    by_tag = task_token_guard("exec.proc.tag", tags={"executor": "process"})(whoami)
    by_alias = task_token_guard("exec.proc.alias", tags={"process_pool": True})(whoami)
    pids = {by_tag().get(60), by_alias().get(60)}
    assert os.getpid() not in pids
    assert len(pids) == 1  # one core domain, one process executor


# --------------------------------------------------------------------------- the token surface
def test_tokens_work_with_concurrent_futures_wait_and_as_completed() -> None:
    gate = threading.Event()

    @task_token_guard("exec.cf", tags={"hash_policy": "none"})
    def value(x: int, hold: bool) -> int:
        if hold:
            gate.wait(WAIT)
        if x < 0:
            raise ValueError(x)
        return x

    def futures(*tokens: TaskToken[int]) -> list[Future[int]]:
        # tokens are not Future subclasses; concurrent.futures only needs what they provide
        return cast("list[Future[int]]", list(tokens))

    with OperationsCoordinator(cores=2, workers_per_core=2):
        quick = [value(i, False) for i in range(5)]
        slow = value(99, True)
        done, pending = concurrent.futures.wait(
            futures(*quick, slow), timeout=WAIT, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done
        assert cast(object, slow) in pending
        done, pending = concurrent.futures.wait(futures(*quick), timeout=WAIT)
        assert done == set(futures(*quick))
        assert not pending
        failing = value(-1, False)
        done, pending = concurrent.futures.wait(
            futures(failing, slow), timeout=WAIT, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        assert cast(object, failing) in done
        assert cast(object, slow) in pending
        gate.set()
        finished = concurrent.futures.as_completed(futures(*quick, slow), timeout=WAIT)
        assert sorted(t.result() for t in finished) == [0, 1, 2, 3, 4, 99]


def test_routing_stamps_are_read_only(coordinator: OperationsCoordinator) -> None:
    @task_token_guard("exec.stamps")
    def body() -> int:
        return 1

    token = body()
    assert token.get(WAIT) == 1
    for name in ("core_id", "worker_id", "conductor_seed", "sticky_key"):
        with pytest.raises(AttributeError):
            setattr(token, name, 3)
    assert token.tags["sticky_core"] == token.core_id


def test_extensions_keep_their_own_state(register_plugin: PluginRegistrar) -> None:
    class Remember(TokenExtension):
        def __init__(self, label: str) -> None:
            self.label = label

        def on_create(self, token: TaskToken[Any]) -> None:
            self.set_state(token, self.label)

        def after_execute(self, token: TaskToken[Any], state: object) -> None:
            seen.append((self.label, self.get_state(token)))

    seen: list[tuple[str, object]] = []

    class Plugin:
        def __init__(self, label: str) -> None:
            self.extension = Remember(label)

        @hookimpl
        def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
            return self.extension if operation.operation_type == "exec.state" else None

    register_plugin(Plugin("ext-0"), "remember-a")
    register_plugin(Plugin("ext-1"), "remember-b")

    @task_token_guard("exec.state")
    def body() -> int:
        return 1

    with OperationsCoordinator(cores=1):
        assert body().get(WAIT) == 1
    assert sorted(seen) == [("ext-0", "ext-0"), ("ext-1", "ext-1")]
