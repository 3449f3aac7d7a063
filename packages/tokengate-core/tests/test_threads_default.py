"""The domain scheduler as the default ``thread`` executor, through a real coordinator.

The regression cases of the scheduler's redesign, each in the default configuration (no
executor named, the router placing every token): short calls are not queued behind a long
one, bodies that wait for other tokens on their own core complete, blocking calls run many
at once, keys spread evenly over the cores of their weight, and a state machine mixing
blocking waits, kills and timeouts ends every token. No test asserts a wall-clock time: order
is shown by calls that finish while another is held open, concurrency by counting bodies
that run at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tokengate.core import (
    OperationsCoordinator,
    TaskToken,
    TokenState,
    current_coordinator,
    task_token_guard,
)
from tokengate.core._threads import ThreadExecutor

WAIT = 20.0
#: How long a waiting body of the state machine waits. Compensation is bounded
#: (max_compensation_threads), so waiting bodies can fill every thread while what they wait
#: for is queued behind them; their waits then time out, and the chain must still unwind
#: well within WAIT.
BODY_WAIT = 1.0
"""Upper bound of every wait here: reached only when something is broken."""

TERMINAL = {TokenState.COMPLETED, TokenState.FAILED, TokenState.KILLED, TokenState.TIMEOUT}


class Gauge:
    """Counts bodies running at once and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


@task_token_guard("default.long", tags={"hash_policy": "none"})
def long_call(gate: threading.Event, started: threading.Event) -> str:
    started.set()
    if not gate.wait(WAIT):
        raise RuntimeError("the gate never opened")
    return "long"


@task_token_guard("default.short", tags={"hash_policy": "none"})
def short_call(index: int) -> int:
    time.sleep(0.05)
    return index


@task_token_guard("default.sleep", tags={"hash_policy": "none"})
def sleeping_call(gauge: Gauge, index: int) -> int:
    with gauge:
        time.sleep(0.1)
    return index


@task_token_guard("default.child", tags={"hash_policy": "none"})
def child(value: int) -> int:
    total = 0
    for i in range(1000):
        total += i
    return value * 2 + total * 0


@task_token_guard("default.lead", tags={"hash_policy": "none"})
def lead(index: int, children: int) -> int:
    tokens = [child(index * 10 + i) for i in range(children)]
    return sum(token.get(timeout=WAIT) for token in tokens)


@task_token_guard("default.anchor", tags={"weight": "medium"})
def anchor(key: int, gate: threading.Event) -> int:
    gate.wait(WAIT)
    return key


@task_token_guard("default.held", tags={"weight": "medium", "hash_policy": "none"})
def held(index: int, gate: threading.Event) -> int:
    gate.wait(WAIT)
    return index


def _router_in_flight(coordinator: OperationsCoordinator) -> dict[int, int]:
    in_flight: dict[int, int] = coordinator._router.in_flight()
    return in_flight


