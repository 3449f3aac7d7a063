"""Regression tests for the reliability defects found by attacking the released code.

Each test reproduces one defect through the public API (plus the documented token
attributes) and fails on the code before its fix: timeouts out of range, event loops and
tracebacks retained, unserialized stop/start, done-callbacks raising ``BaseException``, user
dunders run under the routing lock, sticky pins stranded by mutated arguments, drained tokens
kept while paused, and execution records bounded by count only. (Asynchronous
``KeyboardInterrupt`` during the terminal move: ``test_reliability2_interrupts.py``.)
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
import weakref
from typing import Any

import pytest

from tests.support.reliability_checks import live_worker_threads
from tokengate.conductor import get_active_seed
from tokengate.core import (
    ConfigurationError,
    OperationsCoordinator,
    TagValidationError,
    TaskToken,
    task_token_guard,
)
from tokengate.hashing import safe_args_key

WAIT = 20.0


@pytest.fixture
def coordinator() -> Any:
    with OperationsCoordinator(cores=2, workers_per_core=2, stop_timeout=WAIT) as running:
        yield running


@task_token_guard("rel2.echo", tags={"weight": "light", "hash_policy": "none"})
def echo(value: int) -> int:
    return value


@task_token_guard("rel2.fail", tags={"weight": "light", "hash_policy": "none"})
def fail(message: str) -> None:
    raise ValueError(message)


# --------------------------------------------------------------------------- 2. timeouts
def test_a_timeout_tag_beyond_timeout_max_is_rejected_at_decoration() -> None:
    def body() -> None:
        return None

    with pytest.raises(TagValidationError, match="timeout"):
        task_token_guard("rel2.huge_deadline", tags={"timeout": 1e10})(body)
    assert threading.TIMEOUT_MAX < 1e10


def test_waits_reject_nan_negative_and_huge_timeouts_and_inf_waits(
    coordinator: OperationsCoordinator,
) -> None:
    token = echo(5)
    assert token.get(math.inf) == 5  # inf: as long as it takes
    for bad in (math.nan, -1.0, -math.inf, 1e10):
        with pytest.raises(ValueError, match="timeout"):
            token.get(bad)
        with pytest.raises(ValueError, match="timeout"):
            token.exception(bad)
    with pytest.raises(TypeError, match="timeout"):
        token.result("soon")  # type: ignore[arg-type]


def test_stop_takes_infinite_and_checked_timeouts() -> None:
    with pytest.raises(ConfigurationError, match="stop_timeout"):
        OperationsCoordinator(stop_timeout=1e10)
    cases: list[tuple[float | None, float | None]] = [
        (math.inf, None),
        (60.0, math.inf),
        (60.0, 1e9),
    ]
    for stop_timeout, timeout in cases:
        running = OperationsCoordinator(
            cores=1, workers_per_core=1, stop_timeout=stop_timeout
        ).start()
        assert echo(1).get(WAIT) == 1
        running.stop(timeout=timeout)
        assert not running.running
        assert live_worker_threads(running) == 0
    running = OperationsCoordinator(cores=1, workers_per_core=1).start()
    try:
        for bad in (math.nan, -1.0, 1e10):
            with pytest.raises(ValueError, match="timeout"):
                running.stop(timeout=bad)
            assert running.running  # a rejected stop() changes nothing
    finally:
        running.stop()


# --------------------------------------------------------------------------- 3. loops
def test_event_loops_that_awaited_tokens_are_not_retained(
    coordinator: OperationsCoordinator,
) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def await_one(value: int) -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await echo(value)

    for value in range(500):
        assert asyncio.run(await_one(value)) == value
    gc.collect()
    alive = sum(1 for ref in loops if ref() is not None)
    assert alive == 0, f"{alive} of {len(loops)} event loops that awaited tokens are alive"


# --------------------------------------------------------------------------- 4. tracebacks
def _traceback_length(exc: BaseException) -> int:
    length = 0
    tb = exc.__traceback__
    while tb is not None:
        length += 1
        tb = tb.tb_next
    return length


def test_re_raising_a_stored_exception_does_not_grow_its_traceback(
    coordinator: OperationsCoordinator,
) -> None:
    token = fail("boom")
    token.exception(WAIT)
    lengths = set()
    for _ in range(200):
        try:
            token.get(0)
        except ValueError as exc:
            lengths.add(_traceback_length(exc))
    killed = echo(1)
    killed.kill("test")
    for _ in range(200):
        try:
            killed.get(0)
        except Exception as exc:
            lengths.add(_traceback_length(exc) + 1000)
    assert len(lengths) == 2, f"traceback lengths grew: {sorted(lengths)[:5]}..."


# --------------------------------------------------------------------------- 5. stop/start
def test_a_second_stop_waits_for_the_first_and_start_during_stop_starts_afresh() -> None:
    gate = threading.Event()

    @task_token_guard("rel2.gated", tags={"weight": "light", "hash_policy": "none"})
    def gated() -> int:
        gate.wait(WAIT)
        return 1

    running = OperationsCoordinator(cores=1, workers_per_core=1, stop_timeout=WAIT).start()
    token = gated()
    first = threading.Thread(target=running.stop)
    first.start()
    while running.running:  # the first stop() has begun
        time.sleep(0.005)
    seen: dict[str, bool] = {}
    second_called = threading.Event()

    def second() -> None:
        second_called.set()
        running.stop()
        seen["token done when the second stop returned"] = token.done()

    def restart() -> None:
        running.start()
        seen["running after start"] = running.running

    second_thread = threading.Thread(target=second)
    second_thread.start()
    restart_thread = threading.Thread(target=restart)
    restart_thread.start()
    second_called.wait(WAIT)
    time.sleep(0.2)  # let the second stop() and start() reach their waits (or return early)
    gate.set()
    for thread in (first, second_thread, restart_thread):
        thread.join(WAIT)
        assert not thread.is_alive()
    try:
        assert seen["token done when the second stop returned"]
        assert seen["running after start"]
        assert token.get(0) == 1
        assert echo(3).get(WAIT) == 3  # the restarted coordinator serves
    finally:
        running.stop()
    assert live_worker_threads(running) == 0


# --------------------------------------------------------------------------- 6. callbacks
def _exit(_token: TaskToken[Any]) -> None:
    raise SystemExit("a done-callback exits")


def test_a_callback_raising_systemexit_skips_no_later_callback_nor_storage_slot() -> None:
    gate = threading.Event()

    @task_token_guard("rel2.slow_io", tags={"storage_speed": "slow", "hash_policy": "none"})
    def slow_io(value: int) -> int:
        gate.wait(WAIT)
        return value

    with OperationsCoordinator(
        cores=1, workers_per_core=2, storage_limits={"slow": 1}, stop_timeout=WAIT
    ) as running:
        later: list[int] = []
        first = slow_io(1)
        first.add_done_callback(_exit)
        first.add_done_callback(lambda t: later.append(t.get(0)))
        gate.set()
        assert first.get(WAIT) == 1
        second = slow_io(2)  # needs the only slot of the tier
        assert second.get(WAIT) == 2
        # get() returns once a token settles; its callbacks and the slot's release finish
        # on the worker thread right after, in either order.
        deadline = time.monotonic() + WAIT
        while (later != [1] or running.storage_in_use("slow")) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert later == [1]
        assert running.storage_in_use("slow") == 0


def test_a_lead_whose_callback_raises_systemexit_leaves_no_domain_on_its_thread() -> None:
    gate = threading.Event()

    @task_token_guard("rel2.lead", tags={"external_calls": ["rel2.child"]})
    def lead() -> str | None:
        gate.wait(WAIT)
        return get_active_seed()

    @task_token_guard("rel2.seed_probe", tags={"hash_policy": "none"})
    def seed_probe() -> str | None:
        return get_active_seed()

    with OperationsCoordinator(cores=1, workers_per_core=1, stop_timeout=WAIT):
        token = lead()
        token.add_done_callback(_exit)
        gate.set()
        assert token.get(WAIT) is not None  # it ran inside its own domain
        # the same (only) worker thread runs the next, unrelated body
        assert seed_probe().get(WAIT) is None


def test_kill_re_raises_a_callbacks_systemexit_only_once_everything_has_run(
    coordinator: OperationsCoordinator,
) -> None:
    gate = threading.Event()

    @task_token_guard("rel2.killed_with_exit", tags={"weight": "light"})
    def held(key: str) -> int:
        gate.wait(WAIT)
        return 1

    token = held("k")
    later: list[TaskToken[Any]] = []
    token.add_done_callback(_exit)
    token.add_done_callback(later.append)
    try:
        with pytest.raises(SystemExit, match="exits"):
            token.kill("by the test")  # as concurrent.futures lets a callback's SystemExit out
        assert token.done()
        assert later == [token]
        assert not token.kill("again")
        assert coordinator.in_flight() == []
        assert dict(coordinator.sticky_snapshot()) == {}
    finally:
        gate.set()


# --------------------------------------------------------------------------- 7. routing lock
class SlowHash:
    """Hashes like its value; the ``block_on``-th hash waits for ``release``."""

    def __init__(self, value: int, block_on: int, release: threading.Event) -> None:
        self.value = value
        self.calls = 0
        self.block_on = block_on
        self.release = release
        self.blocked = threading.Event()
        self.unblocked = threading.Event()

    def __hash__(self) -> int:
        self.calls += 1
        if self.calls == self.block_on:
            self.blocked.set()
            self.release.wait(3 * WAIT)
            self.unblocked.set()
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowHash) and other.value == self.value

    def __repr__(self) -> str:
        return f"SlowHash({self.value})"


class SlowRepr:
    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.entered = threading.Event()
        self.left = threading.Event()

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return other is self

    def __repr__(self) -> str:
        self.entered.set()
        self.release.wait(3 * WAIT)
        self.left.set()
        return "SlowRepr()"


@task_token_guard("rel2.sticky_a", tags={"weight": "light"})
def sticky_a(arg: object) -> int:
    return 1


@task_token_guard("rel2.sticky_b", tags={"weight": "light"})
def sticky_b(arg: object) -> int:
    return 2


def test_a_slow_user_hash_does_not_stall_other_threads_routing(
    coordinator: OperationsCoordinator,
) -> None:
    release = threading.Event()
    probe = SlowHash(1, block_on=0, release=release)
    safe_args_key((probe,))  # the hashes the fingerprint itself takes
    # block on the first hash after the fingerprint: the one the routing step takes
    slow = SlowHash(1, block_on=probe.calls + 1, release=release)
    tokens: list[TaskToken[int]] = []
    caller = threading.Thread(target=lambda: tokens.append(sticky_a(slow)))
    caller.start()
    try:
        assert slow.blocked.wait(WAIT)
        other = sticky_b("another key")  # another thread, another anchor
        assert other.get(WAIT) == 2
        assert not slow.unblocked.is_set(), "routing was stalled by another call's __hash__"
    finally:
        release.set()
        caller.join(WAIT)
    assert tokens[0].get(WAIT) == 1


def test_a_slow_user_repr_does_not_stall_routing_while_sticky_snapshot_runs(
    coordinator: OperationsCoordinator,
) -> None:
    gate = threading.Event()
    release = threading.Event()

    @task_token_guard("rel2.held_key", tags={"weight": "light"})
    def held_key(arg: object) -> int:
        gate.wait(WAIT)
        return 3

    slow = SlowRepr(release)
    holder = held_key(slow)
    snapshots: list[dict[str, int]] = []
    reader = threading.Thread(target=lambda: snapshots.append(dict(coordinator.sticky_snapshot())))
    reader.start()
    try:
        assert slow.entered.wait(WAIT)
        assert sticky_b("meanwhile").get(WAIT) == 2
        assert not slow.left.is_set(), "routing waited for a user __repr__"
    finally:
        release.set()
        gate.set()
        reader.join(WAIT)
    assert holder.get(WAIT) == 3
    assert any("SlowRepr()" in key for key in snapshots[0])


# --------------------------------------------------------------------------- 8. mutation
class Mutable:
    """Hashable by a field the body changes (a bad idea users have)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __hash__(self) -> int:
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mutable) and other.value == self.value


