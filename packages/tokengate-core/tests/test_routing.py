"""Routing layers 1, 3 and 10: weight → core ranges, staggered position counters and the
least-loaded mailbox."""

from __future__ import annotations

import inspect
import sys
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
from tokengate.core._workers import CoreDomain, WorkerPoolExecutor

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


def _model(
    weights: Sequence[Weight], cores: int, workers: int
) -> list[tuple[int, int]]:  # (core, worker) per token
    """SPEC §4 layer 3 as a reference model: staggered counters, smallest counter wins
    (ties: lowest id), worker = counter % workers, the counter advances."""
    counters = {core: (core - 1) * workers for core in range(1, cores + 1)}
    placed = []
    for weight in weights:
        valid = EXPECTED_RANGES[cores][weight]
        core = min(valid, key=lambda c: (counters[c], c))
        placed.append((core, counters[core] % workers))
        counters[core] += 1
    return placed


@pytest.mark.parametrize(("cores", "workers"), [(3, 2), (5, 2), (5, 3), (2, 4)])
def test_staggered_position_counters(
    coordinator_factory: Factory, cores: int, workers: int
) -> None:
    coordinator_factory(cores=cores, workers_per_core=workers)
    pattern = [Weight.MEDIUM, Weight.LIGHT, Weight.MEDIUM, Weight.HEAVY, Weight.LIGHT]
    weights = [pattern[i % len(pattern)] for i in range(60)]
    placed = []
    for i, weight in enumerate(weights):
        token = OPS[weight](i)
        token.get(WAIT)  # one at a time: every mailbox is empty when the next one is placed
        assert token.core_id is not None
        assert token.worker_id is not None
        placed.append((token.core_id, token.worker_id))
    assert placed == _model(weights, cores, workers)


def test_first_tokens_follow_the_stagger(coordinator_factory: Factory) -> None:
    # 5 cores x 2 workers: counters start at core2=2, core3=4, core4=6, core5=8, so the first
    # MEDIUM tokens fill core 2 until it catches up with core 3, then alternate.
    coordinator_factory(cores=5, workers_per_core=2)
    cores = []
    for i in range(8):
        token = medium_op(i)
        token.get(WAIT)
        cores.append(token.core_id)
    assert cores == [2, 2, 2, 3, 2, 3, 2, 3]


def test_least_loaded_mailbox_wins_over_the_position(
    coordinator_factory: Factory, gate: threading.Event
) -> None:
    coordinator = coordinator_factory(cores=2, workers_per_core=3)
    own_gates = [threading.Event() for _ in range(3)]
    started = [threading.Event() for _ in range(3)]

    @task_token_guard(operation_type="routing.blocker", tags={"weight": "heavy"})
    def blocker(index: int) -> int:
        started[index].set()
        own_gates[index].wait(WAIT)
        return index

    try:
        blockers = [blocker(i) for i in range(3)]  # positions 0, 1, 2 → workers 0, 1, 2
        for event in started:
            assert event.wait(WAIT)
        assert [b.worker_id for b in blockers] == [0, 1, 2]
        queued = [heavy_op(100), heavy_op(101)]  # positions 3, 4 → mailboxes of workers 0, 1
        own_gates[2].set()
        assert blockers[2].get(WAIT) == 2  # worker 2 is idle from now on
        filler = heavy_op(102)  # position 5 → worker 2 (its own, empty mailbox)
        assert filler.get(WAIT) == 102
        assert filler.worker_id == 2
        # positions 6 and 7 point at workers 0 and 1, whose mailboxes hold a token each:
        # the least-loaded mailbox (worker 2) gets them instead
        moved = []
        for value in (103, 104):
            token = heavy_op(value)
            assert token.get(WAIT) == value  # one at a time: worker 2's mailbox is empty again
            moved.append(token)
        assert [t.worker_id for t in moved] == [2, 2]
        assert not any(t.done() for t in queued)
        core1 = coordinator.stats().cores[0]
        assert core1.busy_workers == 2
        assert core1.depth == 2
    finally:
        for event in own_gates:
            event.set()
    assert [t.get(WAIT) for t in queued] == [100, 101]


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


