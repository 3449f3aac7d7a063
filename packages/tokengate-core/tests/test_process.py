"""Process domains through a coordinator: a worker process per core domain, pickling rules,
errors, crashes, kill / timeout of bodies running in a process (the process is replaced),
drain, and shutdown.

Process targets live in ``tests/support/core_procfuncs.py`` (importable by module and
qualified name in the worker process). Starting a worker process costs a fraction of a
second, so most tests share one coordinator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import core_procfuncs as procfuncs
import pytest

from tokengate.core import (
    OperationsCoordinator,
    ProcessDomainError,
    TaskKilledError,
    TokenState,
    TokenTimeoutError,
    task_token_guard,
)
from tokengate.core._config import CoordinatorConfig
from tokengate.core._executors import ExecutorDomain
from tokengate.core._process import ProcessExecutor, resolve_function
from tokengate.core._process_worker import InlineToken
from tokengate.core._procpool import ProcPool

WAIT = 60.0
"""Upper bound of every wait here (a worker process may need a moment to start)."""

PROCESS = {"process_pool": True}
HEAVY = {"process_pool": True, "weight": "heavy"}
#: Calls behind a body that has run longer than this wait in the parent, not yet started.
LONG_BODY = 0.1

heavy_add = task_token_guard("proc_heavy_add", tags=HEAVY)(procfuncs.add)
heavy_echo = task_token_guard("proc_heavy_echo", tags=HEAVY)(procfuncs.echo)
heavy_whoami = task_token_guard("proc_heavy_whoami", tags=HEAVY)(procfuncs.whoami)
medium_whoami = task_token_guard(
    "proc_medium_whoami", tags={**PROCESS, "weight": "medium", "hash_policy": "none"}
)(procfuncs.whoami)
heavy_record = task_token_guard("proc_heavy_record", tags=HEAVY)(procfuncs.record_run)
heavy_lock_result = task_token_guard("proc_heavy_lock_result", tags=HEAVY)(
    procfuncs.record_and_return_lock
)
heavy_fail = task_token_guard("proc_heavy_fail", tags=HEAVY)(procfuncs.fail_with)
heavy_fail_unportably = task_token_guard("proc_heavy_fail_unportably", tags=HEAVY)(
    procfuncs.fail_unportably
)
heavy_crash = task_token_guard("proc_heavy_crash", tags=HEAVY)(procfuncs.crash)
heavy_kill_self = task_token_guard("proc_heavy_kill_self", tags=HEAVY)(procfuncs.kill_self)
heavy_wait = task_token_guard("proc_heavy_wait", tags=HEAVY)(procfuncs.wait_for_go)
heavy_wait_timeout = task_token_guard("proc_heavy_wait_timeout", tags={**HEAVY, "timeout": 0.3})(
    procfuncs.wait_for_go
)
heavy_token_inside = task_token_guard("proc_heavy_token_inside", tags=HEAVY)(
    procfuncs.make_token_inside
)


class Rendezvous:
    """A localhost socket: a body connects to say it started, then blocks until ``go()``."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(WAIT)
        self.port: int = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def wait_started(self) -> int:
        """Block until the body connected; returns the pid it reported."""
        self.conn, _ = self.server.accept()
        self.conn.settimeout(WAIT)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.conn.recv(64)
            if not chunk:
                break
            data += chunk
        return int(data)

    def go(self) -> None:
        """Let the body return."""
        if self.conn is not None:
            self.conn.sendall(b"go")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture(scope="module")
def coordinator() -> Iterator[OperationsCoordinator]:
    """Two core domains (HEAVY → core 1, MEDIUM → core 2), shared by the module."""
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2, processes_per_core=1).start()
    yield coordinator
    coordinator.stop(timeout=WAIT)


@pytest.fixture
def rendezvous() -> Iterator[Rendezvous]:
    meeting = Rendezvous()
    yield meeting
    meeting.close()


# ---------------------------------------------------------------------- round trips
def test_one_worker_process_per_core_domain(coordinator: OperationsCoordinator) -> None:
    heavy = [heavy_whoami() for _ in range(6)]
    medium = [medium_whoami() for _ in range(6)]
    heavy_pids = {t.get(WAIT) for t in heavy}
    medium_pids = {t.get(WAIT) for t in medium}
    assert {t.core_id for t in heavy} == {1}
    assert {t.core_id for t in medium} == {2}
    assert len(heavy_pids) == 1
    assert len(medium_pids) == 1
    assert heavy_pids != medium_pids
    assert os.getpid() not in heavy_pids | medium_pids
    assert all(t.process_pool for t in heavy)


