"""``coordinator.stats().scheduler``: what the thread executor decided per operation and why."""

from __future__ import annotations

import json
import time

from tokengate.core import OperationDecision, OperationsCoordinator, task_token_guard

WAIT = 10.0


@task_token_guard("stats.crunch", tags={"hash_policy": "none", "weight": "heavy"})
def crunch(n: int) -> int:
    return sum(i * i for i in range(n))


@task_token_guard("stats.nap", tags={"hash_policy": "none", "weight": "heavy"})
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stats_show_each_operations_decision_and_reason() -> None:
    with OperationsCoordinator(cores=2) as coordinator:
        assert coordinator.stats().scheduler == {}  # nothing ran yet
        for _ in range(3):
            crunch(200_000).get(WAIT)
            nap(0.02).get(WAIT)
        stats = coordinator.stats()
    decisions = stats.scheduler
    assert isinstance(decisions["stats.crunch"], OperationDecision)
    assert decisions["stats.crunch"].kind == "cpu"
    assert "CPU-bound" in decisions["stats.crunch"].reason
    assert decisions["stats.nap"].kind == "blocking"
    assert decisions["stats.nap"].samples >= 1
    as_dict = stats.as_dict()
    assert as_dict["scheduler"]["stats.nap"]["kind"] == "blocking"
    json.dumps(as_dict)  # JSON-ready
