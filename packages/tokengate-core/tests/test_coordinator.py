"""OperationsCoordinator: configuration, life cycle, current-coordinator rules, introspection
and backpressure."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokengate.core import (
    ConfigurationError,
    CoordinatorConfig,
    CoordinatorNotRunningError,
    CoordinatorStats,
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    current_coordinator,
    task_token_guard,
)
from tokengate.core._threads import ThreadExecutor

WAIT = 10.0

Factory = Callable[..., OperationsCoordinator]


@task_token_guard(operation_type="coord.square")
def square(x: int) -> int:
    return x * x


@task_token_guard(operation_type="coord.fail")
def fail(message: str) -> None:
    raise KeyError(message)


@task_token_guard(operation_type="coord.block_heavy", tags={"weight": "heavy"})
def block_heavy(gate: threading.Event, started: threading.Event | None = None) -> str:
    if started is not None:
        started.set()
    gate.wait(WAIT)
    return "heavy done"


@task_token_guard(operation_type="coord.parent")
def parent(x: int) -> tuple[OperationsCoordinator | None, TaskToken[int]]:
    # returns its child instead of waiting for it: a body that blocks on its own child can
    # deadlock (see test_routing.test_a_child_is_not_queued_behind_the_parent_waiting_for_it)
    return current_coordinator(), square(x)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def state_of(token: Any) -> TokenState:
    state: TokenState = token.state
    return state


def is_running(coordinator: OperationsCoordinator) -> bool:
    """Read through a call so that mypy does not narrow the property between reads."""
    return coordinator.running


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"cores": 0}, "cores"),
        ({"cores": -2}, "cores"),
        ({"cores": True}, "cores"),
        ({"cores": "x"}, "cores"),
        ({"cores": 2.5}, "cores"),
        ({"workers_per_core": 0}, "workers_per_core"),
        ({"workers_per_core": True}, "workers_per_core"),
        ({"mailbox_capacity": 0}, "mailbox_capacity"),
        ({"stop_timeout": 0}, "stop_timeout"),
        ({"pin_cpus": "yes"}, "pin_cpus"),
        ({"history_size": -1}, "history_size"),
        ({"storage_limits": {"slow": 0}}, "storage_limits"),
        ({"storage_limits": {"warp": 3}}, "storage_limits"),
        ({"process_start_method": "fork"}, "process_start_method"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_invalid_settings_raise_configuration_error(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        OperationsCoordinator(**settings)
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_and_keyword_settings_are_exclusive() -> None:
    with pytest.raises(ConfigurationError, match="either"):
        OperationsCoordinator(cores=2, config=CoordinatorConfig(cores=2))


def test_defaults_come_from_the_machine() -> None:
    coord = OperationsCoordinator()
    getaffinity = getattr(os, "sched_getaffinity", None)
    expected = len(getaffinity(0)) if getaffinity is not None else (os.cpu_count() or 1)
    assert coord.cores == expected
    assert coord.workers_per_core == 4
    assert coord.config.mailbox_capacity >= 1  # mailboxes are bounded
    assert coord.config.history_size >= 1
    assert not is_running(coord)


def test_the_config_is_frozen() -> None:
    coord = OperationsCoordinator(cores=2, workers_per_core=3)
    assert coord.config.cores == 2
    assert coord.config.workers_per_core == 3
    with pytest.raises(ValueError, match="frozen"):
        coord.config.cores = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- life cycle
def test_start_and_stop_are_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    coord = OperationsCoordinator(cores=2, workers_per_core=1)
    with caplog.at_level(logging.INFO, logger="tokengate.coordinator"):
        assert coord.start() is coord
        assert coord.start() is coord
        assert is_running(coord)
        assert square(3).get(WAIT) == 9
        coord.stop()
        coord.stop()
    assert not is_running(coord)
    messages = [r.getMessage() for r in caplog.records if r.name == "tokengate.coordinator"]
    assert any("started" in m for m in messages)
    assert any("already running" in m for m in messages)
    assert sum("stopped" in m for m in messages) == 1
    # restartable
    coord.start()
    try:
        assert square(4).get(WAIT) == 16
    finally:
        coord.stop()


def test_stop_shuts_every_worker_thread_down() -> None:
    coord = OperationsCoordinator(cores=3, workers_per_core=2).start()
    assert square(2).get(WAIT) == 4  # threads are made for the domains that get tokens
    prefix = coord.name + "-"
    assert sum(t.name.startswith(prefix) for t in threading.enumerate()) >= 1
    coord.stop()
    assert [t.name for t in threading.enumerate() if t.name.startswith(prefix)] == []


def test_sync_context_manager() -> None:
    with OperationsCoordinator(cores=2, workers_per_core=1) as coord:
        assert is_running(coord)
        assert current_coordinator() is coord
        assert square(5).get(WAIT) == 25
    assert not is_running(coord)
    assert current_coordinator() is None


@pytest.mark.asyncio
async def test_async_context_manager() -> None:
    async with OperationsCoordinator(cores=2, workers_per_core=1) as coord:
        assert is_running(coord)
        assert await square(6) == 36
        results = await asyncio.gather(*(square(i) for i in range(20)))
        assert results == [i * i for i in range(20)]
    assert not is_running(coord)
    with pytest.raises(CoordinatorNotRunningError):
        square(1)


def test_original_usage_sync_main() -> None:
    def main() -> list[int]:
        coordinator = OperationsCoordinator(cores=2, workers_per_core=2)
        coordinator.start()
        tokens = [square(i) for i in range(10)]
        results = [token.get() for token in tokens]
        coordinator.stop()
        return results

    assert main() == [i * i for i in range(10)]
    assert current_coordinator() is None


def test_original_usage_async_main() -> None:
    async def main() -> tuple[int, list[int]]:
        coordinator = OperationsCoordinator(cores=2, workers_per_core=2)
        coordinator.start()
        first = await square(7)
        rest = await asyncio.gather(*(square(i) for i in range(10)))
        coordinator.stop()
        return first, list(rest)

    first, rest = asyncio.run(main())
    assert first == 49
    assert rest == [i * i for i in range(10)]


def test_stop_never_hangs_on_a_running_body(gate: threading.Event) -> None:
    coord = OperationsCoordinator(cores=2, workers_per_core=1).start()
    started = threading.Event()
    running = block_heavy(gate, started)
    assert started.wait(WAIT)
    queued = block_heavy(gate)
    coord.stop(timeout=0.2)
    assert not is_running(coord)
    assert state_of(running) is TokenState.KILLED
    assert state_of(queued) is TokenState.KILLED
    with pytest.raises(TaskKilledError):
        running.get(WAIT)
    assert coord.in_flight() == []


def test_stop_cancel_pending_kills_what_has_not_started(gate: threading.Event) -> None:
    # core 1 saturated: two blocked bodies (one blocking slot, max_blocking_threads=1, and
    # the CPU slot), so the next ones wait in its queue without starting
    coord = OperationsCoordinator(cores=2, workers_per_core=1, max_blocking_threads=1).start()
    started = [threading.Event(), threading.Event()]
    running = [block_heavy(gate, event) for event in started]
    assert all(event.wait(WAIT) for event in started)
    queued = [block_heavy(gate) for _ in range(3)]

    stopper = threading.Thread(target=lambda: coord.stop(cancel_pending=True, timeout=WAIT))
    stopper.start()
    for token in queued:
        with pytest.raises(TaskKilledError):
            token.get(WAIT)  # killed at once, before the running bodies are let go
        assert token.started_at is None
    assert not any(token.done() for token in running)
    gate.set()
    stopper.join(WAIT)
    # admitted work was allowed to finish
    assert [token.get(WAIT) for token in running] == ["heavy done"] * 2


def test_stop_from_inside_a_token_is_refused(coordinator: OperationsCoordinator) -> None:
    @task_token_guard()
    def suicidal() -> None:
        coordinator.stop()

    with pytest.raises(RuntimeError, match="inside one of its own tokens"):
        suicidal().get(WAIT)
    assert is_running(coordinator)


# --------------------------------------------------------------------------- current coordinator
def test_several_coordinators_and_the_current_one(factory: Factory) -> None:
    proceed = threading.Event()

    @task_token_guard(operation_type="coord.parent_waits")
    def parent_waits(x: int) -> tuple[OperationsCoordinator | None, TaskToken[int]]:
        proceed.wait(WAIT)
        return current_coordinator(), square(x)

    first = factory(cores=2, workers_per_core=2)
    assert current_coordinator() is first
    on_first = parent_waits(4)
    assert on_first.coordinator is first

    second = factory(cores=3, workers_per_core=2)
    assert current_coordinator() is second  # the most recently started one
    assert square(2).coordinator is second
    proceed.set()
    # inside a running token, calls go to the coordinator running it, not the newest one
    inside, child = on_first.get(WAIT)
    assert inside is first
    assert child.coordinator is first
    assert child.get(WAIT) == 16
    on_second = parent(3)
    inside, child = on_second.get(WAIT)
    assert on_second.coordinator is second
    assert inside is second
    assert child.coordinator is second
    assert child.get(WAIT) == 9

    second.stop()
    assert current_coordinator() is first
    assert square(3).coordinator is first
    first.stop()
    assert current_coordinator() is None
    with pytest.raises(CoordinatorNotRunningError):
        square(1)


def test_coordinators_share_no_registries(factory: Factory) -> None:
    one = factory(cores=2, workers_per_core=1)
    two = factory(cores=2, workers_per_core=1)
    mine = [square(i) for i in range(5)]  # to `two`, the current one
    for token in mine:
        token.get(WAIT)
    assert {r.token_id for r in two.recent_executions(10)} == {t.token_id for t in mine}
    assert one.recent_executions(10) == []
    assert one.stats().submitted == 0
    assert two.stats().submitted == 5


# --------------------------------------------------------------------------- introspection
def test_stats_snapshot(coordinator: OperationsCoordinator, gate: threading.Event) -> None:
    started = threading.Event()
    blocked = block_heavy(gate, started)
    assert started.wait(WAIT)
    for token in [square(i) for i in range(10)]:
        token.get(WAIT)
    fail("x").exception(WAIT)
    stats = coordinator.stats()
    assert isinstance(stats, CoordinatorStats)
    assert stats.running
    assert not stats.paused
    assert len(stats.cores) == coordinator.cores
    assert [c.core_id for c in stats.cores] == [1, 2, 3, 4]
    assert all(c.workers == coordinator.workers_per_core for c in stats.cores)
    assert stats.cores[0].busy_workers == 1
    assert stats.in_flight == 1
    assert stats.submitted == 12
    assert stats.by_state["completed"] == 10
    assert stats.by_state["failed"] == 1
    assert stats.by_state["executing"] == 1
    assert stats.operations["coord.square"].completed == 10
    assert stats.operations["coord.fail"].failed == 1
    assert stats.operations["coord.square"].finished == 10
    json.dumps(stats.as_dict())  # JSON-ready
    gate.set()
    assert blocked.get(WAIT) == "heavy done"


def test_sticky_snapshot_shows_live_pins_only(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    started = threading.Event()
    token = block_heavy(gate, started)
    assert started.wait(WAIT)
    pins = coordinator.sticky_snapshot()
    assert len(pins) == 1
    ((key, core),) = pins.items()
    assert key.startswith("coord.block_heavy")
    assert core == token.core_id == 1
    gate.set()
    token.get(WAIT)
    assert dict(coordinator.sticky_snapshot()) == {}


def test_recent_executions_and_the_json_history(
    coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    tokens = [square(i) for i in range(6)]
    for token in tokens:
        token.get(WAIT)
    bad = fail("missing")
    bad.exception(WAIT)
    recent = coordinator.recent_executions(limit=3)
    assert len(recent) == 3
    assert recent[0].token_id == bad.token_id  # newest first
    assert not recent[0].success
    assert recent[0].state == "failed"
    assert "missing" in (recent[0].error or "")
    assert coordinator.recent_executions(limit=0) == []
    assert len(coordinator.recent_executions(limit=100)) == 7

    path = coordinator.dump_execution_history(tmp_path / "history.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"timestamp", "coordinator", "total_executions", "executions"}
    assert data["coordinator"] == coordinator.name
    assert data["total_executions"] == 7
    ids = {row["token_id"] for row in data["executions"]}
    assert ids == {t.token_id for t in tokens} | {bad.token_id}
    for row in data["executions"]:
        assert set(row) >= {"token_id", "operation_type", "success", "duration", "core_id"}
        assert isinstance(row["core_id"], int)


def test_history_is_bounded() -> None:
    with OperationsCoordinator(cores=2, workers_per_core=1, history_size=5) as coord:
        for token in [square(i) for i in range(20)]:
            token.get(WAIT)
        assert len(coord.recent_executions(limit=100)) == 5


# --------------------------------------------------------------------------- backpressure
def test_a_full_core_does_not_block_routing_to_other_cores(
    factory: Factory, gate: threading.Event
) -> None:
    coord = factory(cores=3, workers_per_core=1, max_blocking_threads=1)
    # one call that waits classifies the operation blocking: its bodies then take blocking
    # slots (one here) instead of the CPU slot
    warm = threading.Event()
    timer = threading.Timer(0.05, warm.set)
    timer.start()
    assert block_heavy(warm).get(WAIT) == "heavy done"
    timer.join()
    backend = coord.backend("thread", 1)
    assert isinstance(backend, ThreadExecutor)
    # the sample is folded in just after the body returned, maybe after get() woke up
    deadline = time.monotonic() + WAIT
    while backend.decisions()["coord.block_heavy"].kind != "blocking":
        assert time.monotonic() < deadline, backend.decisions()["coord.block_heavy"]
        time.sleep(0.005)
    started = threading.Event()
    heavy = [block_heavy(gate, started)]
    assert started.wait(WAIT)
    # core 1 is full: one body runs, the rest wait in its queue
    heavy += [block_heavy(gate) for _ in range(4)]
    core1 = coord.stats().cores[0]
    assert core1.busy_workers == 1
    assert core1.depth == 4
    # other cores keep routing and running while core 1 is stuck
    others = [square(i) for i in range(100)]
    assert [t.get(WAIT) for t in others] == [i * i for i in range(100)]
    assert {t.core_id for t in others} <= {2, 3}
    assert not any(t.done() for t in heavy)
    gate.set()
    assert [t.get(WAIT) for t in heavy] == ["heavy done"] * 5


def test_pause_and_resume_hold_admission(coordinator: OperationsCoordinator) -> None:
    coordinator.pause()
    held = [square(i) for i in range(5)]
    assert all(state_of(t) is TokenState.WAITING for t in held)
    assert coordinator.stats().paused
    coordinator.resume()
    assert [t.get(WAIT) for t in held] == [i * i for i in range(5)]


@pytest.fixture
def factory(coordinator_factory: Factory) -> Factory:
    return coordinator_factory
