"""Admin and life-cycle control on thread domains: kill, kill_token, kill_operation, timeout,
pause / resume, pause_operation / resume_operation, drain, stop — and their races."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tokengate.core import (
    CoordinatorNotRunningError,
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    TokenTimeoutError,
    task_token_guard,
)
from tokengate.core._deadlines import DeadlineWatcher

WAIT = 10.0
"""Upper bound of every wait in this module: reached only when something is broken."""

KILLED = TokenState.KILLED
TIMEOUT = TokenState.TIMEOUT
COMPLETED = TokenState.COMPLETED
WAITING = TokenState.WAITING


@task_token_guard(operation_type="ctl_blocking", tags={"hash_policy": "none"})
def blocking(started: threading.Event, release: threading.Event, returned: list[int]) -> str:
    started.set()
    release.wait(WAIT)
    returned.append(1)
    return "done"


@task_token_guard(
    operation_type="ctl_blocking_timeout", tags={"hash_policy": "none", "timeout": 0.2}
)
def blocking_with_timeout(
    started: threading.Event, release: threading.Event, returned: list[int]
) -> str:
    started.set()
    release.wait(WAIT)
    returned.append(1)
    return "done"


@task_token_guard(operation_type="ctl_stuck", tags={"hash_policy": "none"})
def stuck_body(started: threading.Event, forever: threading.Event) -> str:
    """Blocks far longer than any wait of the tests (until the test sets ``forever``)."""
    started.set()
    forever.wait(10 * WAIT)
    return "unstuck"


@task_token_guard(operation_type="ctl_record", tags={"hash_policy": "none"})
def record(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="ctl_other", tags={"hash_policy": "none"})
def record_other(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="ctl_record_late", tags={"hash_policy": "none", "timeout": 0.05})
def record_with_timeout(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="ctl_race_timeout", tags={"hash_policy": "none", "timeout": 0.002})
def record_racing_timeout(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="ctl_op_a", tags={"hash_policy": "none"})
def blocking_a(started: threading.Event, release: threading.Event) -> str:
    started.set()
    release.wait(WAIT)
    return "a"


@task_token_guard(operation_type="ctl_op_a", tags={"hash_policy": "none"})
def record_a(ran: list[object], value: object) -> object:
    ran.append(value)
    return value


@task_token_guard(operation_type="ctl_noop", tags={"hash_policy": "none"})
def noop() -> None:
    return None


@pytest.fixture
def serial() -> Iterator[OperationsCoordinator]:
    """One core, one standing worker: CPU-bound tokens run in submission order, one at a
    time (a blocked body gives the CPU slot to the next token: see ``saturable``)."""
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1).start()
    yield coordinator
    coordinator.stop(timeout=WAIT)


@pytest.fixture
def saturable() -> Iterator[OperationsCoordinator]:
    """One core whose thread executor runs at most two bodies at once: one blocking body
    (``max_blocking_threads=1``) and the one holding the CPU slot. Two blocked bodies
    saturate it, and the next tokens wait in the domain's queue."""
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1, max_blocking_threads=1)
    coordinator.start()
    yield coordinator
    coordinator.stop(timeout=WAIT)


def _saturate(release: threading.Event, returned: list[int]) -> list[TaskToken[str]]:
    """Start two blocked bodies on a ``saturable`` coordinator and wait until both run."""
    started = [threading.Event(), threading.Event()]
    blockers = [blocking(event, release, returned) for event in started]
    for event in started:
        assert event.wait(WAIT), "the second blocked body never started"
    return blockers


def _stop_in_thread(coordinator: OperationsCoordinator, **kwargs: Any) -> threading.Thread:
    stopper = threading.Thread(target=coordinator.stop, kwargs=kwargs, name="test-stopper")
    stopper.start()
    return stopper


