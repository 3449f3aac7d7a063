"""The thread executor: shared queues, managed blocking, elastic blocking IO, the CPU slot.

Every test drives a real ``ThreadExecutor`` with tokens of a real started coordinator
(tests/support/threads_harness.py) under real concurrency. No test asserts a wall-clock
time: head-of-line blocking is shown by short calls that finish while a long one is still
held open, concurrency by barriers that only open when enough bodies run at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from typing import Any

import pytest
from threads_harness import Harness, harness

from tokengate.core import TaskKilledError, TaskToken, TokenState, task_token_guard
from tokengate.core._blocking import ManagedWaiters, blocking, current_handler
from tokengate.core._threads import ThreadExecutor

WAIT = 10.0


def detail(executor: ThreadExecutor, key: str) -> int:
    """An integer entry of the executor's ``stats().details``."""
    value = executor.stats().details[key]
    assert isinstance(value, int)
    return value


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


@task_token_guard("threads.nap", tags={"hash_policy": "none"})
def nap(seconds: float, gate: threading.Event | None = None) -> float:
    if gate is not None:
        if not gate.wait(WAIT):
            raise RuntimeError("the gate never opened")
        return -1.0
    time.sleep(seconds)
    return seconds


@task_token_guard("threads.spin", tags={"hash_policy": "none"})
def spin(stop: threading.Event | None, n: int, gauge: Gauge | None = None) -> int:
    """CPU-bound: sums ``n`` numbers, or spins until ``stop`` is set."""
    if gauge is not None:
        gauge.__enter__()
    try:
        total = 0
        if stop is not None:
            deadline = time.monotonic() + WAIT
            while not stop.is_set() and time.monotonic() < deadline:
                total += 1
            return total
        for i in range(n):
            total += i
        return total
    finally:
        if gauge is not None:
            gauge.__exit__()


@task_token_guard("threads.meet", tags={"hash_policy": "none"})
def meet(barrier: threading.Barrier, gauge: Gauge, pause: float = 0.0) -> int:
    time.sleep(pause)
    with gauge:
        return barrier.wait()


@task_token_guard("threads.child", tags={"hash_policy": "none"})
def child(value: int) -> int:
    total = 0
    for i in range(2000):
        total += i
    return value * 2 + total * 0


@task_token_guard("threads.lead", tags={"hash_policy": "none"})
def lead(h: Harness, core: int, children: int) -> int:
    tokens = [h.submit(child, i, core=core) for i in range(children)]
    return sum(token.get(timeout=WAIT) for token in tokens)


@pytest.fixture
def two_cores() -> Iterator[Harness]:
    with harness(cores=2, workers_per_core=4) as made:
        yield made


def test_short_calls_do_not_wait_behind_a_long_one(two_cores: Harness) -> None:
    gate = threading.Event()
    long = two_cores.submit(nap, 2.0, gate)
    shorts = [two_cores.submit(nap, 0.05) for _ in range(11)]
    try:
        # every short call ends while the long one is still held open by its gate
        assert [token.get(timeout=WAIT) for token in shorts] == [0.05] * 11
        assert long.state is TokenState.EXECUTING
    finally:
        gate.set()
    assert long.get(timeout=WAIT) == -1.0


def test_short_cpu_calls_do_not_wait_behind_a_long_cpu_call(two_cores: Harness) -> None:
    stop = threading.Event()
    for _ in range(3):  # measured CPU-bound first
        two_cores.submit(spin, None, 1000).get(timeout=WAIT)
    long = two_cores.submit(spin, stop, 0)
    shorts = [two_cores.submit(spin, None, 20_000) for _ in range(6)]
    try:
        assert [token.get(timeout=WAIT) for token in shorts] == [sum(range(20_000))] * 6
        assert long.state is TokenState.EXECUTING
    finally:
        stop.set()
    assert long.get(timeout=WAIT) > 0
    assert detail(two_cores.executor(1), "slot_demotions") >= 1


@pytest.mark.parametrize("workers", [1, 4])
def test_leads_waiting_for_children_on_their_own_core_complete(workers: int) -> None:
    with harness(cores=2, workers_per_core=workers) as h:
        leads = [h.submit(lead, h, 1, 3) for _ in range(8)]
        assert [token.get(timeout=WAIT) for token in leads] == [6] * 8
        assert detail(h.executor(1), "waiting_on_tokens") == 0
        # token.get() inside a body is a managed wait: the slot went to another worker
        assert detail(h.executor(1), "compensations") >= 1


