"""Stateful property test of the coordinator's life: start, stop, pause and kills interleaved.

A hypothesis ``RuleBasedStateMachine`` drives one coordinator through random programs that
interleave ``start()``, ``stop()`` called from two threads at once (waiting or not, cancelling
pending work or not), a ``start()`` racing a ``stop()``, ``pause``/``resume``, ``drain``,
kills, kills hit by an asynchronous ``KeyboardInterrupt`` (``PyThreadState_SetAsyncExc``),
bodies held on a gate, sticky tokens, tokens awaited from fresh event loops, and
done-callbacks that raise ``SystemExit`` on the thread that ends the token.

Only the public API is used (plus ``token.sticky_key``/``core_id``, documented), so the test
holds across rewrites of the internals. After every step it checks:

* I1 — in-flight tokens sharing a sticky key are on one core;
* I4 — no token is reported done more than once, and a reported token is terminal with the
  state it was reported in; while stopped, every token is terminal;
* I5 — no body ran more than once;
* nothing retained — while stopped, ``in_flight()``, ``stats().in_flight``,
  ``sticky_snapshot()`` and the conductor's domains are empty; every event loop that awaited
  a token is gone after a garbage collection.

At the end of each program the gate opens and the coordinator is stopped from two threads;
then every token must have been reported done exactly once, in its final state, with the
outcome its body or its kill explains, and I3 must hold.

Why the ``SystemExit`` callbacks raise only on the coordinator's threads: a callback's
``BaseException`` is re-raised to whoever made the terminal move once everything has run
(as ``concurrent.futures`` does); on the test's threads that is its own ``kill()``/``stop()``,
which the dedicated regression tests cover. Here they exercise the worker side:
the later callbacks, release steps and the worker must survive them.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.interrupts import Interrupter
from tests.support.reliability_checks import (
    RunCounter,
    live_worker_threads,
    record_faults,
    record_volume,
    sticky_violations,
)
from tokengate.conductor import conductor_snapshot
from tokengate.core import (
    CoordinatorNotRunningError,
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    task_token_guard,
)

#: Bound of every wait: short, so that a failing program (replayed while hypothesis looks
#: for the smallest one) fails in seconds instead of hanging the suite.
WAIT = 5.0
CORES = 2
WORKERS = 2
KEYS = ("a", "b", "c")


class Job:
    """The argument of every body: equal and hashing alike by key (sticky), with a marker."""

    __slots__ = ("fail", "gate", "key", "marker", "runs")

    def __init__(
        self, key: str, marker: str, gate: threading.Event | None, fail: bool, runs: RunCounter
    ) -> None:
        self.key = key
        self.marker = marker
        self.gate = gate
        self.fail = fail
        self.runs = runs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("job", self.key))

    def __repr__(self) -> str:
        return f"Job({self.key}, {self.marker})"


def run_job(job: Job) -> str:
    job.runs.enter(job.marker)
    try:
        if job.gate is not None:
            job.gate.wait(WAIT)
        if job.fail:
            raise ValueError(f"job {job.marker} fails on purpose")
        return job.marker
    finally:
        job.runs.leave()


lc_light = task_token_guard("rel2.lifecycle.light", tags={"weight": "light"})(run_job)
lc_medium = task_token_guard("rel2.lifecycle.medium", tags={"weight": "medium"})(run_job)
OPERATIONS = {"light": lc_light, "medium": lc_medium}


def exit_off_the_main_thread(_token: TaskToken[Any]) -> None:
    """A done-callback that raises ``SystemExit`` on the coordinator's own threads (see the
    module docstring); on the test's threads (``kill()``, ``stop()``) it does nothing."""
    if threading.current_thread().name.startswith("tokengate-"):
        raise SystemExit("a done-callback exits")


