"""Conductor leads on the default thread executor (the domain scheduler).

A lead whose body waits for its own children — routed to the lead's core — completes, because
the wait is managed blocking; and new leads spread over the cores of their weight instead of
piling onto one. Real coordinator, real conductor plugin, real threads.
"""

from __future__ import annotations

import threading
from collections import Counter

from tokengate.conductor import conductor_snapshot, get_active_seed
from tokengate.core import OperationsCoordinator, task_token_guard

WAIT = 20.0
"""Upper bound of every wait here: reached only when something is broken."""


@task_token_guard("sched_default.child", tags={"weight": "medium"})
def child(value: int) -> tuple[int, str | None]:
    return value * value, get_active_seed()


@task_token_guard(
    "sched_default.lead", tags={"weight": "medium", "external_calls": ["sched_default.child"]}
)
def lead(index: int, children: int) -> list[int]:
    tokens = [child(index * 10 + i) for i in range(children)]
    results = [token.get(timeout=WAIT) for token in tokens]  # waits on its own core
    seed = get_active_seed()
    assert all(child_seed == seed for _, child_seed in results)
    assert all(token.core_id == tokens[0].core_id for token in tokens)
    return [value for value, _ in results]


@task_token_guard(
    "sched_default.held_lead",
    tags={"weight": "medium", "external_calls": ["sched_default.child"]},
)
def held_lead(index: int, gate: threading.Event) -> int:
    gate.wait(WAIT)
    value, _ = child(index).get(timeout=WAIT)
    return value


def test_eight_leads_waiting_for_three_children_each_complete() -> None:
    """The case that deadlocked with per-worker mailboxes: eight leads each call a child
    three times and ``get(timeout)`` the results inside the body, on a 2-core coordinator
    where every lead and child is MEDIUM (core 2) — every worker there is a lead waiting."""
    with OperationsCoordinator(cores=2) as coordinator:
        leads = [lead(n, 3) for n in range(8)]
        expected = [[(n * 10 + i) ** 2 for i in range(3)] for n in range(8)]
        assert [token.get(timeout=WAIT) for token in leads] == expected
        assert {token.core_id for token in leads} == {2}
        assert len({token.conductor_seed for token in leads}) == 8
    assert dict(conductor_snapshot(coordinator)) == {}


def test_leads_waiting_for_children_complete_with_one_worker_per_core() -> None:
    with OperationsCoordinator(cores=1, workers_per_core=1, max_compensation_threads=8):
        leads = [lead(n, 3) for n in range(8)]
        assert [token.get(timeout=WAIT) for token in leads] == [
            [(n * 10 + i) ** 2 for i in range(3)] for n in range(8)
        ]


def test_new_leads_spread_over_the_cores_of_their_weight() -> None:
    """Eight leads in flight at once on 4 cores (MEDIUM: cores 2, 3, 4) spread 3/3/2, and
    each one's child still runs on its lead's core."""
    gate = threading.Event()
    with OperationsCoordinator(cores=4) as coordinator:
        try:
            leads = [held_lead(n, gate) for n in range(8)]
            per_core = Counter(token.core_id for token in leads)
            assert set(per_core) == {2, 3, 4}
            assert sorted(per_core.values()) == [2, 3, 3]
            assert len(conductor_snapshot(coordinator)) == 8
        finally:
            gate.set()
        assert [token.get(timeout=WAIT) for token in leads] == [n * n for n in range(8)]
    assert dict(conductor_snapshot(coordinator)) == {}