def test_a_body_that_mutates_its_hashable_argument_strands_no_pin(
    coordinator: OperationsCoordinator,
) -> None:
    @task_token_guard("rel2.mutator", tags={"weight": "light"})
    def mutator(box: Mutable) -> int:
        box.value += 1000
        return box.value

    tokens = [mutator(Mutable(i)) for i in range(5)]
    assert [t.get(WAIT) for t in tokens] == [1000, 1001, 1002, 1003, 1004]
    assert coordinator.in_flight() == []
    assert dict(coordinator.sticky_snapshot()) == {}
    assert coordinator.stats().sticky_pins == 0


# --------------------------------------------------------------------------- 9. drained
def test_tokens_drained_while_paused_are_not_kept_until_resume(
    coordinator: OperationsCoordinator,
) -> None:
    coordinator.pause()
    try:
        refs = [weakref.ref(echo(i)) for i in range(2_000)]
        assert coordinator.drain() == 2_000
        gc.collect()
        alive = sum(1 for ref in refs if ref() is not None)
        assert alive == 0, f"{alive} drained tokens are still referenced while paused"
    finally:
        coordinator.resume()


# --------------------------------------------------------------------------- 10. records
def test_execution_records_keep_a_bounded_error_text(coordinator: OperationsCoordinator) -> None:
    tokens = [fail("x" * 100_000) for _ in range(20)]
    for token in tokens:
        token.exception(WAIT)
    records = coordinator.recent_executions(20)
    assert len(records) == 20
    for record in records:
        assert record.error is not None
        assert record.error.startswith("ValueError('xxx")
        assert len(record.error) <= 500, len(record.error)
