"""Routing: weight → core ranges, placement on the core with the fewest tokens in flight
(equal cores take turns), and what the domain's thread executor guarantees a routed token:
never queued behind a busy worker, never stranded, never failed for lack of room."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tokengate.core import (
    DefaultRoutingPolicy,
    OperationsCoordinator,
    RoutingPolicy,
    TaskToken,
    TokenState,
    Weight,
    task_token_guard,
)

WAIT = 10.0

Factory = Callable[..., OperationsCoordinator]

# SPEC §4 layer 1, written out rather than computed
EXPECTED_RANGES: dict[int, dict[Weight, tuple[int, ...]]] = {
    1: {Weight.HEAVY: (1,), Weight.MEDIUM: (1,), Weight.LIGHT: (1,)},
    2: {Weight.HEAVY: (1,), Weight.MEDIUM: (2,), Weight.LIGHT: (2,)},
    3: {Weight.HEAVY: (1,), Weight.MEDIUM: (2, 3), Weight.LIGHT: (3,)},
    5: {Weight.HEAVY: (1,), Weight.MEDIUM: (2, 3, 4, 5), Weight.LIGHT: (3, 4, 5)},
}


@task_token_guard(operation_type="routing.heavy", tags={"weight": "heavy", "hash_policy": "none"})
def heavy_op(i: int) -> int:
    return i


@task_token_guard(operation_type="routing.medium", tags={"weight": "medium", "hash_policy": "none"})
def medium_op(i: int) -> int:
    return i


@task_token_guard(operation_type="routing.light", tags={"weight": "light", "hash_policy": "none"})
def light_op(i: int) -> int:
    return i


OPS: dict[Weight, Callable[[int], TaskToken[int]]] = {
    Weight.HEAVY: heavy_op,
    Weight.MEDIUM: medium_op,
    Weight.LIGHT: light_op,
}


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("cores", sorted(EXPECTED_RANGES))
@pytest.mark.parametrize("weight", list(Weight))
def test_default_policy_ranges(cores: int, weight: Weight) -> None:
    policy = DefaultRoutingPolicy()
    assert isinstance(policy, RoutingPolicy)
    assert tuple(policy.cores_for(weight, cores)) == EXPECTED_RANGES[cores][weight]


@pytest.mark.parametrize("cores", sorted(EXPECTED_RANGES))
def test_real_tokens_land_in_their_weight_range(coordinator_factory: Factory, cores: int) -> None:
    coordinator_factory(cores=cores, workers_per_core=2)
    for weight, op in OPS.items():
        tokens = [op(i) for i in range(12 * cores)]
        assert [t.get(WAIT) for t in tokens] == list(range(12 * cores))
        used = {t.core_id for t in tokens}
        expected = set(EXPECTED_RANGES[cores][weight])
        assert used == expected, f"{weight.value} on {cores} cores used {used}"
        assert all(t.tags["sticky_core"] == t.core_id for t in tokens)


def _spread(tokens: Sequence[TaskToken[Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for token in tokens:
        assert token.core_id is not None
        counts[token.core_id] = counts.get(token.core_id, 0) + 1
    return counts


@pytest.mark.parametrize(("cores", "workers"), [(3, 2), (5, 2), (5, 3), (2, 4)])
@pytest.mark.parametrize("weight", list(Weight))
def test_one_at_a_time_tokens_take_turns_over_their_cores(
    coordinator_factory: Factory, cores: int, workers: int, weight: Weight
) -> None:
    """Every token ends before the next is placed, so every core of the range has nothing in
    flight each time: equal cores take turns, whatever ``workers_per_core`` is."""
    coordinator_factory(cores=cores, workers_per_core=workers)
    valid = EXPECTED_RANGES[cores][weight]
    tokens = []
    for i in range(6 * len(valid)):
        token = OPS[weight](i)
        assert token.get(WAIT) == i  # one at a time
        tokens.append(token)
    assert _spread(tokens) == dict.fromkeys(valid, 6)


def test_interleaved_weights_spread_over_their_ranges(coordinator_factory: Factory) -> None:
    """Ranges overlap (MEDIUM 2..5, LIGHT 3..5): among equally loaded cores the least recently
    given one wins, so no weight piles onto the first core of its range."""
    coordinator_factory(cores=5, workers_per_core=2)
    pattern = [Weight.MEDIUM, Weight.LIGHT, Weight.MEDIUM, Weight.HEAVY, Weight.LIGHT]
    by_weight: dict[Weight, list[TaskToken[int]]] = {weight: [] for weight in Weight}
    for i in range(60):
        weight = pattern[i % len(pattern)]
        token = OPS[weight](i)
        assert token.get(WAIT) == i
        by_weight[weight].append(token)
    for weight, tokens in by_weight.items():
        counts = _spread(tokens)
        valid = EXPECTED_RANGES[5][weight]
        assert set(counts) <= set(valid)
        assert len(counts) >= min(2, len(valid)), f"{weight.value}: {counts}"
        if len(valid) > 1:
            assert max(counts.values()) <= len(tokens) // 2, f"{weight.value}: {counts}"


def test_first_tokens_spread_over_the_range(coordinator_factory: Factory) -> None:
    # 5 cores: MEDIUM is cores 2..5; nothing in flight anywhere, so the first tokens take
    # turns (no core starts ahead of another whatever workers_per_core is)
    coordinator_factory(cores=5, workers_per_core=2)
    tokens = []
    for i in range(8):
        token = medium_op(i)
        token.get(WAIT)
        tokens.append(token)
    assert _spread(tokens) == {2: 2, 3: 2, 4: 2, 5: 2}


def test_held_tokens_count_in_flight_and_steer_the_next_ones(
    coordinator_factory: Factory, gate: threading.Event
) -> None:
    """Placement counts tokens in flight: while core 2 holds three blocked tokens, the next
    MEDIUM tokens go to the other cores until they hold as many; once the held ones end,
    core 2 counts nothing again."""
    coordinator = coordinator_factory(cores=4, workers_per_core=2)  # MEDIUM: cores 2, 3, 4

    @task_token_guard(operation_type="routing.held", tags={"weight": "medium"})
    def held(index: int) -> int:
        gate.wait(WAIT)
        return index

    first = [held(i) for i in range(3)]  # free routing (distinct keys): one per core
    assert _spread(first) == {2: 1, 3: 1, 4: 1}
    more = [held(i) for i in range(3, 9)]
    assert _spread(more) == {2: 2, 3: 2, 4: 2}
    assert coordinator._router.in_flight() == {1: 0, 2: 3, 3: 3, 4: 3}
    gate.set()
    assert [t.get(WAIT) for t in first + more] == list(range(9))
    # a waiter may wake before the ending thread has run the release steps: poll for them
    for _ in range(int(WAIT / 0.01)):
        if coordinator._router.in_flight() == {1: 0, 2: 0, 3: 0, 4: 0}:
            break
        threading.Event().wait(0.01)
    assert coordinator._router.in_flight() == {1: 0, 2: 0, 3: 0, 4: 0}


def test_a_token_is_never_queued_behind_busy_workers_while_another_may_run_it(
    coordinator_factory: Factory,
) -> None:
    """Core 1 (HEAVY) runs three blocked bodies on its three standing workers; new HEAVY
    tokens still run at once (the domain's workers share one queue and the executor adds a
    thread), instead of waiting in a busy worker's mailbox."""
    coordinator = coordinator_factory(cores=2, workers_per_core=3)
    own_gates = [threading.Event() for _ in range(3)]
    started = [threading.Event() for _ in range(3)]

    @task_token_guard(operation_type="routing.blocker", tags={"weight": "heavy"})
    def blocker(index: int) -> int:
        started[index].set()
        own_gates[index].wait(WAIT)
        return index

    try:
        blockers = [blocker(i) for i in range(3)]
        for event in started:
            assert event.wait(WAIT)
        assert {b.core_id for b in blockers} == {1}
        for value in range(100, 106):
            token = heavy_op(value)
            assert token.get(WAIT) == value
            assert token.core_id == 1
        assert not any(b.done() for b in blockers)
        core1 = coordinator.stats().cores[0]
        assert core1.busy_workers == 3
        assert core1.depth == 0
        own_gates[2].set()
        assert blockers[2].get(WAIT) == 2
        assert heavy_op(106).get(WAIT) == 106
    finally:
        for event in own_gates:
            event.set()
    assert [b.get(WAIT) for b in blockers] == [0, 1, 2]


