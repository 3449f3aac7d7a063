"""The security rules, over real HTTP against a served dashboard."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from tokengate.core import OperationsCoordinator
from tokengate.dashboard import (
    DashboardConfigurationError,
    DashboardServer,
    dashboard_app,
    serve_dashboard,
)

CONTROLS = ("pause", "resume", "drain", "kill")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("action", CONTROLS)
def test_a_control_without_the_token_is_401(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, action: str
) -> None:
    r = httpx.post(f"{dashboard.url}api/{action}", json={"operation": "x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["error"]
    assert not coordinator.stats().paused


@pytest.mark.parametrize(
    "header", ["Bearer wrong-token-0123456789", "Bearer test-admin-token-012345678", "Basic abc"]
)
def test_a_wrong_token_is_refused(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, header: str
) -> None:
    r = httpx.post(f"{dashboard.url}api/pause", headers={"Authorization": header})
    assert r.status_code in (401, 403)
    assert r.status_code == (401 if header.startswith("Basic") else 403)
    assert not coordinator.stats().paused


def test_the_right_token_works(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, token: str
) -> None:
    r = httpx.post(f"{dashboard.url}api/pause", headers=_bearer(token), json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "action": "pause", "operation": None}
    assert coordinator.stats().paused
    r = httpx.post(f"{dashboard.url}api/resume", headers=_bearer(token))
    assert r.status_code == 200, r.text
    assert not coordinator.stats().paused


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    ],
)
def test_a_cross_origin_post_is_refused_even_with_the_token(
    dashboard: DashboardServer,
    coordinator: OperationsCoordinator,
    token: str,
    headers: dict[str, str],
) -> None:
    r = httpx.post(f"{dashboard.url}api/pause", headers={**_bearer(token), **headers}, json={})
    assert r.status_code == 403
    assert "refused" in r.json()["error"]
    assert not coordinator.stats().paused


def test_a_same_origin_post_from_the_page_is_accepted(
    dashboard: DashboardServer, coordinator: OperationsCoordinator, token: str
) -> None:
    origin = dashboard.url.rstrip("/")
    headers = {**_bearer(token), "Origin": origin, "Sec-Fetch-Site": "same-origin"}
    r = httpx.post(f"{dashboard.url}api/pause", headers=headers, json={})
    assert r.status_code == 200, r.text
    assert coordinator.stats().paused


def test_cross_origin_reads_are_refused_and_no_cors_is_granted(
    dashboard: DashboardServer,
) -> None:
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert httpx.get(f"{dashboard.url}api/snapshot", headers=evil).status_code == 403
    preflight = httpx.options(
        f"{dashboard.url}api/pause",
        headers={**evil, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (403, 405)
    assert "access-control-allow-origin" not in preflight.headers
    same = httpx.get(f"{dashboard.url}api/snapshot")
    assert same.status_code == 200
    assert "access-control-allow-origin" not in same.headers


def test_a_foreign_host_header_is_refused(dashboard: DashboardServer) -> None:
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example
    r = httpx.get(f"{dashboard.url}api/snapshot", headers={"Host": "evil.example:8787"})
    assert r.status_code == 400
    assert "Host" in r.json()["error"]


def test_every_response_carries_a_strict_content_security_policy(
    dashboard: DashboardServer,
) -> None:
    r = httpx.get(dashboard.url)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_read_only_mode_has_no_controls(
    read_only: DashboardServer, coordinator: OperationsCoordinator
) -> None:
    page = httpx.get(read_only.url).text
    assert "data-action" not in page
    assert "admin-token" not in page
    assert "kill-form" not in page
    assert '<meta name="tg-controls" content="0">' in page
    snapshot = httpx.get(f"{read_only.url}api/snapshot").json()["snapshot"]
    assert snapshot["controls"] is False
    for action in CONTROLS:
        r = httpx.post(f"{read_only.url}api/{action}", headers=_bearer("anything-long-enough-0000"))
        assert r.status_code == 403
        assert "read-only" in r.json()["error"]
    assert not coordinator.stats().paused


def test_the_page_with_a_token_has_controls(dashboard: DashboardServer) -> None:
    page = httpx.get(dashboard.url).text
    assert 'data-action="pause"' in page
    assert 'id="admin-token"' in page
    assert '<meta name="tg-controls" content="1">' in page


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_a_non_loopback_bind_is_refused_without_opt_in(
    coordinator: OperationsCoordinator, host: str, token: str
) -> None:
    with pytest.raises(DashboardConfigurationError, match="allow_remote=True"):
        serve_dashboard(coordinator, host=host, port=0, admin_token=token)


def test_a_non_loopback_bind_is_refused_without_a_token(
    coordinator: OperationsCoordinator,
) -> None:
    with pytest.raises(DashboardConfigurationError, match="without an admin_token"):
        serve_dashboard(coordinator, host="0.0.0.0", port=0, allow_remote=True)


def test_a_remote_dashboard_needs_the_token_for_its_data_too(
    coordinator: OperationsCoordinator, token: str
) -> None:
    server = serve_dashboard(
        coordinator, host="0.0.0.0", port=0, admin_token=token, allow_remote=True
    )
    try:
        port = server.url.rsplit(":", 1)[1].strip("/")
        base = f"http://127.0.0.1:{port}/"
        assert httpx.get(f"{base}api/snapshot").status_code == 401
        assert httpx.get(f"{base}api/events").status_code == 401
        r = httpx.get(f"{base}api/snapshot", headers=_bearer(token))
        assert r.status_code == 200
        assert r.json()["snapshot"]["controls"] is True
        assert '<meta name="tg-reads" content="1">' in httpx.get(base).text
    finally:
        server.stop()


@pytest.mark.parametrize("bad", ["short", " padded-token-0123456789 ", "x" * 15])
def test_a_weak_admin_token_is_refused(coordinator: OperationsCoordinator, bad: str) -> None:
    with pytest.raises(DashboardConfigurationError, match="at least 16 characters"):
        serve_dashboard(coordinator, port=0, admin_token=bad)


def test_a_busy_port_gives_a_clear_error(coordinator: OperationsCoordinator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(DashboardConfigurationError, match=r"in use.*port=0"):
            serve_dashboard(coordinator, port=port)


@pytest.mark.parametrize(
    ("action", "content", "content_type", "status", "message"),
    [
        ("pause", b'{"operation": 3}', "application/json", 400, "non-empty string"),
        ("pause", b'{"op": "x"}', "application/json", 400, "unknown field"),
        ("pause", b"operation=x", "application/x-www-form-urlencoded", 415, "JSON"),
        ("pause", b"{not json", "application/json", 400, "not valid JSON"),
        ("pause", b"[1, 2]", "application/json", 400, "JSON object"),
        ("drain", b'{"operation": "' + b"x" * 5000 + b'"}', "application/json", 413, "larger"),
        ("kill", b"{}", "application/json", 400, "exactly one"),
        ("kill", b'{"token": "a#1", "operation": "a"}', "application/json", 400, "exactly one"),
        ("kill", b'{"token": "nope#12345"}', "application/json", 404, "no in-flight token"),
        ("kill", b'{"module": "os", "call": "system"}', "application/json", 400, "unknown"),
    ],
)
def test_bad_control_bodies_get_clear_errors(
    dashboard: DashboardServer,
    token: str,
    action: str,
    content: bytes,
    content_type: str,
    status: int,
    message: str,
) -> None:
    r = httpx.post(
        f"{dashboard.url}api/{action}",
        headers={**_bearer(token), "Content-Type": content_type},
        content=content,
    )
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("path", ["static/../_app.py", "static/__init__.py", "static/%2e%2e"])
def test_only_the_shipped_assets_are_served(dashboard: DashboardServer, path: str) -> None:
    r = httpx.get(f"{dashboard.url}{path}")
    assert r.status_code == 404
    assert "def " not in r.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": -1}, "port must be an int in 0..65535"),
        ({"port": "8787"}, "port must be an int"),
        ({"host": ""}, "host must be a non-empty str"),
        ({"interval": 0}, "interval must be > 0"),
        ({"admin_token": 12345678901234567}, "admin_token must be a str"),
    ],
)
def test_bad_settings_are_named(
    coordinator: OperationsCoordinator, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(DashboardConfigurationError, match=message):
        serve_dashboard(coordinator, **{"port": 0, **kwargs})


def test_something_else_than_a_coordinator_is_refused() -> None:
    with pytest.raises(TypeError, match="needs an OperationsCoordinator, not dict"):
        dashboard_app({})  # type: ignore[arg-type]