@task_token_guard("threads.managed_lead", tags={"hash_policy": "none"})
def managed_lead(h: Harness, children: int) -> int:
    tokens = [h.submit(child, i, core=1) for i in range(children)]
    with blocking():  # what the token's wait path does on a worker
        return sum(token.get(timeout=WAIT) for token in tokens)


def test_a_managed_wait_hands_the_slot_to_a_compensating_worker() -> None:
    with harness(cores=1, workers_per_core=1, max_compensation_threads=8) as h:
        h.submit(child, 0).get(timeout=WAIT)  # child: measured CPU-bound
        h.submit(managed_lead, h, 1).get(timeout=WAIT)
        leads = [h.submit(managed_lead, h, 3) for _ in range(6)]
        assert [token.get(timeout=WAIT) for token in leads] == [6] * 6
        # one standing worker: the children ran on another thread while their leads waited
        # (a compensating worker; when a worker was already searching for work as a lead
        # began its wait, that one took over and no new compensation was counted)
        assert detail(h.executor(1), "peak_threads") >= 2
        assert detail(h.executor(1), "waiting_on_tokens") == 0


def test_forty_blocking_calls_run_at_once(two_cores: Harness) -> None:
    two_cores.submit(nap, 0.01).get(timeout=WAIT)  # measured: blocking
    two_cores.submit(meet, threading.Barrier(1), Gauge(), 0.01).get(timeout=WAIT)  # too
    barrier = threading.Barrier(40, timeout=WAIT)
    gauge = Gauge()
    tokens = [two_cores.submit(meet, barrier, gauge) for _ in range(40)]
    assert sorted(token.get(timeout=WAIT) for token in tokens) == list(range(40))
    assert gauge.peak == 40
    decisions = two_cores.executor(1).decisions()
    assert decisions["threads.meet"].kind == "blocking"
    assert decisions["threads.nap"].kind == "blocking"


def test_unmeasured_blocking_calls_still_meet(two_cores: Harness) -> None:
    # never measured (no call has ended): the slot monitor sees each body blocked
    barrier = threading.Barrier(12, timeout=WAIT)
    gauge = Gauge()
    tokens = [two_cores.submit(meet, barrier, gauge) for _ in range(12)]
    assert sorted(token.get(timeout=WAIT) for token in tokens) == list(range(12))
    assert detail(two_cores.executor(1), "slot_demotions") >= 11


@pytest.mark.parametrize("cap", [1, 5])
def test_blocking_calls_are_bounded_by_max_blocking_threads(cap: int) -> None:
    # two domains share the bound: a slot freed in one must wake the other waiting for it
    with harness(cores=2, workers_per_core=2, max_blocking_threads=cap) as h:
        h.submit(sleep_counted, 0.001, Gauge()).get(timeout=WAIT)  # measured: blocking
        gauge = Gauge()
        tokens = [h.submit(sleep_counted, 0.01, gauge, core=1 + i % 2) for i in range(30)]
        for token in tokens:
            token.get(timeout=WAIT)
        assert min(2, cap) <= gauge.peak <= cap


@task_token_guard("threads.sleep_counted", tags={"hash_policy": "none"})
def sleep_counted(seconds: float, gauge: Gauge) -> None:
    with gauge:
        time.sleep(seconds)


def test_cpu_bound_bodies_take_turns_on_one_slot(two_cores: Harness) -> None:
    for core in (1, 2):
        two_cores.submit(spin, None, 1000, core=core).get(timeout=WAIT)
    gauge = Gauge()
    tokens = [two_cores.submit(spin, None, 3000, gauge, core=1 + i % 2) for i in range(400)]
    for token in tokens:
        token.get(timeout=WAIT)
    demotions = sum(detail(two_cores.executor(core), "slot_demotions") for core in (1, 2))
    # one at a time, except where the monitor took the slot from a body it saw stalled
    # (a loaded machine can deschedule a runner)
    assert 1 <= gauge.peak <= 1 + demotions
    decision = two_cores.executor(1).decisions()["threads.spin"]
    assert decision.kind == "cpu"
    assert decision.cpu_fraction is not None
    assert decision.cpu_fraction > 0.3
    assert "CPU-bound" in decision.reason