class LifecycleMachine(RuleBasedStateMachine):
    """Random lifecycle programs against one coordinator; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.coordinator = OperationsCoordinator(
            cores=CORES, workers_per_core=WORKERS, stop_timeout=2.0
        )
        self.runs = RunCounter()
        self.markers = itertools.count()
        self.gate = threading.Event()
        self.tokens: list[TaskToken[str]] = []
        self.marker_of: dict[int, str] = {}
        self.failing: set[str] = set()
        # I4 witness: list.append is a C method, so no interrupt can land inside it
        self.reported: list[TaskToken[Any]] = []
        self.loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
        self.interrupts = 0
        self.rng = random.Random(0)

    # ------------------------------------------------------------------ helpers
    def _make(self, op: str, key: str, hold: bool, fail: bool, exits: bool) -> TaskToken[str]:
        marker = f"m{next(self.markers)}"
        job = Job(key, marker, self.gate if hold else None, fail, self.runs)
        token = OPERATIONS[op](job)
        if exits:
            token.add_done_callback(exit_off_the_main_thread)
        token.add_done_callback(self.reported.append)
        self.tokens.append(token)
        self.marker_of[id(token)] = marker
        if fail:
            self.failing.add(marker)
        record_volume("lifecycle: tokens submitted")
        return token

    def _live(self) -> list[TaskToken[str]]:
        return [t for t in self.tokens if not t.done()]

    # ------------------------------------------------------------------ rules
    @initialize()
    def first_start(self) -> None:
        self.coordinator.start()

    @precondition(lambda self: not self.coordinator.running)
    @rule()
    def start(self) -> None:
        self.coordinator.start()
        assert self.coordinator.running

    @rule(
        op=st.sampled_from(sorted(OPERATIONS)),
        key=st.sampled_from(KEYS),
        count=st.integers(1, 6),
        hold=st.booleans(),
        fail=st.booleans(),
        exits=st.booleans(),
    )
    def submit(self, op: str, key: str, count: int, hold: bool, fail: bool, exits: bool) -> None:
        for _ in range(count):
            if not self.coordinator.running:
                with pytest.raises(CoordinatorNotRunningError):
                    OPERATIONS[op](Job(key, "never", None, False, self.runs))
                return
            self._make(op, key, hold, fail, exits)

    @precondition(lambda self: self.coordinator.running and not self.coordinator.stats().paused)
    @rule(count=st.integers(1, 8), exits=st.booleans())
    def await_from_a_fresh_loop(self, count: int, exits: bool) -> None:
        self.open_gate()  # nothing ahead of these tokens may wait for the gate
        tokens = [self._make("light", KEYS[i % 3], False, False, exits) for i in range(count)]

        async def gather() -> list[Any]:
            self.loops.append(weakref.ref(asyncio.get_running_loop()))
            return await asyncio.gather(*tokens, return_exceptions=True)

        results = asyncio.run(gather())
        for token, result in zip(tokens, results, strict=True):
            assert token.done()
            if token.state is TokenState.COMPLETED:
                assert result == self.marker_of[id(token)]
            else:
                assert isinstance(result, BaseException)

    @rule(picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=5))
    def kill_some(self, picks: list[int]) -> None:
        if not self.tokens:
            return
        for pick in picks:
            token = self.tokens[pick % len(self.tokens)]
            was_terminal = token.state.is_terminal
            killed = token.kill("killed by the program")
            if killed:
                assert not was_terminal
                assert token.state is TokenState.KILLED
                assert token.done()
                record_faults("lifecycle: kills")

    @precondition(lambda self: bool(self.tokens))
    @rule(pick=st.integers(0, 10_000), seed=st.integers(0, 1_000))
    def kill_under_keyboard_interrupt(self, pick: int, seed: int) -> None:
        live = self._live()
        if not live:
            return
        token = live[pick % len(live)]
        previous = sys.getswitchinterval()
        sys.setswitchinterval(5e-6)
        gc.disable()
        try:
            with Interrupter(threading.get_ident(), seed) as interrupter:
                for _ in range(3):  # a few windows: one of them usually lands
                    try:
                        interrupter.arm()
                        token.kill("killed under Ctrl-C")
                        interrupter.disarm()
                    except KeyboardInterrupt:
                        interrupter.disarm()
                        self.interrupts += 1
                        record_faults("lifecycle: KeyboardInterrupts during kills")
        finally:
            gc.enable()
            sys.setswitchinterval(previous)
        # whatever the interrupt hit, the token ended and settled
        assert token.state.is_terminal
        assert token.done()
        assert not token.kill("again")

    @precondition(lambda self: self.coordinator.running)
    @rule()
    def pause(self) -> None:
        record_volume("lifecycle: pauses")
        self.coordinator.pause()
        assert self.coordinator.stats().paused

    @rule()
    def resume(self) -> None:
        self.coordinator.resume()

    @rule()
    def drain(self) -> None:
        self.coordinator.drain()
        for token in self.tokens:
            assert token.state is not TokenState.WAITING or not token.done()

    @rule()
    def open_gate(self) -> None:
        self.gate.set()
        self.gate = threading.Event()

    @precondition(lambda self: self.coordinator.running)
    @rule(
        wait=st.booleans(),
        cancel_pending=st.booleans(),
        open_first=st.booleans(),
        timeout=st.sampled_from([0.2, 1.0, None]),
    )
    def stop_from_two_threads(
        self, wait: bool, cancel_pending: bool, open_first: bool, timeout: float | None
    ) -> None:
        if open_first:
            self.open_gate()
        errors: list[BaseException] = []

        def stopper() -> None:
            try:
                self.coordinator.stop(wait=wait, cancel_pending=cancel_pending, timeout=timeout)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=stopper) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive(), "stop() hung"
        assert errors == []
        assert not self.coordinator.running
        record_volume("lifecycle: stops from two threads at once")
        # both stop() calls returned only once everything had ended
        assert [t for t in self.tokens if not t.done()] == []
        if open_first:
            self.runs.wait_idle()
            assert live_worker_threads(self.coordinator) == 0

    @precondition(lambda self: self.coordinator.running)
    @rule()
    def start_racing_stop(self) -> None:
        self.open_gate()  # so that stop() has nothing to wait for and workers can exit
        stopper = threading.Thread(target=self.coordinator.stop)
        starter = threading.Thread(target=self.coordinator.start)
        stopper.start()
        starter.start()
        stopper.join(WAIT)
        starter.join(WAIT)
        assert not stopper.is_alive()
        assert not starter.is_alive()
        record_volume("lifecycle: start() racing stop()")
        if self.coordinator.running:  # start() won or waited for stop(): it must serve
            self.runs.wait_idle()
            probe = self._make("light", "a", False, False, False)
            if not self.coordinator.stats().paused:
                assert probe.get(WAIT) == self.marker_of[id(probe)]
        # Which of the two came last is up to the race; the program goes on stopped either
        # way, so that the next steps (and hypothesis's replays) do not depend on it.
        self.coordinator.stop()
        assert [t for t in self.tokens if not t.done()] == []

    # ------------------------------------------------------------------ invariants
    @invariant()
    def i1_one_core_per_sticky_key(self) -> None:
        if self.coordinator.running:
            assert sticky_violations(self.coordinator) == []

    @invariant()
    def i4_reported_at_most_once_and_terminal(self) -> None:
        counts = Counter(id(t) for t in list(self.reported))
        assert all(n == 1 for n in counts.values()), "a token was reported done twice"
        for token in list(self.reported):
            assert token.state.is_terminal
            assert token.done()

    @invariant()
    def i5_no_body_ran_twice(self) -> None:
        assert all(n <= 1 for n in dict(self.runs.runs).values())

    @invariant()
    def nothing_retained_while_stopped(self) -> None:
        if self.coordinator.running:
            return
        assert [t for t in self.tokens if not t.done()] == []
        assert self.coordinator.in_flight() == []
        assert self.coordinator.stats().in_flight == 0
        assert dict(self.coordinator.sticky_snapshot()) == {}
        assert dict(conductor_snapshot(self.coordinator)) == {}

    @invariant()
    def no_event_loop_retained(self) -> None:
        if not self.loops:
            return
        gc.collect()
        alive = [ref for ref in self.loops if ref() is not None]
        assert alive == [], f"{len(alive)} event loops that awaited tokens are still alive"
        self.loops.clear()

    # ------------------------------------------------------------------ the end
    def teardown(self) -> None:
        self.gate.set()
        try:
            if self.coordinator.running:
                self.stop_from_two_threads(True, False, True, 5.0)
            self.runs.wait_idle()
            reported = Counter(id(t) for t in self.reported)
            for token in self.tokens:
                assert token.done(), f"{token.token_id} never ended"
                assert reported[id(token)] == 1, (
                    f"{token.token_id} reported {reported[id(token)]} times"
                )
                marker = self.marker_of[id(token)]
                runs = self.runs.count(marker)
                assert runs <= 1
                state = token.state
                if state is TokenState.COMPLETED:
                    assert runs == 1
                    assert token.get(0) == marker
                elif state is TokenState.FAILED:
                    assert marker in self.failing
                    with pytest.raises(ValueError, match="on purpose"):
                        token.get(0)
                else:
                    assert state is TokenState.KILLED, state
                    assert isinstance(token.exception(0), TaskKilledError)
            assert self.coordinator.in_flight() == []
            assert dict(self.coordinator.sticky_snapshot()) == {}
            record_volume("lifecycle: programs run")
        finally:
            if self.coordinator.running:
                self.coordinator.stop(wait=False)


@pytest.fixture
def quiet_worker_logs() -> Iterator[None]:
    """The SystemExit callbacks are logged at ERROR by design; keep the output readable."""
    import logging

    logger = logging.getLogger("tokengate")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def test_random_lifecycles_keep_the_invariants(quiet_worker_logs: None) -> None:
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: see WAIT
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
