"""Leaving ``with`` / ``async with OperationsCoordinator()``: a clean exit waits for every
call; an exception kills what has not started and waits only for running bodies; Ctrl-C
(real SIGINTs to a real interpreter) says what is waited for and a second one abandons it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, TaskToken, TokenState

CoordinatorFactory = Callable[..., OperationsCoordinator]

SCRIPT = textwrap.dedent(
    """
    import json, signal, sys, threading
    from tokengate.core import OperationsCoordinator, task_token_guard

    # Ctrl-C raises KeyboardInterrupt here even when this interpreter was started with SIGINT
    # ignored or blocked (a background job of a non-interactive shell inherits the first; a
    # process spawned while its parent's thread blocked the signal inherits the second).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    mode, seconds = sys.argv[1], float(sys.argv[2])

    @task_token_guard(tags={"hash_policy": "none"})
    def slow_io(i):
        threading.Event().wait(seconds)
        return i

    tokens = []

    def report():
        states = [t.state.value for t in tokens]
        started = [t.started_at is not None for t in tokens]
        print(json.dumps({"states": states, "started": started}), flush=True)

    try:
        with OperationsCoordinator(
            cores=1, workers_per_core=1, max_blocking_threads=1, stop_timeout=120
        ):
            tokens.extend(slow_io(i) for i in range(12))
            while not any(t.running() for t in tokens):
                threading.Event().wait(0.01)
            print("ready", flush=True)
            if mode == "raise":
                raise ValueError("boom")
            if mode == "get":
                tokens[-1].get()  # Ctrl-C lands here
            # mode "exit": leave the block cleanly; Ctrl-C lands in the exit's wait
    except BaseException as exc:
        print(f"left with {type(exc).__name__}", flush=True)
    report()
    """
)


@pytest.fixture
def start() -> Iterator[Callable[[str, float], subprocess.Popen[str]]]:
    """Start the script; whatever happens, the interpreter is ended after the test."""
    started: list[subprocess.Popen[str]] = []

    def run(mode: str, seconds: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, mode, str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _read_until(stream: Any, marker: str) -> str:
    seen = []
    for line in stream:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never came; got {''.join(seen)[-2000:]}")


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str, dict[str, list[Any]]]:
    out, err = proc.communicate(timeout=30)
    report = json.loads(out.strip().splitlines()[-1])
    return out, err, report


def test_an_exception_kills_what_has_not_started_and_waits_for_running_bodies(
    start: Callable[[str, float], subprocess.Popen[str]],
) -> None:
    proc = start("raise", 0.3)
    assert proc.stdout is not None
    _read_until(proc.stdout, "ready")
    out, _err, report = _finish(proc)
    assert "left with ValueError" in out
    states, started = report["states"], report["started"]
    assert set(states) == {"completed", "killed"}, states
    for state, ran in zip(states, started, strict=True):
        assert (state == "completed") == ran  # running bodies finished; the rest never ran
    assert states.count("killed") >= 8  # at most two bodies run at once in this domain


def test_ctrl_c_in_the_block_says_what_it_waits_for_then_finishes_running_bodies(
    start: Callable[[str, float], subprocess.Popen[str]],
) -> None:
    proc = start("get", 1.0)
    assert proc.stdout is not None
    assert proc.stderr is not None
    _read_until(proc.stdout, "ready")
    proc.send_signal(signal.SIGINT)
    notice = _read_until(proc.stderr, "Ctrl-C again")
    assert "is waiting for" in notice
    assert "slow_io x" in notice
    out, _err, report = _finish(proc)
    assert "left with KeyboardInterrupt" in out
    states, started = report["states"], report["started"]
    assert "completed" in states  # the running bodies were waited for
    for state, ran in zip(states, started, strict=True):
        assert (state == "completed") == ran


@pytest.mark.parametrize("mode", ["get", "exit"])
def test_a_second_ctrl_c_abandons_the_running_bodies(
    start: Callable[[str, float], subprocess.Popen[str]], mode: str
) -> None:
    proc = start(mode, 300.0)  # bodies that would outlive the test's timeout
    assert proc.stdout is not None
    assert proc.stderr is not None
    _read_until(proc.stdout, "ready")
    proc.send_signal(signal.SIGINT)
    notice = _read_until(proc.stderr, "Ctrl-C again")
    assert "running bod" in notice
    proc.send_signal(signal.SIGINT)
    out, err, report = _finish(proc)  # returns long before the bodies would end
    assert "abandoned" in err, (out, err)
    assert "left with KeyboardInterrupt" in out
    assert set(report["states"]) == {"killed"}
    assert proc.returncode == 0


def _blocked(coordinator: OperationsCoordinator, n: int) -> tuple[threading.Event, list[Any]]:
    release = threading.Event()

    def body(i: int) -> int:
        release.wait(30)
        return i

    return release, [coordinator.submit(body, i) for i in range(n)]


def test_a_clean_exit_waits_for_every_call() -> None:
    with OperationsCoordinator(cores=1, workers_per_core=1, max_blocking_threads=1) as coord:
        release, tokens = _blocked(coord, 6)
        threading.Timer(0.05, release.set).start()
    assert [t.state for t in tokens] == [TokenState.COMPLETED] * 6


def test_async_with_an_exception_kills_what_has_not_started() -> None:
    tokens: list[TaskToken[int]] = []

    async def main() -> None:
        async with OperationsCoordinator(
            cores=1, workers_per_core=1, max_blocking_threads=1
        ) as coord:
            release, blocked = _blocked(coord, 8)
            tokens.extend(blocked)
            while not any(t.running() for t in tokens):
                await asyncio.sleep(0.01)
            threading.Timer(0.1, release.set).start()
            raise LookupError("boom")

    with pytest.raises(LookupError):
        asyncio.run(main())
    states = [t.state for t in tokens]
    assert TokenState.KILLED in states
    assert TokenState.COMPLETED in states
    for token in tokens:
        assert (token.state is TokenState.COMPLETED) == (token.started_at is not None)
