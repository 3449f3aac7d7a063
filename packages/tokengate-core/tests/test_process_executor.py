"""The process executor end to end: through a coordinator, with real worker processes.

Functions by value, hard timeouts, recycling, child calls of a body in a process, clear
errors for what cannot be pickled, and a burst awaited with ``gather``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import core_process_funcs as funcs
import pytest

from tokengate.core import (
    OperationInfo,
    OperationsCoordinator,
    ProcessDomainError,
    TaskToken,
    TokenExtension,
    TokenState,
    TokenTimeoutError,
    hookimpl,
    task_token_guard,
)

WAIT = 60.0
PROCESS = {"executor": "process", "hash_policy": "none"}

pid_of = task_token_guard("procexec_pid", tags=PROCESS)(funcs.pid)
echo = task_token_guard("procexec_echo", tags=PROCESS)(funcs.echo)
lead = task_token_guard("procexec_lead", tags=PROCESS)(funcs.lead)
hang = task_token_guard("procexec_hang", tags={**PROCESS, "timeout": 1.0})(funcs.sleep_then)
add = task_token_guard("procexec_add", tags=PROCESS)(funcs.add)
scoped = task_token_guard("procexec_scoped", tags=PROCESS)(funcs.scope_value)


class ScopePlugin:
    """Gives ``procexec_scoped`` an extension that carries context into the process."""

    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        if operation.operation_type == "procexec_scoped":
            return funcs.ScopedExtension()
        return None


def make(**settings: Any) -> OperationsCoordinator:
    settings.setdefault("stop_timeout", 30)
    return OperationsCoordinator(**settings)


@pytest.fixture(scope="module")
def coordinator() -> Iterator[OperationsCoordinator]:
    coord = OperationsCoordinator(cores=1, stop_timeout=30).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=30)


def test_closures_and_lambdas_run_by_value(coordinator: OperationsCoordinator) -> None:
    factor = 6

    def scale(x: int) -> int:
        return x * factor

    scaled = task_token_guard("procexec_closure", tags=PROCESS)(scale)
    tripled = task_token_guard("procexec_lambda", tags=PROCESS)(lambda x: (x * 3, os.getpid()))
    assert scaled(7).get(WAIT) == 42
    value, pid = tripled(5).get(WAIT)
    assert value == 15
    assert pid != os.getpid()


def test_gathered_tokens_complete_in_order_of_their_arguments(
    coordinator: OperationsCoordinator,
) -> None:
    async def burst() -> list[int]:
        results: list[int] = await asyncio.gather(*(add(i, i) for i in range(2000)))
        return results

    assert asyncio.run(burst()) == [2 * i for i in range(2000)]


def test_a_timeout_kills_the_running_body_and_its_process(
    coordinator: OperationsCoordinator,
) -> None:
    before = pid_of().get(WAIT)
    token: TaskToken[object] = hang(120.0, "never")
    started = time.monotonic()
    with pytest.raises(TokenTimeoutError):
        token.get(WAIT)
    assert token.state is TokenState.TIMEOUT
    after = pid_of().get(WAIT)
    assert after != before, "the hung body's process was not replaced"
    assert time.monotonic() - started < WAIT


def test_unpicklable_argument_and_result_fail_only_their_token(
    coordinator: OperationsCoordinator,
) -> None:
    bad_argument = echo(threading.Lock())
    with pytest.raises(ProcessDomainError, match=r"argument 'value' \(lock\) of procexec_echo"):
        bad_argument.get(WAIT)
    returns_lock = task_token_guard("procexec_returns_lock", tags=PROCESS)(lambda: threading.Lock())
    with pytest.raises(ProcessDomainError, match=r"result \(lock\) cannot be pickled"):
        returns_lock().get(WAIT)
    assert echo("fine").get(WAIT) == "fine"


def test_children_of_a_body_in_a_process_run_in_that_process(
    coordinator: OperationsCoordinator,
) -> None:
    results, message = lead(3).get(WAIT)
    assert results == [0, 1, 4]
    worker = pid_of().get(WAIT)
    assert message == f"child 3 failed in {worker}"


def test_recycling_by_calls_through_the_coordinator() -> None:
    with make(cores=1, max_calls_per_process=2):
        pids = [pid_of().get(WAIT) for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1]
    assert pids[2] == pids[3]


NEEDS_REMOTE_CONTEXTS = pytest.mark.skipif(
    not hasattr(TaskToken, "remote_contexts"),
    reason="tokens do not hand out their extensions' remote contexts yet",
)


@NEEDS_REMOTE_CONTEXTS
def test_extensions_context_is_entered_around_the_body_in_the_process(
    coordinator: OperationsCoordinator, register_plugin: Callable[[object, str], str]
) -> None:
    assert scoped().get(WAIT) is None
    register_plugin(ScopePlugin(), "procexec-scope")
    token = scoped()
    assert token.get(WAIT) == f"trace:{token.token_id}"


@NEEDS_REMOTE_CONTEXTS
def test_a_conductor_lead_in_a_process_calls_its_children_there(
    coordinator: OperationsCoordinator,
) -> None:
    from tokengate.conductor import conductor_snapshot

    lead = funcs.render(4)
    results, seed, pid = lead.get(WAIT)
    assert results == [0, 2, 4, 6]
    assert pid != os.getpid()
    assert seed is not None
    assert seed == lead.conductor_seed
    assert dict(conductor_snapshot(coordinator)) == {}


nap_heavy = task_token_guard("procexec_nap_heavy", tags={**PROCESS, "weight": "heavy"})(
    funcs.sleep_then
)
nap_medium = task_token_guard("procexec_nap_medium", tags={**PROCESS, "weight": "medium"})(
    funcs.sleep_then
)


def test_elastic_domains_share_one_process_per_cpu_plus_one() -> None:
    """Both domains get a backlog (a long first body holds each worker while 300 calls
    queue behind it): together they start at most one process per CPU plus one, every call
    still runs once, and stopping returns the budget."""
    from tokengate.core._config import machine_cpus
    from tokengate.core._process import _BUDGET, ProcessExecutor

    cpus = len(machine_cpus())
    with make(cores=2) as coordinator:
        tokens = [nap_heavy(0.3, "first"), nap_medium(0.3, "first")]
        tokens += [op(0.0, i) for i in range(300) for op in (nap_heavy, nap_medium)]
        assert [t.get(WAIT) for t in tokens[2:]] == [i for i in range(300) for _ in "hm"]
        backends = [coordinator.backend("process", core) for core in (1, 2)]
        assert all(isinstance(b, ProcessExecutor) for b in backends)
        started = sum(len(b.pools) for b in backends if isinstance(b, ProcessExecutor))
        assert 2 <= started <= min(2 * cpus, cpus + 1)
        if cpus >= 2:
            assert started == cpus + 1, "the first domain with a backlog grew, the other not"
        name = coordinator.name
        assert _BUDGET[name] == started
    assert name not in _BUDGET
