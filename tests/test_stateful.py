"""Stateful property test: a live coordinator driven by random programs (SPEC §4, I1-I5).

A hypothesis ``RuleBasedStateMachine`` submits sticky tokens of three operations sharing one
sticky anchor (one with a deadline), conductor leads that create children while they run,
bodies that fail and process-domain tokens, and interleaves kills, operation kills, pauses
and resumes (global and per operation), drains and the release of held bodies. After every
step it checks:

* I1 — in-flight tokens that share a sticky key are on one core;
* I2 — every child of a lead carries the lead's seed and runs on the lead's core;
* I4 — a token reported done is terminal and was reported exactly once; ``kill()`` that
  returned True left the token ``KILLED``;
* I5 — no body ran twice, and a token that ended without starting never ran;
* admission — a token submitted while its admission is paused is neither routed nor started.

At the end of every program everything is released and it checks that every token is
terminal with the right error, I5 in full (process bodies too, through a run log) and I3:
the token table, the sticky registry and the conductor domains are empty.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support import reliability_targets as targets
from tests.support.reliability_checks import (
    WAIT,
    RunCounter,
    TerminalLedger,
    assert_quiescent,
    conductor_violations,
    record_faults,
    record_volume,
    sticky_violations,
    wait_all,
)
from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenState,
    TokenTimeoutError,
    task_token_guard,
)

ANCHOR = "reliability.stateful"
KEYS = ("k0", "k1", "k2", "k3")
#: Deadline of the timed operation: short, so programs see tokens time out held or running.
DEADLINE = 0.05
#: Process tokens per program: each costs a round trip to the worker process.
MAX_PROCESS_TOKENS = 3
NOT_STARTED = frozenset({TokenState.CREATED, TokenState.WAITING, TokenState.ADMITTED})


class Ticket:
    """The argument of every thread body: equal (and hashing equal) by sticky key only, so
    tokens with the same key share a sticky pin while each carries its own marker."""

    __slots__ = ("fail", "hold", "key", "machine", "marker")

    def __init__(
        self, machine: CoordinatorMachine, key: str, marker: str, *, hold: bool, fail: bool
    ) -> None:
        self.machine = machine
        self.key = key
        self.marker = marker
        self.hold = hold
        self.fail = fail

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ticket) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("ticket", self.key))

    def __repr__(self) -> str:
        return f"Ticket({self.key}, {self.marker})"


def body(ticket: Ticket) -> str:
    """A thread body: counts its run, optionally waits for the gate, optionally fails."""
    machine = ticket.machine
    machine.runs.enter(ticket.marker)
    try:
        if ticket.hold:
            machine.gate_for_new_bodies().wait(WAIT)
        if ticket.fail:
            raise ValueError(f"body {ticket.marker} failed on purpose")
        return ticket.marker
    finally:
        machine.runs.leave()


def lead_body(ticket: Ticket, children: int) -> str:
    """A conductor lead: creates ``children`` child tokens while it runs, then returns."""
    machine = ticket.machine
    machine.runs.enter(ticket.marker)
    try:
        made = []
        for _ in range(children):
            marker = machine.new_marker("c")
            token = st_child(Ticket(machine, ticket.key, marker, hold=ticket.hold, fail=False))
            machine.marker_of[id(token)] = marker
            machine.thread_tokens.append(machine.ledger.track(token))
            made.append(token)
        machine.children[ticket.marker] = made
        return ticket.marker
    finally:
        machine.runs.leave()


st_medium = task_token_guard(
    "reliability.stateful.medium", tags={"weight": "medium", "sticky_anchor": ANCHOR}
)(body)
st_light = task_token_guard(
    "reliability.stateful.light", tags={"weight": "light", "sticky_anchor": ANCHOR}
)(body)
st_timed = task_token_guard(
    "reliability.stateful.timed",
    tags={"weight": "medium", "sticky_anchor": ANCHOR, "timeout": DEADLINE},
)(body)
st_timed_name = "reliability.stateful.timed"
st_child = task_token_guard("reliability.stateful.child", tags={"weight": "light"})(body)
st_lead = task_token_guard(
    "reliability.stateful.lead", tags={"external_calls": ["reliability.stateful.child"]}
)(lead_body)
st_process = task_token_guard(
    "reliability.stateful.process",
    tags={"process_pool": True, "weight": "heavy", "hash_policy": "none"},
)(targets.mark_run)

THREAD_OPERATIONS = {"medium": st_medium, "light": st_light, "timed": st_timed}
OPERATION_NAMES = (
    "reliability.stateful.medium",
    "reliability.stateful.light",
    "reliability.stateful.timed",
    "reliability.stateful.lead",
    "reliability.stateful.child",
    "reliability.stateful.process",
)


class CoordinatorMachine(RuleBasedStateMachine):
    """Random programs against one live coordinator; see the module docstring."""

    tokens = Bundle("tokens")

    def __init__(self, coordinator: OperationsCoordinator) -> None:
        super().__init__()
        self.coordinator = coordinator
        self.runs = RunCounter()
        self.ledger = TerminalLedger()
        self._markers = itertools.count()
        self._gate = threading.Event()
        self._gate_lock = threading.Lock()
        self.children: dict[str, list[TaskToken[Any]]] = {}
        self.leads: dict[str, TaskToken[Any]] = {}
        self.marker_of: dict[int, str] = {}
        self.thread_tokens: list[TaskToken[Any]] = []
        self.process_tokens: list[TaskToken[Any]] = []
        self.failing: set[str] = set()
        self.killed_by_me: list[TaskToken[Any]] = []
        self.paused = False
        self.paused_ops: set[str] = set()
        self.held: list[TaskToken[Any]] = []
        self.pauses = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="tokengate-stateful-"))
        self.run_log = str(self.workdir / "process-runs.log")

    # ------------------------------------------------------------------ helpers
    def new_marker(self, prefix: str) -> str:
        return f"{prefix}{next(self._markers)}"

    def gate_for_new_bodies(self) -> threading.Event:
        with self._gate_lock:
            return self._gate

    def _blocked(self, operation: str) -> bool:
        return self.paused or operation in self.paused_ops

    def _submitted(self, token: TaskToken[Any], marker: str, operation: str) -> None:
        self.ledger.track(token)
        self.marker_of[id(token)] = marker
        if self._blocked(operation):
            self.held.append(token)

    # ------------------------------------------------------------------ rules: submissions
    @initialize()
    def fresh_state(self) -> None:
        assert self.coordinator.running

    @rule(
        target=tokens,
        kind=st.sampled_from(sorted(THREAD_OPERATIONS)),
        key=st.sampled_from(KEYS),
        hold=st.booleans(),
        fail=st.booleans(),
    )
    def submit(self, kind: str, key: str, hold: bool, fail: bool) -> TaskToken[Any]:
        marker = self.new_marker("t")
        token = THREAD_OPERATIONS[kind](Ticket(self, key, marker, hold=hold, fail=fail))
        self._submitted(token, marker, token.operation_type)
        self.thread_tokens.append(token)
        if fail:
            self.failing.add(marker)
        return token

    @rule(
        batch=st.lists(
            st.tuples(
                st.sampled_from(sorted(THREAD_OPERATIONS)),
                st.sampled_from(KEYS),
                st.booleans(),
                st.booleans(),
            ),
            min_size=2,
            max_size=12,
        )
    )
    def submit_burst(self, batch: list[tuple[str, str, bool, bool]]) -> None:
        for kind, key, hold, fail in batch:
            self.submit(kind, key, hold, fail)

    @rule(
        target=tokens,
        key=st.sampled_from(KEYS),
        children=st.integers(0, 3),
        hold=st.booleans(),
    )
    def submit_lead(self, key: str, children: int, hold: bool) -> TaskToken[Any]:
        marker = self.new_marker("L")
        token = st_lead(Ticket(self, key, marker, hold=hold, fail=False), children)
        self._submitted(token, marker, token.operation_type)
        self.thread_tokens.append(token)
        self.leads[marker] = token
        return token

    @precondition(lambda self: len(self.process_tokens) < MAX_PROCESS_TOKENS)
    @rule(target=tokens)
    def submit_process(self) -> TaskToken[Any]:
        marker = self.new_marker("p")
        token = st_process(self.run_log, marker)
        self._submitted(token, marker, token.operation_type)
        self.process_tokens.append(token)
        return token

    # ------------------------------------------------------------------ rules: control
    @rule(token=tokens)
    def kill(self, token: TaskToken[Any]) -> None:
        if token.kill("stateful kill"):
            assert token.state is TokenState.KILLED
            self.killed_by_me.append(token)
        else:
            assert token.state.is_terminal, f"kill() refused the live token {token!r}"

    @rule(operation=st.sampled_from(OPERATION_NAMES))
    def kill_operation(self, operation: str) -> None:
        killed = self.coordinator.kill_operation(operation, "stateful operation kill")
        assert killed >= 0

    @rule(operation=st.none() | st.sampled_from(OPERATION_NAMES))
    def drain(self, operation: str | None) -> None:
        self.coordinator.drain(operation)

    @rule(operation=st.none() | st.sampled_from(OPERATION_NAMES))
    def pause(self, operation: str | None) -> None:
        if operation is None:
            self.coordinator.pause()
            self.paused = True
        else:
            self.coordinator.pause_operation(operation)
            self.paused_ops.add(operation)
        self.pauses += 1

    @rule(operation=st.none() | st.sampled_from(OPERATION_NAMES))
    def resume(self, operation: str | None) -> None:
        if operation is None:
            self.coordinator.resume()
            self.paused = False
        else:
            self.coordinator.resume_operation(operation)
            self.paused_ops.discard(operation)
        self._forget_released()

    @rule()
    def let_deadlines_pass(self) -> None:
        """Wait until every token with a deadline is terminal: held or blocked ones time out."""
        self._wait_for_deadlines()

    def _wait_for_deadlines(self) -> None:
        timed = [t for t in self.ledger.tokens if t.operation_type == st_timed_name]
        wait_all(timed)

    @rule()
    def release_held_bodies(self) -> None:
        """Let every body waiting on the gate return; later bodies wait on a fresh gate."""
        with self._gate_lock:
            self._gate.set()
            self._gate = threading.Event()

    def _forget_released(self) -> None:
        self.held = [t for t in self.held if self._blocked(t.operation_type)]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def i1_one_core_per_sticky_key(self) -> None:
        assert sticky_violations(self.coordinator) == []

    @invariant()
    def i2_children_follow_their_lead(self) -> None:
        pairs = [(lead, self.children.get(m, [])) for m, lead in list(self.leads.items())]
        assert conductor_violations(pairs) == []

    @invariant()
    def i4_done_means_terminal_once(self) -> None:
        for token in self.ledger.tokens:
            if token.done():
                assert token.state.is_terminal, f"{token!r} is done but not terminal"
        for token in self.killed_by_me:
            assert token.state is TokenState.KILLED

    @invariant()
    def i5_no_body_runs_twice(self) -> None:
        with self.runs._lock:
            twice = {m: n for m, n in self.runs.runs.items() if n > 1}
        assert twice == {}, f"bodies ran more than once: {twice}"
        for token in self.thread_tokens:
            if token.state.is_terminal and token.started_at is None:
                marker = self.marker_of[id(token)]
                assert self.runs.count(marker) == 0, f"{token!r} never started but ran"

    @invariant()
    def paused_admission_holds_tokens(self) -> None:
        for token in self.held:
            state = token.state
            assert state in {TokenState.WAITING, TokenState.KILLED, TokenState.TIMEOUT}, (
                f"{token!r} was submitted while its admission was paused and is {state.value}"
            )
            assert token.started_at is None, f"{token!r} started while admission was paused"
            assert token.core_id is None, f"{token!r} was routed while admission was paused"

    # ------------------------------------------------------------------ the end of a program
    def teardown(self) -> None:
        coordinator = self.coordinator
        try:
            self._wait_for_deadlines()  # before anything is released: blocked ones time out
            for operation in list(self.paused_ops):
                coordinator.resume_operation(operation)
            coordinator.resume()
            with self._gate_lock:
                self._gate.set()  # stays open: nothing waits any more
            self.ledger.check()  # every token submitted so far ends, exactly once
            self.runs.wait_idle()  # bodies of killed tokens finish on their own
            self.ledger.check()  # and so do the children their leads made meanwhile
            self._check_outcomes()
            self._check_runs()
            assert_quiescent(coordinator)  # I3
            self._tally()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _tally(self) -> None:
        states = [token.state for token in self.ledger.tokens]
        record_faults(
            "stateful: tokens killed (kill, kill_operation, drain)", states.count(TokenState.KILLED)
        )
        record_faults("stateful: tokens past their deadline", states.count(TokenState.TIMEOUT))
        record_faults("stateful: bodies that raise", states.count(TokenState.FAILED))
        record_faults("stateful: pauses (global and per operation)", self.pauses)
        record_volume("stateful: programs run", 1)
        record_volume("stateful: tokens submitted (children included)", len(states))

    def _check_outcomes(self) -> None:
        for token in self.ledger.tokens:
            exc = token.exception(0)
            state = token.state
            if state is TokenState.COMPLETED:
                assert exc is None
            elif state is TokenState.KILLED:
                assert isinstance(exc, TaskKilledError), repr(exc)
            elif state is TokenState.TIMEOUT:
                assert isinstance(exc, TokenTimeoutError), repr(exc)
                assert token.operation_type == "reliability.stateful.timed"
            else:
                assert state is TokenState.FAILED
                marker = self.marker_of.get(id(token))
                assert marker in self.failing, f"{token!r} failed unexpectedly: {exc!r}"
                assert isinstance(exc, ValueError)
                assert marker in str(exc)
        for lead_marker, lead in self.leads.items():
            if lead.state is TokenState.COMPLETED:
                assert lead.get(0) == lead_marker

    def _check_runs(self) -> None:
        for token in self.thread_tokens:
            marker = self.marker_of[id(token)]
            runs = self.runs.count(marker)
            assert runs <= 1, f"{token!r} ran {runs} times"
            ran_to_the_end = token.state is TokenState.COMPLETED or (
                token.state is TokenState.FAILED and marker in self.failing
            )
            if ran_to_the_end:
                assert runs == 1, f"{token!r} ended {token.state.value} after {runs} runs"
            if token.started_at is None:
                assert runs == 0, f"{token!r} never started but ran"
        runs_by_marker = targets.count_runs(self.run_log)
        for token in self.process_tokens:
            marker = self.marker_of[id(token)]
            runs = runs_by_marker.get(marker, 0)
            assert runs <= 1, f"process token {token!r} ran {runs} times"
            if token.state is TokenState.COMPLETED:
                assert runs == 1
                assert token.get(0) == marker
            if token.started_at is None:
                assert runs == 0, f"process token {token!r} never started but ran"


@pytest.fixture(scope="module")
def shared_coordinator() -> Iterator[OperationsCoordinator]:
    """One coordinator for every program (its worker process starts once): 4 cores x 2."""
    coordinator = OperationsCoordinator(cores=4, workers_per_core=2, stop_timeout=WAIT).start()
    try:
        yield coordinator
    finally:
        coordinator.stop(timeout=WAIT)
    assert_quiescent(coordinator)


def test_random_programs_keep_the_invariants(shared_coordinator: OperationsCoordinator) -> None:
    class OnSharedCoordinator(CoordinatorMachine):
        def __init__(self) -> None:
            super().__init__(shared_coordinator)

    run_state_machine_as_test(
        OnSharedCoordinator,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
