"""TaskToken: the state gate, blocking access, callbacks, identity, tags and kill."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskKilledException,
    TaskToken,
    TokenGateError,
    TokenState,
    TokenTimeoutError,
    Weight,
    task_token_guard,
)
from tokengate.core._guard import get_operation_plan
from tokengate.core._loops import LoopBridge
from tokengate.core._token import finish_many

T = TypeVar("T")
WAIT = 10.0  # generous bound for waits that normally end in milliseconds

TERMINAL = {TokenState.COMPLETED, TokenState.FAILED, TokenState.KILLED, TokenState.TIMEOUT}


def state_of(token: TaskToken[Any]) -> TokenState:
    """The token's state, read through a call so that mypy does not narrow it between reads."""
    return token.state


# --------------------------------------------------------------------------- a unit-level gate
class _GateOwner:
    """Stands in for the coordinator (a ``TokenOwner``): counts the release steps of each
    token."""

    name = "gate-owner"

    def __init__(self) -> None:
        self.released: dict[str, int] = {}
        self.lock = threading.Lock()

    def extension_state(self, key: Hashable, factory: Callable[[], T]) -> T:
        return factory()

    def token_ended(self, token: TaskToken[Any]) -> None:
        with self.lock:
            self.released[token.token_id] = self.released.get(token.token_id, 0) + 1

    def tokens_ended(self, tokens: list[TaskToken[Any]]) -> None:
        for token in tokens:
            self.token_ended(token)

    def body_returned(self, token: TaskToken[Any]) -> None:
        return None

    def bridge_for(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        return LoopBridge(loop)


@task_token_guard(operation_type="gate.unit")
def _unit_body(x: int) -> int:
    return x


_SEQ = itertools.count(1_000_000_000)


def _bare_token(owner: _GateOwner) -> TaskToken[int]:
    plan = get_operation_plan(_unit_body)
    assert plan is not None
    return TaskToken(plan, (1,), {}, owner, next(_SEQ))


_NON_TERMINAL_MOVES = {
    "wait": (frozenset({TokenState.CREATED}), TokenState.WAITING),
    "admit": (frozenset({TokenState.WAITING}), TokenState.ADMITTED),
    "execute": (frozenset({TokenState.ADMITTED}), TokenState.EXECUTING),
}
_TERMINAL_MOVES = ("complete", "fail", "kill", "timeout")


def _apply(token: TaskToken[int], move: str) -> bool:
    if move in _NON_TERMINAL_MOVES:
        allowed, new = _NON_TERMINAL_MOVES[move]
        return token._move(allowed, new)
    if move == "complete":
        return token._finish(TokenState.COMPLETED, 7)
    if move == "fail":
        return token._finish(TokenState.FAILED, exc=ValueError("body failed"))
    if move == "kill":
        return token.kill("test")
    return token._timeout(1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*_NON_TERMINAL_MOVES, *_TERMINAL_MOVES]), max_size=12))
def test_gate_follows_the_spec_state_machine(moves: list[str]) -> None:
    owner = _GateOwner()
    token = _bare_token(owner)
    expected = TokenState.CREATED
    terminal_moves = 0
    for move in moves:
        accepted = _apply(token, move)
        if expected in TERMINAL:
            assert not accepted, f"{move} was accepted after the terminal move"
        elif move in _NON_TERMINAL_MOVES:
            allowed, new = _NON_TERMINAL_MOVES[move]
            assert accepted == (expected in allowed)
            if accepted:
                expected = new
        else:
            assert accepted, f"{move} refused from the non-terminal state {expected}"
            terminal_moves += 1
            expected = {
                "complete": TokenState.COMPLETED,
                "fail": TokenState.FAILED,
                "kill": TokenState.KILLED,
                "timeout": TokenState.TIMEOUT,
            }[move]
        assert state_of(token) is expected
    assert terminal_moves <= 1
    assert owner.released.get(token.token_id, 0) == terminal_moves
    assert token.done() == (expected in TERMINAL)


