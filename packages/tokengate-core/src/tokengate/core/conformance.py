"""A conformance suite for executor backends, usable from any package's tests.

Each ``check_*`` function takes a *maker*: ``make(**settings) -> OperationsCoordinator``, which
returns a coordinator (not started) whose default executor is the backend under test, built
with the given settings (the checks pass ``cores=1``). The checks start and stop it
themselves, run real bodies on the backend and raise ``AssertionError`` when the backend
breaks the contract of :class:`~tokengate.core.ExecutorBackend`. Every wait is bounded, so a
broken backend fails a check instead of hanging it.

The bodies are module-level functions of this module, so they run in threads, in worker
processes and on cluster workers alike; they talk to the check only through files in a
scratch directory (a body "started" when its marker file exists).

``concurrency`` is how many bodies one domain of the backend runs at once with the settings
the maker applies (threads per domain, processes per domain, ...): the checks start that
many holding bodies to be sure that the next token has to wait in the backend.

Use it from pytest::

    from tokengate.core import OperationsCoordinator, conformance

    def make(**settings):
        return OperationsCoordinator(executor="mine", workers_per_core=2, **settings)

    @pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
    def test_my_backend(check):
        check(make, concurrency=2)

    def test_my_backend_survives_a_worker_crash():  # for backends that run bodies elsewhere
        conformance.check_worker_crash(make, concurrency=2)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._enums import TokenState
from ._errors import TaskKilledError, TokenTimeoutError
from ._guard import task_token_guard
from ._token import TaskToken

__all__ = (
    "CHECKS",
    "Maker",
    "check_drain",
    "check_kill_before_running",
    "check_kill_while_running",
    "check_results_and_errors",
    "check_stop_with_hung_body",
    "check_stop_with_pending",
    "check_timeout",
    "check_worker_crash",
)

#: ``make(**settings) -> OperationsCoordinator`` (not started), running on the backend under test.
Maker = Callable[..., Any]

#: Seconds any single wait of a check may take before the check fails.
WAIT = 60.0
#: How long a holding body holds at most when nobody releases it.
HOLD_LIMIT = 120.0
#: Poll period of bodies and checks watching marker files.
POLL = 0.005
_FREE = {"hash_policy": "none"}


# --------------------------------------------------------------------------- the bodies
def square(value: int) -> int:
    """Return ``value * value``."""
    return value * value


def fail(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


def touch_and_return(directory: str, name: str, value: int) -> int:
    """Create the marker file ``directory/name`` (fails if it exists: a body ran twice)."""
    with open(os.path.join(directory, name), "x"):
        pass
    return value


def hold(directory: str, name: str, limit: float = HOLD_LIMIT) -> str:
    """Create ``directory/name`` ("started"), then wait for ``directory/release`` (at most
    ``limit`` seconds, and no longer than the directory exists) and return ``name``."""
    with open(os.path.join(directory, name), "x"):
        pass
    release = os.path.join(directory, "release")
    end = time.monotonic() + limit
    # a check that ended removes its directory: a holder still waiting then stops too
    while not os.path.exists(release) and os.path.isdir(directory) and time.monotonic() < end:
        time.sleep(POLL)
    return name


def exit_worker(code: int) -> None:
    """End the process running the body at once (``os._exit``): a crashed worker."""
    os._exit(code)


# --------------------------------------------------------------------------- helpers
@contextmanager
def _scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tokengate-conformance-"))
    try:
        yield directory
    finally:
        (directory / "release").touch()  # no holding body outlives its check
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for(condition: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {limit:g} s waiting for {what}")
        time.sleep(POLL)


def _started(directory: Path, names: Sequence[str]) -> Callable[[], bool]:
    return lambda: all((directory / name).exists() for name in names)


def _op(func: Callable[..., Any], name: str, **tags: object) -> Callable[..., TaskToken[Any]]:
    decorated: Callable[..., TaskToken[Any]] = task_token_guard(
        operation_type=f"conformance.{name}", tags={**_FREE, **tags}
    )(func)
    return decorated


def _hold_all(
    directory: Path, concurrency: int, prefix: str = "busy"
) -> tuple[list[TaskToken[Any]], list[str]]:
    """Start ``concurrency`` holding bodies and wait until every one runs."""
    holder = _op(hold, "hold")
    names = [f"{prefix}-{i}" for i in range(concurrency)]
    tokens = [holder(str(directory), name) for name in names]
    _wait_for(_started(directory, names), f"{concurrency} holding bodies to start")
    return tokens, names


def _release(directory: Path) -> None:
    (directory / "release").touch()


def _ended(token: TaskToken[Any], state: TokenState) -> None:
    _wait_for(token.done, f"{token.token_id} to end")
    assert token.state is state, f"{token.token_id} ended {token.state.value}, not {state.value}"


# --------------------------------------------------------------------------- the checks
def check_results_and_errors(make: Maker, concurrency: int = 1) -> None:
    """Results and exceptions reach the caller; many tokens handed off together each run
    exactly once."""
    with _scratch() as directory, make(cores=1) as coordinator:
        squares = _op(square, "square")
        failing = _op(fail, "fail")
        marked = _op(touch_and_return, "touch")
        assert squares(7).get(WAIT) == 49
        error = failing("broken on purpose").exception(WAIT)
        assert isinstance(error, ValueError)
        assert "broken on purpose" in str(error)
        tokens = [marked(str(directory), f"once-{i}", i) for i in range(200)]
        assert [t.get(WAIT) for t in tokens] == list(range(200))
        assert all(t.state is TokenState.COMPLETED for t in tokens)
        assert len(list(directory.glob("once-*"))) == 200
        assert coordinator.stats().in_flight == 0


def check_kill_before_running(make: Maker, concurrency: int = 1) -> None:
    """A token killed while it waits in the backend never runs and ends ``KILLED``."""
    with _scratch() as directory, make(cores=1):
        holders, _ = _hold_all(directory, concurrency)
        victim = _op(touch_and_return, "victim")(str(directory), "victim", 1)
        assert victim.kill("conformance: killed while waiting")
        _ended(victim, TokenState.KILLED)
        assert isinstance(victim.exception(WAIT), TaskKilledError)
        _release(directory)
        for token in holders:
            assert token.get(WAIT).startswith("busy-")
        follow = _op(square, "after_kill")(3)
        assert follow.get(WAIT) == 9
        assert not (directory / "victim").exists(), "a killed token's body ran"


def check_kill_while_running(make: Maker, concurrency: int = 1) -> None:
    """A running token killed ends ``KILLED`` at once for its awaiters; its late outcome is
    dropped and the domain goes on running tokens."""
    with _scratch() as directory, make(cores=1):
        holders, _ = _hold_all(directory, concurrency)
        victim = holders[0]
        assert victim.kill("conformance: killed while running")
        _ended(victim, TokenState.KILLED)
        try:
            victim.get(WAIT)
        except TaskKilledError:
            pass
        else:
            raise AssertionError("get() of a killed token returned a value")
        _release(directory)
        for token in holders[1:]:
            assert token.get(WAIT).startswith("busy-")
        assert victim.state is TokenState.KILLED, "a late result overwrote the kill"
        assert _op(square, "after_running_kill")(4).get(WAIT) == 16


def check_timeout(make: Maker, concurrency: int = 1) -> None:
    """A ``timeout`` that passes while a token waits in the backend ends it ``TIMEOUT`` and
    it never runs; one that passes while the body runs ends it ``TIMEOUT`` too."""
    with _scratch() as directory, make(cores=1):
        holders, _ = _hold_all(directory, concurrency)
        waiting = _op(touch_and_return, "timed_waiting", timeout=0.3)(str(directory), "never", 0)
        _ended(waiting, TokenState.TIMEOUT)
        assert isinstance(waiting.exception(WAIT), TokenTimeoutError)
        _release(directory)
        for token in holders:
            assert token.get(WAIT).startswith("busy-")
        (directory / "release").unlink()
        slow = _op(hold, "timed", timeout=0.3)
        names = [f"timed-{i}" for i in range(concurrency)]
        running = [slow(str(directory), name) for name in names]
        for token in running:
            _ended(token, TokenState.TIMEOUT)
            assert isinstance(token.exception(WAIT), TokenTimeoutError)
        _release(directory)
        assert _op(square, "after_timeout")(5).get(WAIT) == 25
        assert not (directory / "never").exists(), "a token that timed out waiting ran"


def check_drain(make: Maker, concurrency: int = 1) -> None:
    """``drain()`` kills every token waiting in the backend; none of them runs."""
    with _scratch() as directory, make(cores=1) as coordinator:
        holders, _ = _hold_all(directory, concurrency)
        queued_op = _op(touch_and_return, "drained")
        queued = [queued_op(str(directory), f"drained-{i}", i) for i in range(20)]
        drained = coordinator.drain()
        assert drained == 20, f"drain() killed {drained} tokens, expected the 20 waiting"
        for token in queued:
            _ended(token, TokenState.KILLED)
        _release(directory)
        for token in holders:
            assert token.get(WAIT).startswith("busy-")
        assert not list(directory.glob("drained-*")), "a drained token ran"


def check_stop_with_pending(make: Maker, concurrency: int = 1) -> None:
    """``stop(cancel_pending=True)`` kills what waits, lets the running bodies finish, and
    ends every token."""
    with _scratch() as directory:
        coordinator = make(cores=1).start()
        try:
            holders, _ = _hold_all(directory, concurrency)
            queued_op = _op(touch_and_return, "pending")
            queued = [queued_op(str(directory), f"pending-{i}", i) for i in range(20)]
        finally:
            _release(directory)
            coordinator.stop(cancel_pending=True, timeout=WAIT)
        assert all(t.done() for t in [*holders, *queued]), "stop() left a token unfinished"
        assert all(t.state is TokenState.COMPLETED for t in holders)
        ran = {p.name for p in directory.glob("pending-*")}
        for index, token in enumerate(queued):
            if token.state is TokenState.KILLED:
                assert f"pending-{index}" not in ran, "a token killed by stop() ran"
        assert coordinator.stats().in_flight == 0


def check_stop_with_hung_body(make: Maker, concurrency: int = 1) -> None:
    """``stop(timeout=...)`` returns although a body never returns; the token ends
    ``KILLED`` and the coordinator holds no token afterwards."""
    with _scratch() as directory:
        coordinator = make(cores=1).start()
        try:
            holders, _ = _hold_all(directory, concurrency, prefix="hung")
        except BaseException:
            _release(directory)
            coordinator.stop(timeout=WAIT)
            raise
        began = time.monotonic()
        coordinator.stop(timeout=0.5)
        took = time.monotonic() - began
        _release(directory)
        assert took < WAIT, f"stop(timeout=0.5) took {took:.1f} s with a hung body"
        for token in holders:
            assert token.done()
            assert token.state is TokenState.KILLED
        assert coordinator.stats().in_flight == 0


def check_worker_crash(make: Maker, concurrency: int = 1) -> None:
    """For backends that run bodies in other processes: a body that kills its worker fails
    only its own token (``FAILED``), and the domain runs the next tokens."""
    with make(cores=1):
        crash = _op(exit_worker, "crash")(13)
        _wait_for(crash.done, "the crashed token to end")
        assert crash.state is TokenState.FAILED, f"a crashed body ended {crash.state.value}"
        assert crash.exception(WAIT) is not None
        squares = _op(square, "after_crash")
        assert [t.get(WAIT) for t in [squares(i) for i in range(10)]] == [i * i for i in range(10)]


#: Every check that applies to all backends (``check_worker_crash`` only to backends whose
#: bodies run in another process or machine).
CHECKS: tuple[Callable[..., None], ...] = (
    check_results_and_errors,
    check_kill_before_running,
    check_kill_while_running,
    check_timeout,
    check_drain,
    check_stop_with_pending,
    check_stop_with_hung_body,
)