def test_a_killed_queued_token_never_runs(two_cores: Harness) -> None:
    gate = threading.Event()
    two_cores.submit(nap, 0.001).get(timeout=WAIT)
    ran: list[int] = []
    with harness(cores=1, workers_per_core=1, max_blocking_threads=1) as h:
        blocker = h.submit(nap, 0, gate)
        victim = h.submit(record, ran, 1)
        assert victim.kill("test")
        gate.set()
        assert blocker.get(timeout=WAIT) == -1.0
        with pytest.raises(TaskKilledError):
            victim.get(timeout=WAIT)
        h.submit(record, ran, 2).get(timeout=WAIT)
    assert ran == [2]


@task_token_guard("threads.record", tags={"hash_policy": "none"})
def record(into: list[int], value: int) -> None:
    into.append(value)


def test_shutdown_ends_queued_and_running_tokens_without_hanging() -> None:
    gate = threading.Event()
    with harness(cores=1, workers_per_core=1, max_blocking_threads=1) as h:
        h.submit(nap, 0.001).get(timeout=WAIT)
        running = h.submit(nap, 0, gate)
        queued = [h.submit(nap, 0.001) for _ in range(5)]
        executor = h.executor(1)
        executor.shutdown(0.2)
        assert running.state is TokenState.KILLED
        assert all(t.state is TokenState.KILLED for t in queued)
        assert not executor.stats().alive
        late = h.token(nap, 0.001)
        executor.submit([late])
        assert late.state is TokenState.KILLED
        gate.set()


def test_blocking_section_outside_a_worker_does_nothing() -> None:
    assert current_handler() is None
    with blocking():
        pass
    seen: list[object] = []
    with harness(cores=1, workers_per_core=1) as h:
        token = h.submit(handler_of, seen)
        token.get(timeout=WAIT)
    assert seen
    assert seen[0] is not None


@task_token_guard("threads.handler_of", tags={"hash_policy": "none"})
def handler_of(into: list[object]) -> None:
    into.append(current_handler())


def test_stats_report_threads_and_queues(two_cores: Harness) -> None:
    gate = threading.Event()
    two_cores.submit(nap, 0.001).get(timeout=WAIT)
    held = [two_cores.submit(nap, 0, gate) for _ in range(3)]
    executor = two_cores.executor(1)
    deadline = time.monotonic() + WAIT
    while executor.stats().busy < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    snapshot = executor.stats()
    assert snapshot.busy == 3
    assert snapshot.workers >= 3
    assert snapshot.alive
    assert snapshot.details["blocking_running"] == 3
    gate.set()
    for token in held:
        token.get(timeout=WAIT)


def test_the_executor_is_its_own_factory() -> None:
    with harness(cores=1) as h:
        executor = h.executor(1)
        assert isinstance(executor, ThreadExecutor)
        token: TaskToken[Any] = h.submit(child, 4)
        assert token.get(timeout=WAIT) == 8


@task_token_guard("threads.futures_wait", tags={"hash_policy": "none"})
def futures_wait(future: Future[int]) -> int:
    done, _ = wait([future], timeout=WAIT)
    return future.result() if done else -1


def test_concurrent_futures_wait_on_managed_waiters_counts_as_a_managed_wait() -> None:
    future: Future[int] = Future()
    future._waiters = ManagedWaiters()
    with harness(cores=1, workers_per_core=1) as h:
        executor = h.executor(1)
        token = h.submit(futures_wait, future)
        deadline = time.monotonic() + WAIT
        while detail(executor, "waiting_on_tokens") != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert detail(executor, "waiting_on_tokens") == 1
        future.set_result(7)
        assert token.get(timeout=WAIT) == 7
        assert detail(executor, "waiting_on_tokens") == 0


def test_a_burst_of_cpu_bound_calls_wakes_few_workers(two_cores: Harness) -> None:
    two_cores.submit(spin, None, 500).get(timeout=WAIT)  # measured: CPU-bound
    executor = two_cores.executor(1)
    before = detail(executor, "wakeups")
    tokens = [two_cores.submit(spin, None, 500) for _ in range(2000)]
    for token in tokens:
        token.get(timeout=WAIT)
    # the runner drains the queue: no wake-up per submit (only when it had run dry)
    assert detail(executor, "wakeups") - before < len(tokens) // 10
    assert detail(executor, "peak_threads") <= 4