@pytest.mark.parametrize("round_", range(3))
def test_racing_terminal_moves_end_once_and_release_once(round_: int) -> None:
    owner = _GateOwner()
    tokens = [_bare_token(owner) for _ in range(150)]
    for token in tokens:
        for move in ("wait", "admit", "execute"):
            assert _apply(token, move)
    callbacks: dict[str, int] = {}
    cb_lock = threading.Lock()

    def on_done(token: TaskToken[int]) -> None:
        with cb_lock:
            callbacks[token.token_id] = callbacks.get(token.token_id, 0) + 1

    for token in tokens:
        token.add_done_callback(on_done)
    wins: dict[str, list[str]] = {t.token_id: [] for t in tokens}
    barrier = threading.Barrier(len(_TERMINAL_MOVES) + 1)
    released_waiters = []

    def racer(move: str) -> None:
        barrier.wait()
        for token in tokens:
            if _apply(token, move):
                with cb_lock:
                    wins[token.token_id].append(move)

    def waiter() -> None:
        barrier.wait()
        for token in tokens:
            token.exception(timeout=WAIT)
            released_waiters.append(token.token_id)

    threads = [threading.Thread(target=racer, args=(m,)) for m in _TERMINAL_MOVES]
    threads.append(threading.Thread(target=waiter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all(len(w) == 1 for w in wins.values()), "a token did not end exactly once"
    assert all(owner.released[t.token_id] == 1 for t in tokens)
    assert all(callbacks[t.token_id] == 1 for t in tokens)
    assert len(released_waiters) == len(tokens)
    for token in tokens:
        winner = wins[token.token_id][0]
        assert (
            state_of(token)
            is {
                "complete": TokenState.COMPLETED,
                "fail": TokenState.FAILED,
                "kill": TokenState.KILLED,
                "timeout": TokenState.TIMEOUT,
            }[winner]
        )


def test_a_release_step_may_ask_for_its_own_token_outcome() -> None:
    outcome: list[BaseException | None] = []

    class Asking(_GateOwner):
        def token_ended(self, token: TaskToken[Any]) -> None:
            outcome.append(token.exception())  # must not wait for itself
            super().token_ended(token)

    owner = Asking()
    token = _bare_token(owner)
    assert token.kill("bye")
    assert len(outcome) == 1
    assert isinstance(outcome[0], TaskKilledError)


def test_waiters_are_released_only_after_the_release_steps() -> None:
    entered = threading.Event()
    proceed = threading.Event()

    class SlowRelease(_GateOwner):
        def token_ended(self, token: TaskToken[Any]) -> None:
            entered.set()
            proceed.wait(WAIT)
            super().token_ended(token)

    owner = SlowRelease()
    token = _bare_token(owner)
    killer = threading.Thread(target=token.kill)
    killer.start()
    assert entered.wait(WAIT)
    # The terminal move happened, its release steps have not finished yet.
    assert state_of(token) is TokenState.KILLED
    assert not token.done()
    with pytest.raises(TimeoutError):
        token.get(timeout=0.01)
    seen_after: list[int] = []

    def wait_then_look() -> None:
        token.exception(WAIT)
        seen_after.append(owner.released.get(token.token_id, 0))

    waiter = threading.Thread(target=wait_then_look)
    waiter.start()
    proceed.set()
    waiter.join(WAIT)
    killer.join(WAIT)
    assert seen_after == [1], "a waiter was released before the release steps ran"
    assert token.done()


# --------------------------------------------------------------------------- with a coordinator
@task_token_guard(operation_type="token.double")
def double(x: int) -> int:
    return 2 * x


@task_token_guard(operation_type="token.fails")
def fails(message: str) -> int:
    raise ValueError(message)


@task_token_guard(operation_type="token.waits")
def waits_for(event: threading.Event, value: int = 0) -> int:
    if not event.wait(WAIT):
        raise RuntimeError("the test never released this body")
    return value


@task_token_guard(operation_type="token.heavy_waits", tags={"weight": "heavy"})
def heavy_waits(event: threading.Event, started: threading.Event | None, runs: list[int]) -> int:
    runs.append(1)
    if started is not None:
        started.set()
    event.wait(WAIT)
    return len(runs)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a body blocked


def test_get_result_and_exception(coordinator: OperationsCoordinator) -> None:
    token = double(21)
    assert token.get(WAIT) == 42
    assert token.result(WAIT) == 42
    assert token.exception(WAIT) is None
    assert state_of(token) is TokenState.COMPLETED
    assert token.done()

    bad = fails("no luck")
    with pytest.raises(ValueError, match="no luck"):
        bad.get(WAIT)
    with pytest.raises(ValueError, match="no luck"):
        bad.result(WAIT)
    error = bad.exception(WAIT)
    assert isinstance(error, ValueError)
    assert state_of(bad) is TokenState.FAILED


def test_get_timeout_leaves_the_token_alone(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = waits_for(gate, 5)
    with pytest.raises(TimeoutError) as info:
        token.get(timeout=0.02)
    assert not isinstance(info.value, TokenTimeoutError)
    with pytest.raises(TimeoutError):
        token.exception(timeout=0.0)
    assert not token.done()
    assert state_of(token) in {TokenState.ADMITTED, TokenState.EXECUTING}
    gate.set()
    assert token.get(WAIT) == 5
    assert state_of(token) is TokenState.COMPLETED


@pytest.mark.asyncio
async def test_get_without_timeout_inside_a_loop_says_await(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = waits_for(gate, 3)
    with pytest.raises(RuntimeError, match="await"):
        token.get()
    with pytest.raises(RuntimeError, match="await"):
        token.result()
    gate.set()
    assert await token == 3
    # once done, a bounded get is fine inside the loop too
    assert token.get(timeout=0) == 3


def test_done_callbacks_from_a_plain_thread(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    token = waits_for(gate, 1)
    calls: list[tuple[str, str]] = []
    done = threading.Event()

    def first(t: TaskToken[int]) -> None:
        calls.append(("first", threading.current_thread().name))

    def second(t: TaskToken[int]) -> None:
        calls.append(("second", threading.current_thread().name))
        done.set()

    def removed(t: TaskToken[int]) -> None:
        calls.append(("removed", threading.current_thread().name))

    token.add_done_callback(first)
    token.add_done_callback(removed)
    token.add_done_callback(second)
    assert token.remove_done_callback(removed) == 1
    assert token.remove_done_callback(removed) == 0
    gate.set()
    assert done.wait(WAIT)
    assert [name for name, _ in calls] == ["first", "second"]
    # like concurrent.futures: run by the thread that completed the token (a worker)
    assert all(thread.startswith(coordinator.name) for _, thread in calls)
    late: list[TaskToken[int]] = []
    token.add_done_callback(late.append)
    assert late == [token], "a callback added after the end must run at once"


@pytest.mark.asyncio
async def test_done_callbacks_run_on_the_registering_loop(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    loop_thread = threading.get_ident()
    token = waits_for(gate, 1)
    fired = asyncio.Event()
    threads: list[int] = []

    def on_done(t: TaskToken[int]) -> None:
        threads.append(threading.get_ident())
        fired.set()

    token.add_done_callback(on_done)
    gate.set()
    await asyncio.wait_for(fired.wait(), WAIT)
    assert threads == [loop_thread]
    # already done: delivered on the loop too, never called synchronously by the caller
    late: list[int] = []
    late_fired = asyncio.Event()

    def on_late(t: TaskToken[int]) -> None:
        late.append(threading.get_ident())
        late_fired.set()

    token.add_done_callback(on_late)
    assert late == []
    await asyncio.wait_for(late_fired.wait(), WAIT)
    assert late == [loop_thread]


def test_a_failing_done_callback_does_not_stop_the_others(
    coordinator: OperationsCoordinator, gate: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    token = waits_for(gate, 1)
    later = threading.Event()

    def broken(t: TaskToken[int]) -> None:
        raise RuntimeError("callback bug")

    token.add_done_callback(broken)
    token.add_done_callback(lambda t: later.set())
    with caplog.at_level("ERROR", logger="tokengate"):
        gate.set()
        assert later.wait(WAIT)
    assert token.get(WAIT) == 1
    assert any("callback" in r.getMessage() for r in caplog.records)


def test_identity_fields(coordinator: OperationsCoordinator) -> None:
    tokens = [double(i) for i in range(200)]
    assert len({t.token_id for t in tokens}) == len(tokens)
    assert all(isinstance(t.token_id, str) and t.token_id for t in tokens)
    token = tokens[0]
    assert token.get(WAIT) == 0
    assert token.operation_type == "token.double"
    assert token.weight is Weight.MEDIUM
    assert state_of(token) is TokenState.COMPLETED
    assert isinstance(token.core_id, int)
    assert token.core_id in range(2, coordinator.cores + 1)
    assert token.conductor_seed is None
    assert token.coordinator is coordinator
    assert token.func is double.__wrapped__
    for t in tokens:
        t.get(WAIT)


def test_default_operation_type_is_the_qualname(coordinator: OperationsCoordinator) -> None:
    @task_token_guard()
    def local_op() -> str:
        return "ok"

    token = local_op()
    assert token.operation_type == local_op.__qualname__
    assert token.operation_type.endswith("local_op")
    assert token.get(WAIT) == "ok"


def test_tags_are_read_only_and_carry_the_routing_stamps(
    coordinator: OperationsCoordinator,
) -> None:
    @task_token_guard(tags={"weight": "LIGHT", "sticky_anchor": "anchor-a", "timeout": 30})
    def tagged(x: int) -> int:
        return x

    token = tagged(1)
    assert token.get(WAIT) == 1
    tags = token.tags
    assert tags["weight"] == Weight.LIGHT
    assert tags["sticky_anchor"] == "anchor-a"
    assert tags["timeout"] == 30
    assert tags["sticky_core"] == token.core_id
    assert "conductor_seed" not in tags  # not a conductor domain member
    with pytest.raises(TypeError):
        tags["weight"] = "heavy"  # type: ignore[index]
    with pytest.raises(TypeError):
        del tags["weight"]  # type: ignore[attr-defined]
    assert token.tags["weight"] == Weight.LIGHT


def test_tokens_do_not_proxy_their_results(coordinator: OperationsCoordinator) -> None:
    token = double(0)
    assert token.get(WAIT) == 0
    with pytest.raises(TypeError):
        _ = token + 1  # type: ignore[operator]
    assert bool(token) is True  # the result 0 is falsy: truthiness is not proxied
    assert cast(object, token) != 0
    with pytest.raises(TypeError):
        iter(token)  # type: ignore[call-overload]
    assert token.token_id in repr(token)


def test_kill_before_the_token_runs(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    runs: list[int] = []
    started = [threading.Event() for _ in range(coordinator.workers_per_core)]
    # HEAVY tokens all go to core 1: occupy each of its workers
    blockers = [heavy_waits(gate, s, runs) for s in started]
    for s in started:
        assert s.wait(WAIT)
    queued_runs: list[int] = []
    queued = heavy_waits(gate, None, queued_runs)
    assert state_of(queued) is TokenState.ADMITTED
    assert queued.kill("not needed") is True
    assert state_of(queued) is TokenState.KILLED
    assert queued.kill_reason == "not needed"
    assert queued.kill("again") is False
    with pytest.raises(TaskKilledError, match="not needed"):
        queued.get(WAIT)
    with pytest.raises(TaskKilledException):
        queued.result(WAIT)
    assert isinstance(queued.exception(WAIT), TokenGateError)
    gate.set()
    assert [b.get(WAIT) for b in blockers]
    # the worker that would have run it has drained its mailbox by now
    after = heavy_waits(gate, None, [])
    assert after.get(WAIT) == 1
    assert queued_runs == [], "a token killed before it started ran anyway"
    assert queued.duration is None


def test_kill_while_running_releases_awaiters_at_once(
    coordinator: OperationsCoordinator, gate: threading.Event
) -> None:
    runs: list[int] = []
    started = threading.Event()
    token = heavy_waits(gate, started, runs)
    assert started.wait(WAIT)
    assert state_of(token) is TokenState.EXECUTING
    released = threading.Event()
    outcome: list[BaseException | None] = []

    def awaiter() -> None:
        outcome.append(token.exception(WAIT))
        released.set()

    thread = threading.Thread(target=awaiter)
    thread.start()
    assert token.kill("stop it")
    assert released.wait(WAIT), "the awaiter was not released by the kill"
    assert isinstance(outcome[0], TaskKilledError)
    # the body still runs: its worker counts as busy until it returns
    assert coordinator.stats().cores[0].busy_workers == 1
    gate.set()
    follow = heavy_waits(gate, None, runs)
    assert follow.get(WAIT) == 2
    assert state_of(token) is TokenState.KILLED  # the late result was discarded
    with pytest.raises(TaskKilledError):
        token.get(0)
    thread.join(WAIT)


def test_kill_while_completing_ends_once(coordinator: OperationsCoordinator) -> None:
    finished: dict[str, int] = {}
    lock = threading.Condition()

    def count(t: TaskToken[int]) -> None:
        with lock:
            finished[t.token_id] = finished.get(t.token_id, 0) + 1
            lock.notify_all()

    for _ in range(3):
        tokens = [double(i) for i in range(400)]
        for t in tokens:
            t.add_done_callback(count)
        killed = sum(t.kill("race") for t in tokens)
        results = []
        for t in tokens:
            if t.state is TokenState.KILLED:
                with pytest.raises(TaskKilledError):
                    t.get(WAIT)
            else:
                results.append(t.get(WAIT))
        assert killed + len(results) == len(tokens)
        assert all(t.state in {TokenState.COMPLETED, TokenState.KILLED} for t in tokens)
    # done-callbacks run right after the waiters are released: wait for the last ones
    with lock:
        assert lock.wait_for(lambda: len(finished) == 1200, WAIT)
    assert all(n == 1 for n in finished.values())


def test_execution_record_is_written_by_the_terminal_move(
    coordinator: OperationsCoordinator,
) -> None:
    token = double(4)
    assert token.get(WAIT) == 8
    # get() returned: the release steps of the terminal move already ran
    record = coordinator.recent_executions(1)[0]
    assert record.token_id == token.token_id
    assert record.success
    assert record.state == "completed"
    assert record.core_id == token.core_id
    assert record.worker_id == token.worker_id
    assert record.duration is not None
    assert record.duration >= 0
    assert coordinator.get_token(token.token_id) is None
    bad = fails("record me")
    bad.exception(WAIT)
    record = coordinator.recent_executions(1)[0]
    assert record.token_id == bad.token_id
    assert not record.success
    assert record.error is not None
    assert "record me" in record.error


@pytest.mark.asyncio
async def test_await_and_cancel(coordinator: OperationsCoordinator, gate: threading.Event) -> None:
    assert await double(5) == 10
    token = waits_for(gate, 1)
    assert token.cancelled() is False
    assert token.cancel() is True  # asyncio cancellation kills the token
    with pytest.raises(TaskKilledError, match="cancelled"):
        await token
    assert state_of(token) is TokenState.KILLED
    assert token.cancelled() is False


def test_loop_bridge_tolerates_a_closed_loop() -> None:
    loop = asyncio.new_event_loop()
    bridge = LoopBridge(loop)
    loop.close()
    owner = _GateOwner()
    token = _bare_token(owner)
    seen: list[TaskToken[Any]] = []
    bridge.push(cast(Callable[[TaskToken[Any]], object], seen.append), token, None)
    assert seen == []  # nobody is left to notify, and nothing raised


def test_a_batch_settle_racing_kills_releases_each_token_exactly_once() -> None:
    """``finish_many`` (an executor's batch of outcomes) against kills from another thread,
    many rounds: every token ends once, its release steps run once, and it settles."""
    for _ in range(200):
        owner = _GateOwner()
        tokens = [_bare_token(owner) for _ in range(16)]
        for token in tokens:
            token._tstate = TokenState.EXECUTING
        start = threading.Barrier(2)

        def settle(batch: list[TaskToken[int]] = tokens, start: threading.Barrier = start) -> None:
            start.wait(WAIT)
            finish_many([(token, True, index) for index, token in enumerate(batch)])

        def kill(batch: list[TaskToken[int]] = tokens, start: threading.Barrier = start) -> None:
            start.wait(WAIT)
            for token in batch[::2]:
                token.kill("raced")

        threads = [threading.Thread(target=settle), threading.Thread(target=kill)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        for index, token in enumerate(tokens):
            assert token.done()
            assert owner.released[token.token_id] == 1
            if token.state is TokenState.COMPLETED:
                assert token.get(0) == index
            else:
                assert token.state is TokenState.KILLED
                assert index % 2 == 0
