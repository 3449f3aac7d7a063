"""Every control through the HTTP API, against a coordinator running real tokens."""

from __future__ import annotations

from typing import Any

import httpx

from tokengate.core import OperationsCoordinator, TaskKilledError, TokenState
from tokengate.dashboard import DashboardServer


def _post(server: DashboardServer, token: str, action: str, body: dict[str, Any]) -> Any:
    r = httpx.post(
        f"{server.url}api/{action}", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_pause_holds_new_tokens_and_resume_runs_them(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, token: str, wait_until: Any
) -> None:
    from tokengate.core import task_token_guard

    square = task_token_guard("dash_square")(lambda x: x * x)
    _post(dashboard, token, "pause", {})
    held = [square(i) for i in range(20)]
    assert wait_until(lambda: all(t.state is TokenState.WAITING for t in held))
    assert not any(t.done() for t in held)
    _post(dashboard, token, "resume", {})
    assert [t.get(10) for t in held] == [i * i for i in range(20)]


def test_pause_one_operation_only(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, token: str, wait_until: Any
) -> None:
    from tokengate.core import task_token_guard

    slow = task_token_guard("dash_paused")(lambda: "ran")
    free = task_token_guard("dash_free")(lambda: "free")
    _post(dashboard, token, "pause", {"operation": "dash_paused"})
    held = slow()
    assert free().get(10) == "free"
    assert held.state is TokenState.WAITING
    _post(dashboard, token, "resume", {"operation": "dash_paused"})
    assert held.get(10) == "ran"


def test_drain_kills_what_has_not_started(
    dashboard: DashboardServer,
    coordinator: OperationsCoordinator,
    token: str,
    blocked: Any,
    wait_until: Any,
) -> None:
    from tokengate.core import task_token_guard

    _post(dashboard, token, "pause", {})
    waiting = [task_token_guard("dash_drained")(lambda: 1)() for _ in range(10)]
    answer = _post(dashboard, token, "drain", {"operation": "dash_drained"})
    assert answer["killed"] == 10
    for t in waiting:
        assert isinstance(t.exception(10), TaskKilledError)
    _post(dashboard, token, "resume", {})


def test_kill_a_token_and_an_operation(
    dashboard: DashboardServer,
    coordinator: OperationsCoordinator,
    token: str,
    blocked: Any,
    wait_until: Any,
) -> None:
    first, second, third = blocked(), blocked(), blocked()
    assert wait_until(lambda: first.state is TokenState.EXECUTING)
    answer = _post(dashboard, token, "kill", {"token": first.token_id, "reason": "test kill"})
    assert answer == {"ok": True, "action": "kill", "token": first.token_id, "killed": 1}
    assert isinstance(first.exception(10), TaskKilledError)
    answer = _post(dashboard, token, "kill", {"operation": "dash_block"})
    assert answer["killed"] == 2
    for t in (second, third):
        assert isinstance(t.exception(10), TaskKilledError)
    r = httpx.post(
        f"{dashboard.url}api/kill",
        json={"token": first.token_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 404