def test_sticky_tokens_share_a_core_and_free_ones_spread(
    coordinator_factory: Factory, gate: threading.Event
) -> None:
    coordinator = coordinator_factory(cores=5, workers_per_core=2)

    @task_token_guard(operation_type="routing.sticky")
    def sticky(key: str, hold: threading.Event) -> str:
        hold.wait(WAIT)
        return key

    @task_token_guard(operation_type="routing.free", tags={"hash_policy": "none"})
    def free(hold: threading.Event) -> None:
        hold.wait(WAIT)

    same = [sticky("k", gate) for _ in range(12)]
    assert len({t.core_id for t in same}) == 1
    assert all(t.sticky_key == ("routing.sticky", ("k", gate)) for t in same)
    pins = coordinator.sticky_snapshot()
    assert list(pins.values()) == [same[0].core_id]
    spread = [free(gate) for _ in range(12)]
    assert len({t.core_id for t in spread}) > 1
    assert all(t.sticky_key is None for t in spread)
    gate.set()
    for t in same + spread:
        t.get(WAIT)
    assert dict(coordinator.sticky_snapshot()) == {}


def test_sticky_anchor_names_the_key(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    @task_token_guard(operation_type="routing.a", tags={"sticky_anchor": "shared"})
    def op_a(x: int) -> int:
        gate.wait(WAIT)
        return x

    @task_token_guard(
        operation_type="routing.b", tags={"sticky_anchor": "shared", "weight": "light"}
    )
    def op_b(x: int) -> int:
        gate.wait(WAIT)
        return x

    a, b = op_a(1), op_b(1)
    assert a.sticky_key == b.sticky_key == ("shared", (1,))
    assert a.core_id == b.core_id  # one key, one core, whatever the weights
    assert dict(coordinator.sticky_snapshot()) == {"shared:(1,)": a.core_id}
    gate.set()
    assert a.get(WAIT) == b.get(WAIT) == 1


def test_tokens_submitted_while_the_only_worker_goes_idle_are_never_stranded(
    coordinator_factory: Factory,
) -> None:
    """One standing worker; four threads submit short calls as fast as they can, so tokens
    keep arriving while the worker finishes a body and parks (the lost wake-up window).
    Every token must still run: a stranded one would time out here."""
    coordinator_factory(cores=1, workers_per_core=1)
    submitters = 4
    per_thread = 400
    tokens: list[list[TaskToken[int]]] = [[] for _ in range(submitters)]
    barrier = threading.Barrier(submitters)

    def submit(index: int) -> None:
        barrier.wait(WAIT)
        mine = tokens[index]
        for i in range(per_thread):
            mine.append(medium_op(index * per_thread + i))
            if i % 50 == 49:
                mine[-1].get(WAIT)  # the worker drains and goes idle now and then

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    everything = [t for mine in tokens for t in mine]
    assert len(everything) == submitters * per_thread
    assert sorted(t.get(WAIT) for t in everything) == list(range(submitters * per_thread))


def test_a_child_is_not_queued_behind_the_parent_waiting_for_it(
    coordinator_factory: Factory,
) -> None:
    # one core, one standing worker: the parent runs on it and then waits for its child on
    # the same core; the wait hands the worker's place back, so the child runs meanwhile
    coordinator_factory(cores=1, workers_per_core=1)
    go = threading.Event()
    running = threading.Event()

    @task_token_guard(operation_type="routing.parent_waits")
    def parent() -> int:
        running.set()
        go.wait(WAIT)
        return medium_op(7).get(timeout=WAIT)

    waiting = parent()
    assert running.wait(WAIT)
    assert medium_op(1).get(WAIT) == 1  # not queued behind the running parent either
    go.set()
    assert waiting.get(WAIT) == 7
    assert waiting.core_id == 1


def test_a_burst_on_a_saturated_core_waits_in_its_queue_and_every_token_runs(
    coordinator_factory: Factory,
) -> None:
    """A domain that may run no more bodies (two blocked bodies: one blocking slot with
    ``max_blocking_threads=1``, the other holding the CPU slot) queues a burst instead of
    failing it; every token then runs once, with its own result."""
    coordinator = coordinator_factory(cores=1, workers_per_core=1, max_blocking_threads=1)
    release = threading.Event()
    started = [threading.Event(), threading.Event()]

    @task_token_guard(operation_type="routing.saturating", tags={"hash_policy": "none"})
    def saturating(index: int) -> int:
        started[index].set()
        release.wait(WAIT)
        return index

    try:
        blockers = [saturating(0), saturating(1)]
        for event in started:
            assert event.wait(WAIT)
        burst = [medium_op(i) for i in range(500)]
        assert all(t.state is TokenState.ADMITTED for t in burst)
        core1 = coordinator.stats().cores[0]
        assert core1.depth == 500
        assert core1.busy_workers == 2
    finally:
        release.set()
    assert [t.get(WAIT) for t in blockers] == [0, 1]
    assert [t.get(WAIT) for t in burst] == list(range(500))
