"""CPU pinning: with ``pin_cpus=True`` each domain's threads and worker process are bound to
the domain's CPU (``os.sched_setaffinity``); without it nothing is bound."""

from __future__ import annotations

import os
from collections.abc import Iterator

import core_procfuncs as procfuncs
import pytest

from tokengate.core import OperationsCoordinator, task_token_guard
from tokengate.core._config import machine_cpus

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU affinity needs os.sched_setaffinity (Linux)"
)

WAIT = 30.0

heavy_affinity = task_token_guard("pin_heavy_affinity", tags={"weight": "heavy"})(
    procfuncs.affinity
)
medium_affinity = task_token_guard(
    "pin_medium_affinity", tags={"weight": "medium", "hash_policy": "none"}
)(procfuncs.affinity)
heavy_process_affinity = task_token_guard(
    "pin_heavy_process_affinity", tags={"weight": "heavy", "process_pool": True}
)(procfuncs.affinity)
medium_process_affinity = task_token_guard(
    "pin_medium_process_affinity", tags={"weight": "medium", "process_pool": True}
)(procfuncs.affinity)
heavy_process_pid = task_token_guard(
    "pin_heavy_process_pid", tags={"weight": "heavy", "process_pool": True}
)(procfuncs.whoami)


@pytest.fixture(scope="module")
def pinned() -> Iterator[OperationsCoordinator]:
    coordinator = OperationsCoordinator(cores=2, workers_per_core=2, pin_cpus=True).start()
    yield coordinator
    coordinator.stop(timeout=WAIT)


def test_domains_map_to_the_machine_cpus_round_robin() -> None:
    cpus = machine_cpus()
    coordinator = OperationsCoordinator(cores=len(cpus) + 1)
    assert [coordinator.cpu_of(core) for core in range(1, len(cpus) + 2)] == [*cpus, cpus[0]]


def test_threads_of_each_domain_are_bound_to_its_cpu(pinned: OperationsCoordinator) -> None:
    before = os.sched_getaffinity(0)
    heavy = [heavy_affinity() for _ in range(8)]  # spread over both workers of core 1
    medium = [medium_affinity() for _ in range(8)]
    assert {tuple(t.get(WAIT)) for t in heavy} == {(pinned.cpu_of(1),)}
    assert {tuple(t.get(WAIT)) for t in medium} == {(pinned.cpu_of(2),)}
    assert {t.core_id for t in heavy} == {1}
    assert {t.core_id for t in medium} == {2}
    assert os.sched_getaffinity(0) == before  # the calling thread is left alone


def test_worker_processes_are_bound_to_their_domain_cpu(pinned: OperationsCoordinator) -> None:
    assert heavy_process_affinity().get(WAIT) == [pinned.cpu_of(1)]
    assert medium_process_affinity().get(WAIT) == [pinned.cpu_of(2)]
    pid = heavy_process_pid().get(WAIT)
    assert pid != os.getpid()
    assert os.sched_getaffinity(pid) == {pinned.cpu_of(1)}  # as seen from outside


def test_without_pin_cpus_nothing_is_bound() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    with OperationsCoordinator(cores=2, workers_per_core=1) as coordinator:
        assert coordinator.config.pin_cpus is False
        assert heavy_affinity().get(WAIT) == allowed
        assert medium_affinity().get(WAIT) == allowed