def test_arguments_and_results_cross_by_pickle(coordinator: OperationsCoordinator) -> None:
    assert heavy_add(2, 3).get(WAIT) == 5
    assert heavy_add(a=4, b=5).result(WAIT) == 9
    value = {"nested": [1, (2, 3), {4, 5}], "bytes": b"\x00" * 100_000, "none": None}
    assert heavy_echo(value).get(WAIT) == value


def test_a_decorated_function_of_an_importable_module_runs_in_its_process(
    coordinator: OperationsCoordinator,
) -> None:
    token = procfuncs.double(21)
    assert token.process_pool
    assert token.get(WAIT) == 42


@pytest.mark.asyncio
async def test_process_tokens_can_be_awaited_and_gathered(
    coordinator: OperationsCoordinator,
) -> None:
    assert await heavy_add(20, 22) == 42
    tokens = [heavy_add(i, i) for i in range(20)] + [medium_whoami() for _ in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*tokens), WAIT)
    assert results[:20] == [2 * i for i in range(20)]
    assert len(set(results[20:])) == 1


# ---------------------------------------------------------------------- pickling and errors
def test_an_unpicklable_argument_fails_before_the_body_runs(
    coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    token = heavy_record(str(marker), payload=threading.Lock())
    error = token.exception(WAIT)
    assert isinstance(error, ProcessDomainError)
    message = str(error)
    assert "argument 'payload' (lock)" in message
    assert "cannot be pickled" in message
    assert "run the operation on threads" in message
    assert token.state is TokenState.FAILED
    assert heavy_record(str(tmp_path / "other")).get(WAIT) == 1  # the domain still works
    assert not marker.exists()  # the body never ran, anywhere


def test_an_unpicklable_result_fails_and_the_body_ran_once(
    coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    error = heavy_lock_result(str(marker)).exception(WAIT)
    assert isinstance(error, ProcessDomainError)
    assert "the result (lock) cannot be pickled" in str(error)
    assert heavy_add(1, 1).get(WAIT) == 2
    assert marker.read_text().splitlines() == ["ran"]


def test_an_exception_keeps_its_type_message_and_remote_traceback(
    coordinator: OperationsCoordinator,
) -> None:
    token = heavy_fail("boom 42")
    with pytest.raises(ValueError, match="boom 42") as caught:
        token.get(WAIT)
    assert token.state is TokenState.FAILED
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "Remote traceback" in notes
    assert "_inner_failure" in notes  # the frame inside the worker process
    assert "core1" in notes


def test_an_exception_that_cannot_cross_is_described(coordinator: OperationsCoordinator) -> None:
    error = heavy_fail_unportably().exception(WAIT)
    assert isinstance(error, ProcessDomainError)
    assert "TwoArgumentError" in str(error)
    assert "left/right" in str(error)


def test_a_local_function_runs_by_value(coordinator: OperationsCoordinator, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def local_body() -> int:
        marker.write_text("ran")
        return os.getpid()

    local = task_token_guard("proc_heavy_local", tags=HEAVY)(local_body)
    assert local().get(WAIT) != os.getpid()
    assert marker.read_text() == "ran"


def test_a_lock_held_by_a_local_function_is_refused_before_it_runs(
    coordinator: OperationsCoordinator,
) -> None:
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    local = task_token_guard("proc_heavy_lock_holder", tags=HEAVY)(holds_a_lock)
    error = local().exception(WAIT)
    assert isinstance(error, ProcessDomainError)
    assert "proc_heavy_lock_holder cannot run in a worker process" in str(error)
    assert "cloudpickle" in str(error)


def test_a_decorated_call_inside_a_worker_process_runs_inline(
    coordinator: OperationsCoordinator,
) -> None:
    inner: object = heavy_token_inside().get(WAIT)
    assert isinstance(inner, InlineToken)
    assert inner.done()
    assert inner.get() == 2


# ---------------------------------------------------------------------- crashes
@pytest.mark.parametrize(
    ("crasher", "expected"),
    [(lambda: heavy_crash(3), "exit code 3"), (lambda: heavy_kill_self(), "SIGKILL")],
    ids=["os._exit", "signal"],
)
def test_a_dying_process_fails_only_its_running_token(
    coordinator: OperationsCoordinator,
    caplog: pytest.LogCaptureFixture,
    crasher: object,
    expected: str,
) -> None:
    before = heavy_whoami().get(WAIT)
    assert callable(crasher)
    with caplog.at_level(logging.WARNING, logger="tokengate"):
        crashing = crasher()
        others = [heavy_add(i, 1) for i in range(5)]  # same domain, around the crash
        error = crashing.exception(WAIT)
        assert [t.get(WAIT) for t in others] == [1, 2, 3, 4, 5]
    assert isinstance(error, ProcessDomainError)
    message = str(error)
    assert expected in message
    assert "core1" in message
    assert f"while running token {crashing.token_id}" in message
    assert "nothing else failed" in message
    assert "died" in caplog.text
    after = heavy_whoami().get(WAIT)
    assert after != before  # a fresh process took over


# ---------------------------------------------------------------------- kill and timeout
def test_kill_while_running_stops_the_body_and_replaces_the_process(
    coordinator: OperationsCoordinator, rendezvous: Rendezvous
) -> None:
    pid = heavy_whoami().get(WAIT)
    token = heavy_wait(rendezvous.port)
    assert rendezvous.wait_started() == pid
    time.sleep(LONG_BODY)
    queued = heavy_add(20, 22)  # behind a long body: waits in the parent, not started
    assert queued.state is TokenState.ADMITTED
    assert token.kill("admin") is True
    with pytest.raises(TaskKilledError, match="admin"):
        token.get(0)  # at once
    assert queued.get(WAIT) == 42  # on the fresh process
    assert token.state is TokenState.KILLED
    assert heavy_whoami().get(WAIT) != pid  # the running body was stopped with its process
    counts = coordinator.stats().operations["proc_heavy_wait"]
    assert (counts.completed, counts.killed, counts.failed) == (0, 1, 0)


def test_kill_before_the_call_crosses_never_runs(
    coordinator: OperationsCoordinator, rendezvous: Rendezvous, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    heavy_whoami().get(WAIT)
    blocker = heavy_wait(rendezvous.port)
    rendezvous.wait_started()
    queued = heavy_record(str(marker))  # sent to the process at once, behind the blocker
    assert queued.kill("not needed")
    rendezvous.go()
    assert blocker.get(WAIT) == "finished"
    assert heavy_add(0, 0).get(WAIT) == 0  # everything queued before it has been handled
    assert not marker.exists()


def test_drain_kills_calls_waiting_for_the_process(
    coordinator: OperationsCoordinator, rendezvous: Rendezvous, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    heavy_whoami().get(WAIT)
    blocker = heavy_wait(rendezvous.port)
    rendezvous.wait_started()
    time.sleep(LONG_BODY)
    queued = [heavy_record(str(marker), payload=i) for i in range(3)]
    assert all(t.state is TokenState.ADMITTED for t in queued)
    assert coordinator.drain("proc_heavy_record") == 3
    assert blocker.state is TokenState.EXECUTING  # a running body is not drained
    assert all(t.state is TokenState.KILLED for t in queued)
    rendezvous.go()
    assert blocker.get(WAIT) == "finished"
    assert heavy_add(0, 0).get(WAIT) == 0
    assert not marker.exists()
    assert all(t.duration is None for t in queued)  # they never started


def test_a_timeout_while_running_kills_and_replaces_the_process(
    coordinator: OperationsCoordinator, rendezvous: Rendezvous
) -> None:
    pid = heavy_whoami().get(WAIT)
    token = heavy_wait_timeout(rendezvous.port)
    assert rendezvous.wait_started() == pid
    with pytest.raises(TokenTimeoutError):
        token.get(WAIT)
    assert token.state is TokenState.TIMEOUT
    assert heavy_whoami().get(WAIT) != pid  # the hung body's process was replaced
    assert token.state is TokenState.TIMEOUT


def test_kill_races_process_completion(coordinator: OperationsCoordinator) -> None:
    heavy_whoami().get(WAIT)
    before = coordinator.stats().operations.get("proc_heavy_add")
    done_before = 0 if before is None else before.finished
    tokens = [heavy_add(i, 0) for i in range(300)]
    outcome: dict[str, bool] = {}

    def killer() -> None:
        for token in tokens[1::2]:
            outcome[token.token_id] = token.kill("race")

    thread = threading.Thread(target=killer, name="process-killer")
    thread.start()
    thread.join(WAIT)
    for token in tokens:
        token.exception(WAIT)
    for i, token in enumerate(tokens):
        assert token.state in (TokenState.COMPLETED, TokenState.KILLED)
        if token.state is TokenState.COMPLETED:
            assert token.get(0) == i
        if i % 2:
            assert outcome[token.token_id] is (token.state is TokenState.KILLED)
        else:
            assert token.state is TokenState.COMPLETED
    assert heavy_add(1, 1).get(WAIT) == 2  # every late answer has been collected by now
    counts = coordinator.stats().operations["proc_heavy_add"]
    assert counts.finished - done_before == 301  # each token counted exactly once


# ---------------------------------------------------------------------- shutdown
def test_stop_terminates_a_body_that_never_returns(
    coordinator: OperationsCoordinator,
    rendezvous: Rendezvous,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = OperationsCoordinator(cores=2, workers_per_core=2).start()
    stuck = heavy_wait(rendezvous.port)  # the newest coordinator takes the call
    stuck_pid = rendezvous.wait_started()
    idle_pid = medium_whoami().get(WAIT)
    queued = [heavy_add(i, 0) for i in range(3)]  # nothing measured: they wait in the parent
    with caplog.at_level(logging.WARNING, logger="tokengate"):
        stopper = threading.Thread(target=own.stop, kwargs={"timeout": 0.3}, name="stopper")
        stopper.start()
        stopper.join(WAIT)
        assert not stopper.is_alive()
    assert stuck.state is TokenState.KILLED
    assert [t.state for t in queued] == [TokenState.KILLED] * 3, [t.exception(0) for t in queued]
    for pid in (stuck_pid, idle_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert heavy_add(1, 2).get(WAIT) == 3  # the shared coordinator is current again


def test_stop_lets_admitted_process_work_finish(coordinator: OperationsCoordinator) -> None:
    own = OperationsCoordinator(cores=1, workers_per_core=2).start()
    tokens = [heavy_add(i, 1) for i in range(10)]  # the process may not even be up yet
    pid_token = heavy_whoami()
    own.stop(timeout=WAIT)
    assert [t.get(0) for t in tokens] == list(range(1, 11))
    with pytest.raises(ProcessLookupError):
        os.kill(pid_token.get(0), 0)  # the worker process exited


def test_forkserver_start_method(coordinator: OperationsCoordinator) -> None:
    with OperationsCoordinator(cores=1, process_start_method="forkserver"):
        assert heavy_add(40, 2).get(WAIT) == 42
        pid = heavy_whoami().get(WAIT)
        assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---------------------------------------------------------------------- internals
def test_resolve_function_handles_main_wrappers_and_missing_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_main = types.ModuleType("__mp_main__")

    def target() -> str:
        return "main"

    fake_main.target = target  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "__mp_main__", fake_main)
    assert resolve_function("__main__", "target") is target
    unwrapped = resolve_function("core_procfuncs", "double")
    assert unwrapped is procfuncs.double.__wrapped__
    assert unwrapped(4) == 8
    assert resolve_function("core_procfuncs", "TwoArgumentError") is procfuncs.TwoArgumentError
    with pytest.raises(AttributeError):
        resolve_function("core_procfuncs", "missing")
    with pytest.raises(ImportError):
        resolve_function("no_such_module_for_tokengate", "f")


def _domain(coordinator: OperationsCoordinator, **settings: Any) -> ExecutorDomain:
    config = CoordinatorConfig(cores=1, **settings)
    return ExecutorDomain(1, 1, None, config, f"{coordinator.name}-direct")


def test_fork_is_refused(coordinator: OperationsCoordinator) -> None:
    with pytest.raises(ValueError, match="fork"):
        ProcPool("direct", lambda outcomes: None, start_method="fork")


def test_an_executor_that_never_ran_anything_shuts_down_at_once(
    coordinator: OperationsCoordinator,
) -> None:
    executor = ProcessExecutor(_domain(coordinator))
    assert executor.stats().workers == 0
    stopper = threading.Thread(target=executor.shutdown, args=(0.1,), name="shut")
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert executor.stats().workers == 0
