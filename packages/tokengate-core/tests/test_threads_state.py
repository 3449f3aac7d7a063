"""A state machine over the thread executor: blocking waits, kills and timeouts mixed.

Whatever the interleaving, no body runs twice, every token ends in a terminal state once
its gates open (no deadlock, no lost token), and the executors end idle and balanced.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from threads_harness import harness, time_out

from tokengate.core import TaskToken, TokenState, task_token_guard
from tokengate.core._blocking import blocking

WAIT = 10.0
TERMINAL = {TokenState.COMPLETED, TokenState.FAILED, TokenState.KILLED, TokenState.TIMEOUT}


@task_token_guard("state.sleeper", tags={"hash_policy": "none"})
def sleeper(runs: list[int], tag: int, gate: threading.Event) -> int:
    runs.append(tag)
    if not gate.wait(WAIT):
        raise RuntimeError("gate never opened")
    return tag


@task_token_guard("state.cruncher", tags={"hash_policy": "none"})
def cruncher(runs: list[int], tag: int, n: int) -> int:
    runs.append(tag)
    total = 0
    for i in range(n):
        total += i
    return tag


@task_token_guard("state.waiter", tags={"hash_policy": "none"})
def waiter(runs: list[int], tag: int, others: list[TaskToken[Any]]) -> int:
    runs.append(tag)
    with blocking():
        for other in others:
            try:
                other.get(timeout=WAIT)
            except Exception:
                pass
    return tag


class ThreadExecutorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._context = harness(cores=2, workers_per_core=1, max_blocking_threads=4)
        self.h = self._context.__enter__()
        self.runs: list[int] = []
        self.tokens: list[TaskToken[Any]] = []
        self.gates: list[threading.Event] = []
        self.tag = 0

    def _next_tag(self) -> int:
        self.tag += 1
        return self.tag

    @rule(core=st.sampled_from([1, 2]))
    def submit_sleeper(self, core: int) -> None:
        gate = threading.Event()
        self.gates.append(gate)
        self.tokens.append(self.h.submit(sleeper, self.runs, self._next_tag(), gate, core=core))

    @rule(core=st.sampled_from([1, 2]), n=st.integers(0, 20_000))
    def submit_cruncher(self, core: int, n: int) -> None:
        self.tokens.append(self.h.submit(cruncher, self.runs, self._next_tag(), n, core=core))

    @precondition(lambda self: bool(self.tokens))
    @rule(core=st.sampled_from([1, 2]), picks=st.lists(st.integers(0, 10_000), max_size=3))
    def submit_waiter(self, core: int, picks: list[int]) -> None:
        others = [self.tokens[p % len(self.tokens)] for p in picks]
        self.tokens.append(self.h.submit(waiter, self.runs, self._next_tag(), others, core=core))

    @precondition(lambda self: bool(self.tokens))
    @rule(pick=st.integers(0, 10_000))
    def kill(self, pick: int) -> None:
        self.tokens[pick % len(self.tokens)].kill("state machine")

    @precondition(lambda self: bool(self.tokens))
    @rule(pick=st.integers(0, 10_000))
    def time_out(self, pick: int) -> None:
        time_out(self.tokens[pick % len(self.tokens)])

    @precondition(lambda self: bool(self.gates))
    @rule(pick=st.integers(0, 10_000))
    def open_gate(self, pick: int) -> None:
        self.gates[pick % len(self.gates)].set()

    @invariant()
    def no_body_ran_twice(self) -> None:
        repeated = [tag for tag, count in Counter(list(self.runs)).items() if count > 1]
        assert not repeated, f"bodies ran more than once: {repeated}"

    def teardown(self) -> None:
        try:
            for gate in self.gates:
                gate.set()
            for token in self.tokens:
                try:
                    token.get(timeout=WAIT)
                except Exception:
                    pass
                assert token.state in TERMINAL, f"{token!r} did not end"
                assert token.done()
            self.no_body_ran_twice()
            deadline = time.monotonic() + WAIT
            executors = list(self.h.executors.values())

            def idle() -> bool:
                snapshots = [executor.stats() for executor in executors]
                return all(s.busy == 0 and s.queued == 0 for s in snapshots)

            while not idle() and time.monotonic() < deadline:
                time.sleep(0.01)
            for executor in executors:
                snapshot = executor.stats()
                assert snapshot.busy == 0, snapshot
                assert snapshot.queued == 0, snapshot
                assert snapshot.details["waiting_on_tokens"] == 0
                assert snapshot.details["blocking_running"] == 0
                assert executor._shared.blocking == 0, "blocking slots leaked"
        finally:
            self._context.__exit__(None, None, None)


ThreadExecutorMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestThreadExecutorMachine = ThreadExecutorMachine.TestCase