# ---------------------------------------------------------------------- kill
def test_kill_before_start_never_runs(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        blocker = blocking(started, release, [])
        assert started.wait(WAIT)
        queued = record(ran, "queued")
        assert queued.kill("test reason") is True
        assert queued.state is KILLED
        assert queued.kill_reason == "test reason"
        with pytest.raises(TaskKilledError, match="test reason"):
            queued.get(0)
        assert queued.kill() is False
    finally:
        release.set()
    assert blocker.get(WAIT) == "done"
    assert record(ran, "after").get(WAIT) == "after"
    assert ran == ["after"]


def test_kill_while_running_releases_awaiters_at_once(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    returned: list[int] = []
    callbacks: list[TaskToken[Any]] = []
    token = blocking(started, release, returned)
    token.add_done_callback(callbacks.append)
    assert started.wait(WAIT)
    try:
        assert token.kill("admin") is True
        assert token.state is KILLED
        with pytest.raises(TaskKilledError):
            token.get(0)
        assert returned == []  # the body is still running ...
        assert serial.stats().cores[0].busy_workers == 1  # ... and its worker counts as busy
        assert callbacks == [token]
    finally:
        release.set()
    # One worker: the next token runs only after the killed body returned.
    assert noop().get(WAIT) is None
    assert returned == [1]
    assert token.state is KILLED
    with pytest.raises(TaskKilledError):
        token.get(0)
    assert callbacks == [token]
    counts = serial.stats().operations["ctl_blocking"]
    assert (counts.completed, counts.failed, counts.killed, counts.timeout) == (0, 0, 1, 0)
    records = [r for r in serial.recent_executions() if r.token_id == token.token_id]
    assert [r.state for r in records] == ["killed"]


@pytest.mark.asyncio
async def test_kill_releases_an_awaiting_coroutine(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    token = blocking(started, release, [])
    try:

        async def wait_for_it() -> str:
            return await token

        waiter = asyncio.ensure_future(wait_for_it())
        await asyncio.sleep(0)  # let the waiter start awaiting
        assert not waiter.done()
        assert token.kill("from the loop")
        with pytest.raises(TaskKilledError, match="from the loop"):
            await asyncio.wait_for(waiter, WAIT)
    finally:
        release.set()


def test_kill_token_and_kill_operation(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        running = blocking_a(started, release)
        assert started.wait(WAIT)
        queued_a = [record_a(ran, f"a{i}") for i in range(3)]
        queued_b = [record_other(ran, f"b{i}") for i in range(2)]
        assert serial.kill_token(queued_a[0].token_id, "by id") is True
        assert serial.kill_token(queued_a[0].token_id) is False
        assert serial.kill_token("no-such-token#0") is False
        assert queued_a[0].kill_reason == "by id"
        # The running token of the operation is killed too.
        assert serial.kill_operation("ctl_op_a", "by operation") == 3
        assert serial.kill_operation("ctl_op_a") == 0
        assert running.state is KILLED
        assert all(t.state is KILLED for t in queued_a)
        assert not any(t.done() for t in queued_b)
    finally:
        release.set()
    assert [t.get(WAIT) for t in queued_b] == ["b0", "b1"]
    assert ran == ["b0", "b1"]
    assert serial.stats().operations["ctl_op_a"].killed == 4


# ---------------------------------------------------------------------- timeout
def test_timeout_before_start_never_runs(saturable: OperationsCoordinator) -> None:
    release = threading.Event()
    ran: list[object] = []
    try:
        blockers = _saturate(release, [])
        late = record_with_timeout(ran, "late")  # waits in the saturated domain's queue
        error = late.exception(WAIT)
        assert isinstance(error, TokenTimeoutError)
        assert isinstance(error, TimeoutError)
        assert late.state is TIMEOUT
        assert late.started_at is None
    finally:
        release.set()
    assert [b.get(WAIT) for b in blockers] == ["done", "done"]
    assert record(ran, "after").get(WAIT) == "after"
    assert ran == ["after"]
    assert saturable.stats().operations["ctl_record_late"].timeout == 1


def test_a_token_does_not_wait_behind_one_blocked_body(serial: OperationsCoordinator) -> None:
    """With one standing worker, a body blocked in a plain wait does not hold up the next
    tokens: it loses the CPU slot and they run (in their order) while it still waits."""
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        blocker = blocking(started, release, [])
        assert started.wait(WAIT)
        assert [record(ran, i).get(WAIT) for i in range(5)] == list(range(5))
        assert not blocker.done()
    finally:
        release.set()
    assert blocker.get(WAIT) == "done"
    assert ran == list(range(5))


def test_timeout_while_running_releases_awaiters_at_once(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    returned: list[int] = []
    token = blocking_with_timeout(started, release, returned)
    try:
        assert started.wait(WAIT)
        with pytest.raises(TokenTimeoutError, match="deadline"):
            token.get(WAIT)
        assert token.state is TIMEOUT
        assert returned == []  # the body has not returned: awaiters did not wait for it
    finally:
        release.set()
    assert noop().get(WAIT) is None
    assert returned == [1]
    assert token.state is TIMEOUT
    counts = serial.stats().operations["ctl_blocking_timeout"]
    assert (counts.completed, counts.timeout) == (0, 1)


class _FakeTimed:
    """Just enough of a token for the deadline watcher."""

    token_id = "fake#0"

    def __init__(self) -> None:
        self.created_at = time.perf_counter()
        self.ended = False
        self.limits: list[float] = []
        self.timed_out = threading.Event()

    def done(self) -> bool:
        return self.ended

    def _timeout(self, limit: float) -> bool:
        self.limits.append(limit)
        self.ended = True
        self.timed_out.set()
        return True


def test_deadline_watcher_fires_due_deadlines_and_forgets_ended_tokens() -> None:
    watcher = DeadlineWatcher("test-deadlines")
    try:
        ended = [_FakeTimed() for _ in range(5000)]
        for fake in ended:
            watcher.add(cast("TaskToken[Any]", fake), 3600.0)
            fake.ended = True  # finished long before its deadline
        assert len(watcher) <= 1024  # bounded by the live deadlines, not by the history
        live = _FakeTimed()
        watcher.add(cast("TaskToken[Any]", live), 3600.0)
        due = _FakeTimed()
        watcher.add(cast("TaskToken[Any]", due), 0.01)  # earlier than everything held
        assert due.timed_out.wait(WAIT)
        assert due.limits == [0.01]
        assert live.limits == []
        assert not any(fake.limits for fake in ended)
    finally:
        watcher.stop()
    late = _FakeTimed()
    watcher.add(cast("TaskToken[Any]", late), 0.001)  # ignored once stopped
    assert len(watcher) == 0


def test_get_timeout_does_not_affect_the_token(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    token = blocking(started, release, [])
    try:
        assert started.wait(WAIT)
        with pytest.raises(TimeoutError) as caught:
            token.get(0.01)
        assert not isinstance(caught.value, TokenTimeoutError)
        assert not token.done()
    finally:
        release.set()
    assert token.get(WAIT) == "done"


# ---------------------------------------------------------------------- pause / resume / drain
def test_pause_holds_new_tokens_until_resume(serial: OperationsCoordinator) -> None:
    ran: list[object] = []
    serial.pause()
    try:
        assert serial.stats().paused
        tokens = [record(ran, i) for i in range(5)]  # submission still returns tokens
        assert all(t.state is WAITING for t in tokens)
        assert serial.stats().by_state["waiting"] == 5
    finally:
        serial.resume()
    assert not serial.stats().paused
    assert [t.get(WAIT) for t in tokens] == [0, 1, 2, 3, 4]
    assert ran == [0, 1, 2, 3, 4]


def test_pause_lets_admitted_tokens_finish(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    running = blocking(started, release, [])
    admitted = record(ran, "admitted")
    assert started.wait(WAIT)
    serial.pause()
    try:
        held = record(ran, "held")
        release.set()
        assert running.get(WAIT) == "done"
        assert admitted.get(WAIT) == "admitted"
        assert held.state is WAITING
        assert ran == ["admitted"]
    finally:
        release.set()
        serial.resume()
    assert held.get(WAIT) == "held"


def test_pause_operation_holds_only_that_operation(serial: OperationsCoordinator) -> None:
    ran: list[object] = []
    serial.pause_operation("ctl_record")
    try:
        held = record(ran, "held")
        assert noop().get(WAIT) is None  # other operations are admitted
        assert record_other(ran, "other").get(WAIT) == "other"
        assert held.state is WAITING
        assert serial.stats().paused_operations == ("ctl_record",)
    finally:
        serial.resume_operation("ctl_record")
    assert held.get(WAIT) == "held"
    assert ran == ["other", "held"]
    assert serial.stats().paused_operations == ()


def test_global_resume_keeps_paused_operations_held(serial: OperationsCoordinator) -> None:
    ran: list[object] = []
    serial.pause_operation("ctl_record")
    serial.pause()
    held_op = record(ran, "op")
    held_all = record_other(ran, "all")
    serial.resume()
    assert held_all.get(WAIT) == "all"
    assert held_op.state is WAITING
    serial.resume_operation("ctl_record")
    assert held_op.get(WAIT) == "op"


@pytest.mark.asyncio
async def test_tokens_held_by_pause_can_be_awaited(serial: OperationsCoordinator) -> None:
    serial.pause()
    tokens = [record([], i) for i in range(3)]
    asyncio.get_running_loop().call_soon(serial.resume)
    assert await asyncio.wait_for(asyncio.gather(*tokens), WAIT) == [0, 1, 2]


def test_resume_releases_a_large_hold_in_order(serial: OperationsCoordinator) -> None:
    ran: list[object] = []
    serial.pause_operation("ctl_record")
    serial.pause()
    held = [record(ran, i) for i in range(3000)]
    others = [record_other(ran, "x") for _ in range(3000)]
    serial.resume()
    assert all(t.get(WAIT) == "x" for t in others)
    assert all(t.state is WAITING for t in held)
    serial.resume_operation("ctl_record")
    assert [t.get(WAIT) for t in held] == list(range(3000))


def test_drain_kills_only_tokens_that_have_not_started(serial: OperationsCoordinator) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    try:
        running = blocking(started, release, [])
        assert started.wait(WAIT)
        queued = [record(ran, i) for i in range(3)]
        others = [record_other(ran, i) for i in range(2)]
        assert serial.drain("ctl_record") == 3
        assert all(t.state is KILLED for t in queued)
        assert not any(t.done() for t in others)
        assert serial.drain() == 2
        assert all(t.state is KILLED for t in others)
        assert running.state is TokenState.EXECUTING
        assert serial.drain() == 0
    finally:
        release.set()
    assert running.get(WAIT) == "done"
    assert noop().get(WAIT) is None
    assert ran == []


def test_drain_while_paused_kills_the_held_tokens(serial: OperationsCoordinator) -> None:
    ran: list[object] = []
    serial.pause()
    held = [record(ran, i) for i in range(4)]
    assert serial.drain() == 4
    serial.resume()
    assert all(t.state is KILLED for t in held)
    assert record(ran, "after").get(WAIT) == "after"
    assert ran == ["after"]


# ---------------------------------------------------------------------- stop
def test_stop_waits_for_admitted_work() -> None:
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1).start()
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    blocker = blocking(started, release, [])
    queued = [record(ran, i) for i in range(3)]
    assert started.wait(WAIT)
    stopper = _stop_in_thread(coordinator, timeout=WAIT)
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert blocker.get(0) == "done"
    assert [t.get(0) for t in queued] == [0, 1, 2]
    with pytest.raises(CoordinatorNotRunningError):
        record(ran, "late")


def test_stop_with_cancel_pending_kills_what_has_not_started() -> None:
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1).start()
    started, release = threading.Event(), threading.Event()
    ran: list[object] = []
    blocker = blocking(started, release, [])
    queued = [record(ran, i) for i in range(3)]
    assert started.wait(WAIT)
    stopper = _stop_in_thread(coordinator, cancel_pending=True, timeout=WAIT)
    try:
        # The queued tokens end at once, while the running body still blocks the stop.
        assert all(isinstance(t.exception(WAIT), TaskKilledError) for t in queued)
        assert not blocker.done()
    finally:
        release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert blocker.get(0) == "done"
    assert ran == []


def test_stop_while_paused_kills_the_held_tokens() -> None:
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1).start()
    coordinator.pause()
    held = [record([], i) for i in range(3)]
    coordinator.stop(timeout=WAIT)
    assert all(t.state is KILLED for t in held)


def test_stop_never_hangs_on_stuck_bodies_and_a_full_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # saturated: one blocking body (max_blocking_threads=1) and one on the CPU slot are stuck
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1, max_blocking_threads=1)
    coordinator.start()
    started = [threading.Event(), threading.Event()]
    forever = threading.Event()
    ran: list[object] = []
    try:
        stuck = [stuck_body(event, forever) for event in started]
        for event in started:
            assert event.wait(WAIT)
        queued = [record(ran, i) for i in range(20)]
        assert coordinator.stats().cores[0].depth == 20  # every one waits in the queue
        with caplog.at_level(logging.WARNING, logger="tokengate"):
            stopper = _stop_in_thread(coordinator, timeout=0.2)
            stopper.join(WAIT)
            assert not stopper.is_alive()
        assert all(t.state is KILLED for t in stuck)
        assert all(t.state is KILLED for t in queued)
        assert "abandoned" in caplog.text
        assert coordinator.stats().in_flight == 0
    finally:
        forever.set()
        coordinator.stop(timeout=WAIT)  # a no-op once stopped; on a failure, no leftover
    assert ran == []


def test_stop_without_wait_does_not_wait_for_a_stuck_body() -> None:
    # stop_timeout is far beyond the test's own timeout: only a stop that does not wait passes.
    coordinator = OperationsCoordinator(cores=1, workers_per_core=1, stop_timeout=600).start()
    started, forever = threading.Event(), threading.Event()
    try:
        stuck = stuck_body(started, forever)
        queued = record([], "queued")
        assert started.wait(WAIT)
        stopper = _stop_in_thread(coordinator, wait=False)
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert stuck.state is KILLED
        assert queued.state is KILLED
    finally:
        forever.set()


@pytest.mark.parametrize(("wait", "cancel_pending"), [(True, False), (True, True), (False, False)])
def test_stop_during_a_burst_from_several_threads(wait: bool, cancel_pending: bool) -> None:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2).start()
    submitters = 4
    tokens: list[list[TaskToken[Any]]] = [[] for _ in range(submitters)]
    warmed = [threading.Event() for _ in range(submitters)]
    refused = [False] * submitters

    def submit(index: int) -> None:
        mine = tokens[index]
        for i in range(50_000):
            try:
                mine.append(record([], (index, i)))
            except CoordinatorNotRunningError:
                refused[index] = True
                return
            if i == 200:
                warmed[index].set()

    threads = [
        threading.Thread(target=submit, args=(i,), name=f"burst-{i}") for i in range(submitters)
    ]
    for thread in threads:
        thread.start()
    assert all(event.wait(WAIT) for event in warmed)
    coordinator.stop(wait=wait, cancel_pending=cancel_pending, timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    everything = [t for mine in tokens for t in mine]
    assert len(everything) > 4 * 200
    assert all(t.done() for t in everything)
    states = Counter(t.state for t in everything)
    assert set(states) <= {COMPLETED, KILLED}
    for t in everything:
        if t.state is COMPLETED:
            assert t.get(0) == t.args[1]
    assert coordinator.stats().in_flight == 0
    assert coordinator.sticky_snapshot() == {}
    assert all(refused)


# ---------------------------------------------------------------------- races
def test_kill_races_completion() -> None:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2).start()
    total = 3000
    ran: list[object] = []
    finished: list[str] = []
    outcome: dict[str, bool] = {}
    inbox: queue.SimpleQueue[TaskToken[Any] | None] = queue.SimpleQueue()

    def killer() -> None:
        while (token := inbox.get()) is not None:
            outcome[token.token_id] = token.kill("race")

    killers = [threading.Thread(target=killer, name=f"killer-{i}") for i in range(2)]
    for thread in killers:
        thread.start()
    tokens = []
    for i in range(total):
        token = record(ran, i)
        token.add_done_callback(lambda t: finished.append(t.token_id))
        tokens.append(token)
        inbox.put(token)
    for _ in killers:
        inbox.put(None)
    for thread in killers:
        thread.join(WAIT)
    for token in tokens:
        token.exception(WAIT)
    coordinator.stop(timeout=WAIT)  # joins the workers: every body has returned

    runs = Counter(ran)
    assert max(runs.values(), default=0) <= 1  # no body ran twice
    for i, token in enumerate(tokens):
        assert token.state in (COMPLETED, KILLED)
        assert outcome[token.token_id] is (token.state is KILLED)
        if token.state is COMPLETED:
            assert token.get(0) == i
            assert runs[i] == 1
        if token.started_at is None:
            assert runs[i] == 0
    assert Counter(finished) == Counter({t.token_id: 1 for t in tokens})
    counts = coordinator.stats().operations["ctl_record"]
    states = Counter(t.state for t in tokens)
    assert counts.completed == states[COMPLETED]
    assert counts.killed == states[KILLED]
    assert counts.finished == total


def test_timeout_races_start() -> None:
    coordinator = OperationsCoordinator(cores=1, workers_per_core=2).start()
    total = 3000
    ran: list[object] = []
    tokens = [record_racing_timeout(ran, i) for i in range(total)]
    for token in tokens:
        token.exception(WAIT)
    coordinator.stop(timeout=WAIT)

    runs = Counter(ran)
    assert max(runs.values(), default=0) <= 1
    for i, token in enumerate(tokens):
        assert token.state in (COMPLETED, TIMEOUT)
        # A body runs if and only if its token moved to EXECUTING before the deadline fired.
        assert (runs[i] == 1) is (token.started_at is not None)
        if token.state is COMPLETED:
            assert token.get(0) == i
        else:
            assert isinstance(token.exception(0), TokenTimeoutError)
    counts = coordinator.stats().operations["ctl_race_timeout"]
    assert counts.completed + counts.timeout == total
