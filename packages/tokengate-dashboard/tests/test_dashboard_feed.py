"""The live feed and the snapshot: what the panels show, under a real load."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tokengate.core import OperationsCoordinator, task_token_guard
from tokengate.dashboard import DashboardServer, dashboard_app, serve_dashboard


def _events(url: str, count: int, headers: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """The first ``count`` events of the feed at ``url``, as (event name, decoded data)."""
    seen: list[tuple[str, Any]] = []
    with httpx.stream("GET", f"{url}api/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                seen.append((name, json.loads(line[5:])))
                if len(seen) >= count:
                    break
    return seen


def test_the_feed_says_hello_then_ticks_with_changing_numbers(
    dashboard: DashboardServer, load: Any
) -> None:
    events = _events(dashboard.url, 6)
    assert events[0][0] == "hello"
    assert events[0][1]["controls"] is True
    ticks = [data for name, data in events[1:] if name == "tick"]
    assert len(ticks) == 5
    seqs = [t["seq"] for t in ticks]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    done = [t["by_state"]["completed"] for t in ticks]
    assert done[-1] > done[0], done
    assert any((t["point"]["rate"] or 0) > 0 for t in ticks[1:])
    last = ticks[-1]
    assert any(p50 is not None for p50 in (t["point"]["p50"] for t in ticks))
    assert {c["core_id"] for c in last["cores"]} == {1, 2}
    ops = {o["operation_type"]: o for o in last["operations"]}
    assert ops["dash_work"]["completed"] > 0
    assert any("dash_work refused" in (e["error"] or "") for e in last["errors"])


def test_the_snapshot_shows_pins_tokens_and_paused_operations(
    dashboard: DashboardServer,
    coordinator: OperationsCoordinator,
    blocked: Any,
    wait_until: Any,
) -> None:
    held = blocked()
    coordinator.pause_operation("never_seen_op")

    def snapshot() -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{dashboard.url}api/snapshot").json()["snapshot"]
        return data

    assert wait_until(lambda: snapshot()["tokens"]["total"] >= 1)
    snap = snapshot()
    ids = [t["token_id"] for t in snap["tokens"]["items"]]
    assert held.token_id in ids
    assert snap["sticky"]["total"] >= 1
    assert any(key.startswith("dash_block") for key, _ in snap["sticky"]["pins"])
    ops = {o["operation_type"]: o for o in snap["operations"]}
    assert ops["never_seen_op"]["paused"] is True
    assert ops["dash_block"]["in_flight"] >= 1
    assert snap["coordinator"]["paused_operations"] == ["never_seen_op"]
    assert snap["conductor"]["available"] is True
    history = httpx.get(f"{dashboard.url}api/snapshot").json()["history"]
    assert history
    assert all("rate" in p and "p99" in p for p in history)


def test_payloads_stay_bounded_with_many_operations_and_pins(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, wait_until: Any
) -> None:
    release = threading.Event()
    ops = [
        task_token_guard(f"many_{i:03d}_" + "x" * 150)(lambda e=release: e.wait(30))
        for i in range(120)
    ]
    tokens = [op() for op in ops for _ in range(2)]
    try:
        assert wait_until(lambda: coordinator.stats().in_flight >= 240)
        events = _events(dashboard.url, 3)
        for name, data in events:
            size = len(json.dumps(data))
            assert size < 96_000, (name, size)
        tick = events[-1][1]
        assert len(tick["operations"]) <= 40
        assert tick["operations_total"] >= 1
        assert len(tick["tokens"]["items"]) <= 25
        assert tick["tokens"]["total"] >= 240
        assert len(tick["sticky"]["pins"]) <= 40
        assert tick["sticky"]["total"] >= 120
    finally:
        release.set()
        for t in tokens:
            t.exception(30)


def test_stop_ends_open_feeds_and_frees_the_port(coordinator: OperationsCoordinator) -> None:
    server = serve_dashboard(coordinator, port=0, interval=0.1)
    got: list[str] = []

    def read() -> None:
        with httpx.stream("GET", f"{server.url}api/events", timeout=30) as response:
            for line in response.iter_lines():
                got.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not any(line.startswith("event: tick") for line in got) and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop()
    reader.join(10)
    assert not reader.is_alive()
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}api/snapshot", timeout=2)


@pytest.fixture
def fastapi_service(coordinator: OperationsCoordinator, token: str) -> Iterator[str]:
    """A FastAPI service with the dashboard mounted at /ops/dashboard, served by uvicorn."""
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/ops/dashboard", dashboard_app(coordinator, admin_token=token, interval=0.2))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_mounted_in_fastapi(
    fastapi_service: str, coordinator: OperationsCoordinator, token: str, load: Any
) -> None:
    base = fastapi_service
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    page = httpx.get(f"{base}/ops/dashboard/")
    assert page.status_code == 200
    assert 'src="static/dashboard.js"' in page.text
    assert httpx.get(f"{base}/ops/dashboard/static/dashboard.js").status_code == 200
    events = _events(f"{base}/ops/dashboard/", 3)
    assert [name for name, _ in events] == ["hello", "tick", "tick"]
    url = f"{base}/ops/dashboard/api/pause"
    assert httpx.post(url, json={"operation": "dash_work"}).status_code == 401
    r = httpx.post(
        url, json={"operation": "dash_work"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    assert coordinator.stats().paused_operations == ("dash_work",)
    r = httpx.post(
        f"{base}/ops/dashboard/api/resume",
        json={"operation": "dash_work"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    assert coordinator.stats().paused_operations == ()


def test_conductor_domains_are_shown_while_a_lead_runs(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, wait_until: Any
) -> None:
    release = threading.Event()

    @task_token_guard("dash_child")
    def child() -> bool:
        return release.wait(30)

    @task_token_guard("dash_lead", tags={"external_calls": ["dash_child"]})
    def lead() -> bool:
        return child().get(30)

    token = lead()

    def domains() -> list[dict[str, Any]]:
        snap = httpx.get(f"{dashboard.url}api/snapshot").json()["snapshot"]
        found: list[dict[str, Any]] = snap["conductor"]["domains"]
        return found

    try:
        assert wait_until(lambda: any(d["pending"] >= 2 for d in domains()))
        domain = domains()[0]
        assert domain["core_id"] == token.core_id
        assert domain["lead_token_id"] == token.token_id
        assert len(domain["seed"]) <= 64
    finally:
        release.set()
    assert token.get(30) is True
    assert wait_until(lambda: domains() == [])


def test_a_stopped_coordinator_is_shown_stopped(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, wait_until: Any
) -> None:
    def running() -> bool:
        snap = httpx.get(f"{dashboard.url}api/snapshot").json()["snapshot"]
        return bool(snap["coordinator"]["running"])

    assert running()
    coordinator.stop()
    assert wait_until(lambda: not running())


@pytest.mark.skipif(
    not hasattr(OperationsCoordinator, "auto_decisions"),
    reason="this coordinator has no executor auto (auto_decisions) to show",
)
def test_executor_auto_decisions_are_shown(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, wait_until: Any
) -> None:
    tiny = task_token_guard("dash_auto_tiny", tags={"executor": "auto", "hash_policy": "none"})(
        lambda: 1
    )

    def decision() -> dict[str, Any] | None:
        for t in [tiny() for _ in range(16)]:
            t.get(30)
        snap = httpx.get(f"{dashboard.url}api/snapshot").json()["snapshot"]
        found: dict[str, Any] | None = snap["extra"].get("auto_decisions", {}).get("dash_auto_tiny")
        return found

    assert wait_until(lambda: decision() is not None)
    shown = decision()
    assert shown is not None
    assert shown["executor"] in ("thread", "process")
    assert shown["reason"]
