"""``tokengate dashboard``: the demo runs in a real process and serves a working dashboard."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tokengate.dashboard._cli import main


def test_the_demo_serves_its_dashboard_until_the_duration_ends() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokengate.core",
            "dashboard",
            "--demo",
            "--port",
            "0",
            "--duration",
            "3",
            "--no-browser",
            "--cores",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("dashboard: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        token = proc.stdout.readline().split(": ", 1)[1].strip()
        assert len(token) >= 16
        deadline = time.monotonic() + 5
        submitted = 0
        while submitted == 0 and time.monotonic() < deadline:
            snap = httpx.get(f"{url}api/snapshot", timeout=5).json()["snapshot"]
            submitted = snap["coordinator"]["submitted"]
            time.sleep(0.2)
        assert submitted > 0
        assert snap["controls"] is True
        r = httpx.post(f"{url}api/pause", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


def test_without_demo_it_explains_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve_dashboard(coordinator)" in capsys.readouterr().err
    assert main(["--demo", "--read-only", "--admin-token", "x" * 20]) == 2


def test_a_remote_host_without_opt_in_is_a_usage_error() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokengate.core",
            "dashboard",
            "--demo",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--duration",
            "1",
            "--no-browser",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "allow_remote" in proc.stderr
