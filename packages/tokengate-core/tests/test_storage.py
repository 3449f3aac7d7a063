"""Storage tiers: per-tier caps on concurrent calls, parked tokens that hold no worker."""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tokengate.core import (
    ConfigurationError,
    CoordinatorConfig,
    OperationsCoordinator,
    StorageSpeed,
    TaskKilledError,
    TaskToken,
    TokenState,
    TokenTimeoutError,
    task_token_guard,
)
from tokengate.core._storage import StorageGate

WAIT = 10.0
"""Upper bound of every wait in this module: reached only when something is broken."""


class Concurrency:
    """Counts bodies running at once and remembers the most ever seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


@task_token_guard(operation_type="st_slow_grouped", tags={"storage_speed": "slow"})
def slow_grouped(meter: Concurrency, barrier: threading.Barrier, i: int) -> int:
    meter.enter()
    try:
        barrier.wait(WAIT)  # needs `parties` bodies in flight at once
    finally:
        meter.leave()
    return i


@task_token_guard(
    operation_type="st_slow_blocking", tags={"storage_speed": "SLOW", "hash_policy": "none"}
)
def slow_blocking(
    meter: Concurrency, started: threading.Event, release: threading.Event, name: str
) -> str:
    meter.enter()
    started.set()
    release.wait(WAIT)
    meter.leave()
    return name


@task_token_guard(
    operation_type="st_slow_record",
    tags={"storage_speed": StorageSpeed.SLOW, "hash_policy": "none"},
)
def slow_record(meter: Concurrency, ran: list[object], value: object) -> object:
    meter.enter()
    ran.append(value)
    meter.leave()
    return value


@task_token_guard(
    operation_type="st_slow_timeout",
    tags={"storage_speed": "slow", "hash_policy": "none", "timeout": 0.05},
)
def slow_record_with_timeout(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="st_fast", tags={"storage_speed": "fast", "hash_policy": "none"})
def fast_record(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="st_plain", tags={"hash_policy": "none"})
def plain(value: object) -> object:
    return value


def pid() -> int:
    return os.getpid()


@pytest.fixture
def one_slow_slot() -> Iterator[OperationsCoordinator]:
    """One core with two workers; the SLOW tier admits one call at a time."""
    coordinator = OperationsCoordinator(
        cores=1, workers_per_core=2, storage_limits={"slow": 1}
    ).start()
    yield coordinator
    coordinator.stop(timeout=WAIT)


def test_default_limits_and_configuration() -> None:
    limits = CoordinatorConfig().storage_limits
    assert limits == {
        StorageSpeed.SLOW: 10,
        StorageSpeed.MODERATE: 25,
        StorageSpeed.FAST: 50,
        StorageSpeed.INSANE: 70,
    }
    configured = OperationsCoordinator(storage_limits={"slow": 2, StorageSpeed.INSANE: 99})
    assert configured.config.storage_limits[StorageSpeed.SLOW] == 2
    assert configured.config.storage_limits[StorageSpeed.INSANE] == 99
    assert configured.config.storage_limits[StorageSpeed.FAST] == 50
    with pytest.raises(ConfigurationError, match="storage"):
        OperationsCoordinator(storage_limits={"slow": 0})
    with pytest.raises(ConfigurationError, match="storage"):
        OperationsCoordinator(storage_limits={"glacial": 3})


class _FakeToken:
    def __init__(self) -> None:
        self.ended = False

    def done(self) -> bool:
        return self.ended


def test_gate_counts_slots_and_passes_them_to_parked_tokens_in_order() -> None:
    gate = StorageGate(dict.fromkeys(StorageSpeed, 1))
    fakes = [_FakeToken() for _ in range(3)]
    holder, ended, parked = (cast("TaskToken[Any]", fake) for fake in fakes)
    assert gate.try_acquire(StorageSpeed.SLOW, holder)
    assert not gate.try_acquire(StorageSpeed.SLOW, ended)
    assert not gate.try_acquire(StorageSpeed.SLOW, parked)
    assert gate.try_acquire(StorageSpeed.FAST, holder)  # each tier counts on its own
    assert gate.waiting(StorageSpeed.SLOW) == 2
    fakes[1].ended = True
    assert gate.release(StorageSpeed.SLOW) is parked  # an ended token is skipped
    assert gate.in_use(StorageSpeed.SLOW) == 1  # the slot passed on
    assert gate.waiting(StorageSpeed.SLOW) == 0
    assert gate.release(StorageSpeed.SLOW) is None
    assert gate.in_use(StorageSpeed.SLOW) == 0
    assert gate.peak(StorageSpeed.SLOW) == 1


def test_gate_forgets_parked_tokens_that_ended() -> None:
    gate = StorageGate(dict.fromkeys(StorageSpeed, 1))
    holder = _FakeToken()
    assert gate.try_acquire(StorageSpeed.MODERATE, cast("TaskToken[Any]", holder))
    ended = [_FakeToken() for _ in range(5000)]
    for fake in ended:
        assert not gate.try_acquire(StorageSpeed.MODERATE, cast("TaskToken[Any]", fake))
        fake.ended = True  # killed while parked
    assert gate.waiting(StorageSpeed.MODERATE) <= 1024
    live = cast("TaskToken[Any]", _FakeToken())
    gate.try_acquire(StorageSpeed.MODERATE, live)
    assert gate.release(StorageSpeed.MODERATE) is live


def test_tier_cap_is_reached_and_never_exceeded() -> None:
    coordinator = OperationsCoordinator(
        cores=1, workers_per_core=4, storage_limits={"slow": 3}
    ).start()
    try:
        meter = Concurrency()
        barrier = threading.Barrier(3)
        # Three calls that can only finish together: the tier must admit three at once ...
        grouped = [slow_grouped(meter, barrier, i) for i in range(3)]
        # ... and no more: these park while the slots are taken (the fourth worker is free).
        ran: list[object] = []
        others = [slow_record(meter, ran, i) for i in range(12)]
        assert [t.get(WAIT) for t in grouped] == [0, 1, 2]
        assert [t.get(WAIT) for t in others] == list(range(12))
        assert sorted(ran) == list(range(12))  # type: ignore[type-var]
        assert meter.most == 3
        assert coordinator.storage_peak("slow") == 3
        assert coordinator.storage_in_use(StorageSpeed.SLOW) == 0
    finally:
        coordinator.stop(timeout=WAIT)


def test_a_parked_token_holds_no_worker(one_slow_slot: OperationsCoordinator) -> None:
    meter = Concurrency()
    started, release = threading.Event(), threading.Event()
    second_started, unused = threading.Event(), threading.Event()
    unused.set()
    some_plain_done = threading.Event()
    try:
        first = slow_blocking(meter, started, release, "first")
        assert started.wait(WAIT)
        second = slow_blocking(meter, second_started, unused, "second")
        plains = [plain(i) for i in range(4)]
        for token in plains:
            token.add_done_callback(lambda _t: some_plain_done.set())
        # The second SLOW call waits for the slot without taking the other worker:
        # plain tokens of the same domain still run while the first SLOW call blocks.
        assert some_plain_done.wait(WAIT)
        assert not second_started.is_set()
        assert second.state is TokenState.ADMITTED
        assert one_slow_slot.storage_in_use("slow") == 1
    finally:
        release.set()
    assert first.get(WAIT) == "first"
    assert second.get(WAIT) == "second"
    assert [t.get(WAIT) for t in plains] == [0, 1, 2, 3]
    assert meter.most == 1
    assert one_slow_slot.storage_in_use("slow") == 0


def test_tiers_are_independent(one_slow_slot: OperationsCoordinator) -> None:
    meter = Concurrency()
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        first = slow_blocking(meter, started, release, "first")
        assert started.wait(WAIT)
        assert fast_record(ran, "fast").get(WAIT) == "fast"
    finally:
        release.set()
    assert first.get(WAIT) == "first"


def test_killing_a_parked_token_frees_nothing_it_did_not_hold(
    one_slow_slot: OperationsCoordinator,
) -> None:
    meter = Concurrency()
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        first = slow_blocking(meter, started, release, "first")
        assert started.wait(WAIT)
        parked = slow_record(meter, ran, "parked")
        timed = slow_record_with_timeout(ran, "timed")
        assert parked.kill("not needed")
        assert isinstance(timed.exception(WAIT), TokenTimeoutError)
        with pytest.raises(TaskKilledError):
            parked.get(0)
        assert one_slow_slot.storage_in_use("slow") == 1  # still the first call's slot
    finally:
        release.set()
    assert first.get(WAIT) == "first"
    assert slow_record(meter, ran, "after").get(WAIT) == "after"
    assert ran == ["after"]
    assert one_slow_slot.storage_in_use("slow") == 0
    assert meter.most == 1


def test_storage_speed_with_process_pool_warns_and_uses_threads(
    one_slow_slot: OperationsCoordinator,
) -> None:
    with pytest.warns(UserWarning, match="storage_speed"):
        in_threads = task_token_guard(
            operation_type="st_forced_threads",
            tags={"storage_speed": "fast", "process_pool": True},
        )(pid)
    token = in_threads()
    assert token.process_pool is False
    assert token.get(WAIT) == os.getpid()


def test_kill_races_slot_hand_off() -> None:
    """Kills landing while slots pass between tokens never lose or double-free a slot."""
    coordinator = OperationsCoordinator(
        cores=2, workers_per_core=4, storage_limits={"slow": 2}
    ).start()
    meter = Concurrency()
    ran: list[object] = []
    inbox: queue.SimpleQueue[TaskToken[Any] | None] = queue.SimpleQueue()
    outcome: dict[str, bool] = {}

    def killer() -> None:
        while (token := inbox.get()) is not None:
            outcome[token.token_id] = token.kill("race")

    thread = threading.Thread(target=killer, name="slot-killer")
    thread.start()
    tokens = []
    try:
        for i in range(3000):
            token = slow_record(meter, ran, i)
            tokens.append(token)
            if i % 2:
                inbox.put(token)
    finally:
        inbox.put(None)
        thread.join(WAIT)
    for token in tokens:
        token.exception(WAIT)
    coordinator.stop(timeout=WAIT)
    runs = Counter(ran)
    assert max(runs.values()) <= 1
    assert all(t.state in (TokenState.COMPLETED, TokenState.KILLED) for t in tokens)
    assert all(outcome[t.token_id] is (t.state is TokenState.KILLED) for t in tokens[1::2])
    assert meter.most <= 2
    assert coordinator.storage_peak("slow") <= 2
    assert coordinator.storage_in_use("slow") == 0
