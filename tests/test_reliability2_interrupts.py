"""Asynchronous exceptions during the terminal move (issue: a KeyboardInterrupt could leave a
token KILLED but never settled).

A ``KeyboardInterrupt`` can land at almost any bytecode boundary of the thread it targets:
Ctrl-C reaches the main thread while it kills tokens (as ``asyncio.gather``'s cancellation
does after Ctrl-C), and ``PyThreadState_SetAsyncExc`` can aim one at any thread. Whatever
the interrupt hits, a token whose state is terminal must be settled: ``done()``, ``get`` does
not time out, ``kill()`` returns False, it has left the in-flight table and its sticky pin is
released, and ``stop()`` has nothing left to wait for.

Two real sources of interrupts are used: ``PyThreadState_SetAsyncExc`` fired at random moments
by a helper thread at the killing thread (the main thread and a worker-side thread), and real
``SIGINT`` signals sent by this process to a child process that kills tokens in a loop.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.support.interrupts import Interrupter
from tests.support.reliability_checks import record_faults
from tokengate.core import OperationsCoordinator, TaskToken, TokenState, task_token_guard

#: Tokens killed under fire per in-process run.
TOKENS = 1_500
GATE_WAIT = 30.0


def _settled_or_problem(coordinator: OperationsCoordinator, token: TaskToken[Any]) -> str | None:
    state = token.state
    if not state.is_terminal:
        return None if token in coordinator.in_flight() else f"{token.token_id} lost while live"
    if not token.done():
        return f"{token.token_id} is {state.value} but not done"
    try:
        token.exception(0)
    except TimeoutError:
        return f"{token.token_id} is {state.value} but get() times out"
    if token.kill("again"):
        return f"{token.token_id} could be killed twice"
    return None


def _kill_under_fire(coordinator: OperationsCoordinator, seed: int) -> tuple[int, list[str]]:
    """Kill ``TOKENS`` gated sticky tokens from this thread while it is being interrupted;
    returns (interrupts caught, problems)."""
    gate = threading.Event()
    # The I4 witness is a C method (list.append): an interrupt cannot land inside it, so a
    # missing entry is the core's fault, not the witness's.
    reported: list[TaskToken[Any]] = []

    @task_token_guard("rel2.interrupt.held", tags={"weight": "light"})
    def held(key: int) -> int:
        gate.wait(GATE_WAIT)
        return key

    tokens: list[TaskToken[int]] = []
    caught = 0
    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-6)
    # No garbage collection during the storm: gc callbacks (hypothesis installs one) would
    # run inside the windows and take interrupts meant for the core.
    gc.disable()
    try:
        with Interrupter(threading.get_ident(), seed) as interrupter:
            for index in range(TOKENS):
                token = held(index % 7)
                token.add_done_callback(reported.append)
                tokens.append(token)
                try:
                    interrupter.arm()
                    token.kill("under fire")
                    interrupter.disarm()
                except KeyboardInterrupt:
                    caught += 1
                    interrupter.disarm()
    finally:
        gc.enable()
        sys.setswitchinterval(previous)
    gate.set()
    problems: list[str] = []
    for token in tokens:
        if not token.state.is_terminal:
            token.kill("after the storm")
        problem = _settled_or_problem(coordinator, token)
        if problem is not None:
            problems.append(problem)
    counts = Counter(id(token) for token in reported)
    for token in tokens:
        if counts[id(token)] != 1:
            problems.append(f"{token.token_id}: {counts[id(token)]} done-callbacks")
    if coordinator.in_flight():
        problems.append(f"{len(coordinator.in_flight())} tokens still in flight")
    if dict(coordinator.sticky_snapshot()):
        problems.append(f"sticky pins left: {dict(coordinator.sticky_snapshot())}")
    return caught, problems


def test_keyboard_interrupts_at_the_killing_main_thread_never_leave_a_token_unsettled() -> None:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2, stop_timeout=10).start()
    try:
        total_caught = 0
        all_problems: list[str] = []
        for seed in range(3):
            caught, problems = _kill_under_fire(coordinator, seed)
            total_caught += caught
            all_problems.extend(problems)
        record_faults("asynchronous KeyboardInterrupts during kills", total_caught)
        assert total_caught > 50, f"only {total_caught} interrupts landed: the test is too weak"
        assert all_problems == [], all_problems[:10]
    finally:
        coordinator.stop(timeout=10)
    assert coordinator.in_flight() == []


def test_keyboard_interrupts_at_another_killing_thread_never_leave_a_token_unsettled() -> None:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2, stop_timeout=10).start()
    outcome: dict[str, Any] = {}

    def killer() -> None:
        try:
            outcome["result"] = _kill_under_fire(coordinator, 11)
        except BaseException as exc:  # reported below, not lost in the thread
            outcome["error"] = exc

    try:
        thread = threading.Thread(target=killer, name="rel2-killer")
        thread.start()
        thread.join(120)
        assert not thread.is_alive(), "the killing thread hung"
        assert "error" not in outcome, outcome.get("error")
        caught, problems = outcome["result"]
        record_faults("asynchronous KeyboardInterrupts during kills", caught)
        assert caught > 20, f"only {caught} interrupts landed: the test is too weak"
        assert problems == [], problems[:10]
    finally:
        coordinator.stop(timeout=10)


_CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    from tokengate.core import OperationsCoordinator, task_token_guard

    gate = threading.Event()

    @task_token_guard("rel2.sigint.held", tags={"weight": "light"})
    def held(key):
        gate.wait(30)
        return key

    coordinator = OperationsCoordinator(cores=2, workers_per_core=2, stop_timeout=10).start()
    tokens, caught, wanted, rounds = [], 0, int(sys.argv[1]), int(sys.argv[2])
    armed = [False]

    def on_sigint(signum, frame):
        # Ctrl-C's KeyboardInterrupt, raised only while a kill is under way, so that the
        # loop's own bookkeeping is never the victim
        if armed[0]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    print("ready", flush=True)
    index = 0
    while caught < wanted and index < rounds:
        index += 1
        token = held(index % 5)
        tokens.append(token)
        try:
            armed[0] = True
            token.kill("cancelled after Ctrl-C")
            armed[0] = False
        except KeyboardInterrupt:
            armed[0] = False
            caught += 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("done", flush=True)
    sys.stdin.readline()  # the parent has stopped signalling
    gate.set()
    problems = []
    for token in tokens:
        if not token.state.is_terminal:
            token.kill("after the storm")
        if not token.done():
            problems.append(f"{token.token_id} {token.state.value} but not done")
            continue
        try:
            token.exception(0)
        except TimeoutError:
            problems.append(f"{token.token_id} get() times out")
        if token.kill("again"):
            problems.append(f"{token.token_id} killed twice")
    left = len(coordinator.in_flight())
    pins = len(coordinator.sticky_snapshot())
    coordinator.stop(timeout=10)
    print(json.dumps({"caught": caught, "problems": problems[:20], "bad": len(problems),
                      "in_flight": left, "pins": pins, "tokens": len(tokens)}), flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_real_sigint_storm_while_killing_leaves_every_token_settled() -> None:
    wanted, rounds = 150, 60_000
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(wanted), str(rounds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        rng = random.Random(5)
        sent = 0
        finished = threading.Event()

        def watch() -> None:
            assert child.stdout is not None
            if child.stdout.readline().strip() == "done":
                finished.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        while not finished.is_set() and child.poll() is None:
            child.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(rng.random() * 0.0005)
        watcher.join(60)
        assert finished.is_set(), "the child did not finish its kills"
        child.stdin.write("\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    record_faults("real SIGINTs sent to a process killing tokens", sent)
    assert report["caught"] >= wanted, f"only {report['caught']} of {sent} SIGINTs landed"
    assert report["bad"] == 0, report["problems"]
    assert report["in_flight"] == 0
    assert report["pins"] == 0
    assert TokenState.KILLED.value == "killed"