class _StaleCheckMailbox:
    """Wraps a worker's mailbox. The first time the dispatcher reads its depth while holding
    the backlog lock (the "is every mailbox full?" check), the reading is taken, then the
    worker is let go and allowed to drain everything and go idle, and only then is the
    (now stale) reading returned: the interleaving a preempted dispatcher thread can meet."""

    def __init__(
        self,
        inner: Any,
        domain: Any,
        release: threading.Event,
        worker_idle: Callable[[], bool],
    ) -> None:
        self.inner = inner
        self.domain = domain
        self.release = release
        self.worker_idle = worker_idle
        self.armed_for = threading.get_ident()

    def put(self, item: Any) -> None:
        self.inner.put(item)

    def get(self) -> Any:
        return self.inner.get()

    def qsize(self) -> int:
        size: int = self.inner.qsize()
        if self.armed_for == threading.get_ident() and self.domain._backlog_lock.locked():
            self.armed_for = 0
            self.release.set()
            idle = threading.Event()
            for _ in range(int(WAIT / 0.005)):
                if self.worker_idle():
                    break
                idle.wait(0.005)  # polling a thread's position: no event exists for it
        return size


def test_a_backlogged_token_is_not_stranded(coordinator_factory: Factory) -> None:
    coordinator = coordinator_factory(cores=1, workers_per_core=1, mailbox_capacity=1)
    backend = coordinator.backend("thread", 1)
    assert isinstance(backend, WorkerPoolExecutor)
    domain = backend.domain
    worker = domain.workers[0]
    release = threading.Event()
    started = threading.Event()

    @task_token_guard(operation_type="routing.stranded_blocker", tags={"hash_policy": "none"})
    def blocker() -> str:
        started.set()
        release.wait(WAIT)
        return "blocker"

    lines, first = inspect.getsourcelines(WorkerPoolExecutor._worker_main)
    get_line = first + next(i for i, line in enumerate(lines) if "= get()" in line)
    assert worker.thread is not None
    ident = worker.thread.ident

    def worker_idle() -> bool:
        """The worker ran out of work: asleep on its empty mailbox, or (in a design that
        checks the backlog under its lock before sleeping) waiting for that lock."""
        frame = sys._current_frames().get(ident or 0)
        if frame is None or worker.busy or worker.mailbox.qsize():
            return False
        asleep = frame.f_code.co_name == "_worker_main" and frame.f_lineno == get_line
        return asleep or frame.f_code.co_name == "refill"

    running = blocker()
    assert started.wait(WAIT)
    queued = medium_op(1)  # fills the only mailbox (capacity 1)
    worker.mailbox = _StaleCheckMailbox(worker.mailbox, domain, release, worker_idle)  # type: ignore[assignment]
    late = medium_op(2)  # every mailbox looked full: it goes to the backlog
    try:
        assert running.get(WAIT) == "blocker"
        assert queued.get(WAIT) == 1
        assert late.get(timeout=1.0) == 2, "the backlogged token was never run"
    finally:
        release.set()
        coordinator.stop(timeout=1.0)


def test_a_child_is_not_queued_behind_the_parent_waiting_for_it(
    coordinator_factory: Factory,
) -> None:
    coordinator_factory(cores=2, workers_per_core=2)  # MEDIUM: core 2, counter starts at 2
    go = threading.Event()
    running = threading.Event()

    @task_token_guard(operation_type="routing.parent_waits")
    def parent() -> int:
        running.set()
        go.wait(WAIT)
        return medium_op(7).get(timeout=1.0)  # the child: position 4 → worker 0

    waiting = parent()  # position 2 → worker 0
    assert running.wait(WAIT)
    assert waiting.worker_id == 0
    assert medium_op(1).get(WAIT) == 1  # position 3 → worker 1, which is idle again
    go.set()
    assert waiting.get(WAIT) == 7


def test_a_full_mailbox_on_the_least_loaded_worker_sends_the_token_to_one_with_room(
    coordinator_factory: Factory,
) -> None:
    """Load counts a running body, so an idle worker with a full mailbox can weigh as little as
    a busy one with room. Dispatch must use the one with room (it once recursed until the stack
    overflowed, failing the token)."""
    coordinator = coordinator_factory(cores=1, workers_per_core=2)
    coordinator.pause()
    token = medium_op(3)  # held: WAITING, not yet routed
    held_state = token.state
    assert held_state is TokenState.WAITING
    assert token._move(frozenset({TokenState.WAITING}), TokenState.ADMITTED)  # as routing does
    domain = CoreDomain(core_id=1, workers=2, capacity=2, cpu=None)  # no threads behind it
    busy_with_room, idle_but_full = domain.workers
    busy_with_room.busy = True
    busy_with_room.mailbox.put(None)  # load 1 queued + 1 running = 2
    idle_but_full.mailbox.put(None)
    idle_but_full.mailbox.put(None)  # load 2, mailbox full
    domain.dispatch(token, position=1)  # the position points at the full mailbox
    assert token.state is TokenState.ADMITTED
    assert busy_with_room.mailbox.qsize() == 2
    assert idle_but_full.mailbox.qsize() == 2
    assert not domain.backlog
    token.kill("test over")
    coordinator.resume()