def _wait_released(coordinator: OperationsCoordinator) -> dict[int, int]:
    """The router's in-flight counts once they drop to zero (a waiter may wake before the
    ending thread has run the release steps), or as they are after ``WAIT``."""
    deadline = time.monotonic() + WAIT
    counts = _router_in_flight(coordinator)
    while any(counts.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
        counts = _router_in_flight(coordinator)
    return counts


# ---------------------------------------------------------------------- head-of-line
def test_short_calls_are_not_queued_behind_a_long_one() -> None:
    """One long call and eleven 0.05 s calls on ``cores=2, workers_per_core=4``: every short
    call finishes while the long one is still held open (it once queued two of them behind
    the long one in its worker's mailbox while other workers idled)."""
    with OperationsCoordinator(cores=2, workers_per_core=4) as coordinator:
        gate, started = threading.Event(), threading.Event()
        long = long_call(gate, started)
        try:
            assert started.wait(WAIT)
            shorts = [short_call(i) for i in range(11)]
            assert [t.get(WAIT) for t in shorts] == list(range(11))
            assert not long.done(), "the long call ended before the gate opened"
            assert {t.core_id for t in shorts} == {long.core_id}  # MEDIUM on 2 cores: core 2
        finally:
            gate.set()
        assert long.get(WAIT) == "long"
        assert coordinator.stats().operations["default.short"].completed == 11


# ---------------------------------------------------------------------- managed blocking
@pytest.mark.parametrize("workers", [1, 4])
def test_leads_waiting_for_children_on_their_own_core_complete(workers: int) -> None:
    """Eight leads on ONE core each call a child three times and ``get(timeout)`` the
    results inside the body: every worker there is a lead waiting, and the children (on the
    same core) still run, because a waiting body hands its place back."""
    with OperationsCoordinator(cores=1, workers_per_core=workers) as coordinator:
        leads = [lead(i, 3) for i in range(8)]
        expected = [sum((i * 10 + j) * 2 for j in range(3)) for i in range(8)]
        assert [t.get(WAIT) for t in leads] == expected
        backend = coordinator.backend("thread", 1)
        assert isinstance(backend, ThreadExecutor)
        assert backend.stats().details["waiting_on_tokens"] == 0
        assert coordinator.stats().operations["default.child"].completed == 24


# ---------------------------------------------------------------------- elastic IO
def test_forty_sleeping_calls_run_many_at_once() -> None:
    """40 calls that each sleep 0.1 s (a stand-in for a database or HTTP call) on the
    default settings (``workers_per_core=4``): more than 4 of them sleep at once."""
    gauge = Gauge()
    with OperationsCoordinator(cores=2) as coordinator:
        tokens = [sleeping_call(gauge, i) for i in range(40)]
        assert [t.get(WAIT) for t in tokens] == list(range(40))
        backend = coordinator.backend("thread", 2)
        assert isinstance(backend, ThreadExecutor)
        assert backend.decisions()["default.sleep"].kind == "blocking"
    assert gauge.peak > 4, f"at most {gauge.peak} sleeping calls ran at once"


# ---------------------------------------------------------------------- even placement
def test_keys_spread_evenly_and_stay_on_their_core() -> None:
    """Eight sticky keys pinned by held calls on 4 cores (MEDIUM: cores 2..4) spread at most
    one apart; identical calls follow their key's pin; free calls that stay in flight spread
    evenly too; and the router counts nothing once every call ended."""
    gate = threading.Event()
    with OperationsCoordinator(cores=4) as coordinator:
        try:
            anchors = [anchor(key, gate) for key in range(8)]
            keys_per_core = Counter(t.core_id for t in anchors)
            assert set(keys_per_core) == {2, 3, 4}
            assert max(keys_per_core.values()) - min(keys_per_core.values()) <= 1
            identical = [anchor(key, gate) for key in range(8) for _ in range(5)]
            assert all(t.core_id == anchors[t.args[0]].core_id for t in identical)
            # 3/3/2 keys with 5 identical calls each: 18/18/12 tokens in flight; free calls
            # go where the fewest are, so nine of them even the cores up to 19 each
            free = [held(i, gate) for i in range(9)]
            loads = Counter(t.core_id for t in [*anchors, *identical, *free])
            assert loads == {2: 19, 3: 19, 4: 19}
            assert _router_in_flight(coordinator) == {1: 0, 2: 19, 3: 19, 4: 19}
        finally:
            gate.set()
        for token in [*anchors, *identical, *free]:
            token.get(WAIT)
        assert _wait_released(coordinator) == {1: 0, 2: 0, 3: 0, 4: 0}
        assert coordinator.sticky_snapshot() == {}


def test_free_calls_in_flight_spread_evenly() -> None:
    gate = threading.Event()
    with OperationsCoordinator(cores=5) as coordinator:  # MEDIUM: cores 2..5
        try:
            tokens = [held(i, gate) for i in range(12)]
            assert Counter(t.core_id for t in tokens) == {2: 3, 3: 3, 4: 3, 5: 3}
        finally:
            gate.set()
        assert [t.get(WAIT) for t in tokens] == list(range(12))
        assert _wait_released(coordinator) == dict.fromkeys(range(1, 6), 0)


# ---------------------------------------------------------------------- the alias
def test_scheduler_names_the_same_executor_as_thread() -> None:
    with OperationsCoordinator(cores=1, executor="scheduler") as coordinator:
        assert child(4).get(WAIT) == 8
        assert isinstance(coordinator.backend("scheduler", 1), ThreadExecutor)
    with OperationsCoordinator(cores=1) as coordinator:
        assert child(5).get(WAIT) == 10
        assert isinstance(coordinator.backend("thread", 1), ThreadExecutor)


# ---------------------------------------------------------------------- saturation
@task_token_guard("default.stuck", tags={"weight": "heavy"})
def stuck(gate: threading.Event, started: threading.Event) -> str:
    started.set()
    gate.wait(WAIT)
    return "stuck"


@task_token_guard("default.light", tags={"weight": "light", "hash_policy": "none"})
def light(i: int) -> int:
    return i * i


def test_a_saturated_domain_does_not_starve_other_domains() -> None:
    """Core 1 is saturated by two blocked bodies of an operation not measured yet (one
    blocking slot with ``max_blocking_threads=1``, the other holding the CPU slot); the
    other cores still run their tokens meanwhile."""
    gate = threading.Event()
    with OperationsCoordinator(cores=3, workers_per_core=1, max_blocking_threads=1):
        started = [threading.Event(), threading.Event()]
        try:
            blocked = [stuck(gate, event) for event in started]
            assert all(event.wait(WAIT) for event in started)
            others = [light(i) for i in range(20)]
            finished = [t.exception(timeout=2.0) is None and t.done() for t in others]
            assert all(finished), f"{finished.count(False)} of 20 light calls never ran"
            assert not any(t.done() for t in blocked)
        except TimeoutError as exc:
            raise AssertionError(f"light calls starved: {exc}") from None
        finally:
            gate.set()


# ---------------------------------------------------------------------- state machine
@task_token_guard("machine.sleeper", tags={"hash_policy": "none"})
def machine_sleeper(runs: list[int], tag: int, gate: threading.Event) -> int:
    runs.append(tag)
    if not gate.wait(WAIT):
        raise RuntimeError("gate never opened")
    return tag


@task_token_guard("machine.timed", tags={"hash_policy": "none", "timeout": 0.05})
def machine_timed(runs: list[int], tag: int, gate: threading.Event) -> int:
    runs.append(tag)
    gate.wait(WAIT)
    return tag


@task_token_guard("machine.cruncher")
def machine_cruncher(runs: list[int], tag: int, n: int) -> int:
    runs.append(tag)
    total = 0
    for i in range(n):
        total += i
    return tag


@task_token_guard("machine.stored", tags={"hash_policy": "none", "storage_speed": "slow"})
def machine_stored(runs: list[int], tag: int, gate: threading.Event) -> int:
    runs.append(tag)
    gate.wait(WAIT)
    return tag


@task_token_guard("machine.waiter", tags={"hash_policy": "none"})
def machine_waiter(runs: list[int], tag: int, others: list[TaskToken[Any]], together: bool) -> int:
    runs.append(tag)
    if together:  # concurrent.futures.wait: a managed wait too
        # tokens are not Future subclasses; concurrent.futures only needs what they provide
        futures.wait(cast("list[futures.Future[Any]]", others), timeout=BODY_WAIT)
        return tag
    for other in others:
        try:
            other.get(timeout=BODY_WAIT)  # a managed wait: the body's place goes to others
        except Exception:
            pass
    return tag


class DefaultCoordinatorMachine(RuleBasedStateMachine):
    """Blocking waits (bodies waiting for earlier tokens), gated bodies, timeouts and kills
    through a real coordinator and its default thread executor, with small caps so that its
    domains saturate. Waits only point at earlier tokens, so no cycle exists; once the gates
    open every token must end, no body twice, and nothing stays counted anywhere."""

    def __init__(self) -> None:
        super().__init__()
        assert current_coordinator() is None, "another test left a coordinator running"
        self.coordinator = OperationsCoordinator(
            cores=2,
            workers_per_core=1,
            max_blocking_threads=3,
            max_compensation_threads=2,
            storage_limits={"slow": 1},
        ).start()
        self.runs: list[int] = []
        self.tokens: list[TaskToken[Any]] = []
        self.gates: list[threading.Event] = []
        self.tag = 0

    def _next_tag(self) -> int:
        self.tag += 1
        return self.tag

    @rule()
    def submit_sleeper(self) -> None:
        gate = threading.Event()
        self.gates.append(gate)
        self.tokens.append(machine_sleeper(self.runs, self._next_tag(), gate))

    @rule()
    def submit_timed(self) -> None:
        gate = threading.Event()
        self.gates.append(gate)
        self.tokens.append(machine_timed(self.runs, self._next_tag(), gate))

    @rule()
    def submit_stored(self) -> None:
        # one slot for the tier: the next ones are parked before their executor
        gate = threading.Event()
        self.gates.append(gate)
        self.tokens.append(machine_stored(self.runs, self._next_tag(), gate))

    @rule(n=st.integers(0, 20_000))
    def submit_cruncher(self, n: int) -> None:
        # routed by a sticky key (its arguments): it pins a key until it ends
        self.tokens.append(machine_cruncher(self.runs, self._next_tag(), n))

    @precondition(lambda self: bool(self.tokens))
    @rule(picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=3), together=st.booleans())
    def submit_waiter(self, picks: list[int], together: bool) -> None:
        others = [self.tokens[p % len(self.tokens)] for p in picks]
        self.tokens.append(machine_waiter(self.runs, self._next_tag(), others, together))

    @precondition(lambda self: bool(self.tokens))
    @rule(pick=st.integers(0, 10_000))
    def kill(self, pick: int) -> None:
        self.tokens[pick % len(self.tokens)].kill("state machine")

    @rule()
    def let_deadlines_pass(self) -> None:
        time.sleep(0.06)  # timed calls still held at their gates end TIMEOUT meanwhile

    @precondition(lambda self: bool(self.gates))
    @rule(pick=st.integers(0, 10_000))
    def open_gate(self, pick: int) -> None:
        self.gates[pick % len(self.gates)].set()

    @invariant()
    def no_body_ran_twice(self) -> None:
        repeated = [tag for tag, count in Counter(list(self.runs)).items() if count > 1]
        assert not repeated, f"bodies ran more than once: {repeated}"

    def teardown(self) -> None:
        coordinator = self.coordinator
        try:
            for gate in self.gates:
                gate.set()
            for token in self.tokens:
                try:
                    token.get(timeout=WAIT)
                except Exception:
                    pass
                assert token.state in TERMINAL, f"{token!r} did not end"
            self.no_body_ran_twice()
            for token in self.tokens:
                if token.started_at is None:
                    assert token.state is not TokenState.COMPLETED
            assert _wait_released(coordinator) == {1: 0, 2: 0}, "a token stayed counted"
            assert coordinator.sticky_snapshot() == {}
            assert coordinator.storage_in_use("slow") == 0, "a storage slot leaked"
            backends = [coordinator.backend("thread", core) for core in (1, 2)]
        finally:
            coordinator.stop(timeout=WAIT)
        assert coordinator.stats().in_flight == 0
        for backend in backends:
            assert isinstance(backend, ThreadExecutor)
            assert backend._shared.blocking == 0, "blocking slots leaked"
            assert backend.stats().details["waiting_on_tokens"] == 0


DefaultCoordinatorMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDefaultCoordinatorMachine = DefaultCoordinatorMachine.TestCase
