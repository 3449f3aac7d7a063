"""Fixtures of the dashboard tests: a real coordinator, a real dashboard server, a load.

Nothing is mocked: every test talks HTTP to a uvicorn server running in this process, and the
browser tests drive Debian's Chromium through Playwright.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard
from tokengate.dashboard import DashboardServer, serve_dashboard

#: The admin token of the tests' dashboards.
TOKEN = "test-admin-token-0123456789"


@task_token_guard("dash_work", tags={"weight": "light"})
def dash_work(x: int) -> int:
    """Short body; every 23rd call fails (the error panel needs entries)."""
    time.sleep(0.001)
    if x % 23 == 0:
        raise ValueError(f"dash_work refused {x}")
    return x


@task_token_guard("dash_block")
def dash_block(event: threading.Event, limit: float) -> bool:
    """Blocks until ``event`` is set (or ``limit`` seconds pass): keeps a token in flight."""
    return event.wait(limit)


@pytest.fixture
def token() -> str:
    """The admin token the ``dashboard`` fixture is configured with."""
    return TOKEN


@pytest.fixture
def coordinator() -> Iterator[OperationsCoordinator]:
    """A started coordinator with two core domains of two workers, stopped afterwards."""
    c = OperationsCoordinator(cores=2, workers_per_core=2)
    c.start()
    try:
        yield c
    finally:
        c.stop(cancel_pending=True, timeout=10)


@pytest.fixture
def dashboard(coordinator: OperationsCoordinator) -> Iterator[DashboardServer]:
    """A dashboard with controls (admin token ``TOKEN``) on a free loopback port."""
    server = serve_dashboard(coordinator, port=0, admin_token=TOKEN, interval=0.25)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def read_only(coordinator: OperationsCoordinator) -> Iterator[DashboardServer]:
    """A dashboard without an admin token."""
    server = serve_dashboard(coordinator, port=0, interval=0.25)
    try:
        yield server
    finally:
        server.stop()


class Load:
    """Submits ``dash_work`` calls from a background thread until stopped."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.tokens: list[TaskToken[Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop_event.is_set():
            batch = [dash_work(i + k) for k in range(40)]
            i += 40
            self.tokens.extend(batch)
            for t in batch:
                t.exception(10)
            self.stop_event.wait(0.02)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(30)


@pytest.fixture
def load(coordinator: OperationsCoordinator) -> Iterator[Load]:
    """A running load on ``coordinator``; every token it made is terminal afterwards."""
    running = Load().start()
    try:
        yield running
    finally:
        running.stop()
        assert all(t.done() for t in running.tokens)


Waiter = Callable[[Callable[[], bool]], bool]


@pytest.fixture
def wait_until() -> Waiter:
    """``wait_until(predicate)``: poll until it holds (at most 15 s); returns its last value."""

    def wait(predicate: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    return wait


Blocker = Callable[[], TaskToken[bool]]


@pytest.fixture
def blocked(coordinator: OperationsCoordinator) -> Iterator[Blocker]:
    """``blocked()`` submits a token that stays in flight until the test ends."""
    release = threading.Event()
    made: list[TaskToken[bool]] = []

    def make() -> TaskToken[bool]:
        t = dash_block(release, 60.0)
        made.append(t)
        return t

    try:
        yield make
    finally:
        release.set()
        for t in made:
            t.exception(30)
