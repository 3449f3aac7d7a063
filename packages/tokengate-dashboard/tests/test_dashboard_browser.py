"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must load with no request outside the dashboard, its numbers must move while tokens
run, and a control must work with the admin token and be refused without it. The first test
saves the screenshot shown in docs/dashboard.md.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, TaskKilledError
from tokengate.dashboard import DashboardServer, serve_dashboard

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The docs' screenshot is refreshed only when asked (TOKENGATE_UPDATE_SCREENSHOTS=1), so that
#: running the tests leaves the checkout unchanged; otherwise it goes to a scratch file.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "assets" / "dashboard.png"
SCREENSHOT = (
    DOCS_SCREENSHOT
    if os.environ.get("TOKENGATE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"tokengate-dashboard-{os.getpid()}.png"
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium at /usr/bin/chromium: install Debian's package "
    "(apt-get install -y chromium; .ci/run does it)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (the system browser, never a downloaded one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records every request it makes and every script error."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    tab.requests = []
    tab.errors = []
    context.on("request", lambda request: tab.requests.append(request.url))
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()


def _completed(page: Any) -> int:
    value = page.get_attribute("#stat-completed", "data-value")
    return int(value) if value else -1


def test_the_page_loads_offline_and_its_numbers_move(page: Any, token: str) -> None:
    from tokengate.dashboard._demo import DemoWorkload

    coordinator = OperationsCoordinator(cores=3, workers_per_core=6).start()
    server = serve_dashboard(coordinator, port=0, admin_token=token, interval=0.5)
    workload = DemoWorkload(coordinator, period=0.25, max_in_flight=300, slow_seconds=(2, 4))
    workload.start()
    try:
        page.goto(f"{server.url}#token={token}")
        page.wait_for_selector("#live-state.on", timeout=15_000)
        page.wait_for_function(
            "() => Number(document.querySelector('#stat-completed').dataset.value || 0) > 0",
            timeout=15_000,
        )
        first = _completed(page)
        page.wait_for_function(
            f"() => Number(document.querySelector('#stat-completed').dataset.value) > {first}",
            timeout=15_000,
        )
        assert _completed(page) > first
        # the operations table and the charts are filled from live data
        page.wait_for_selector("#operations tbody tr td.mono", timeout=10_000)
        ops = page.locator("#operations tbody td.mono").all_inner_texts()
        assert any(op.startswith("resize_thumbnail") for op in ops), ops
        assert page.locator("#cores tbody tr").count() == 3
        # the token from the address fragment filled the field and left the address bar
        assert page.input_value("#admin-token") == token
        assert "#" not in page.url
        time.sleep(3)  # a few seconds of chart history for the screenshot
        page.wait_for_selector("#errors tbody td.err", timeout=10_000)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        workload.stop()
        server.stop()
        coordinator.stop(cancel_pending=True, timeout=10)
    origin = server.url
    assert page.requests, "the page made no request at all"
    foreign = [url for url in page.requests if not url.startswith(origin)]
    assert foreign == [], f"requests outside the dashboard: {foreign}"
    assert all(url.startswith("http://127.0.0.1:") for url in page.requests)
    assert page.errors == []
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_control_works_with_the_token_and_is_refused_without(
    dashboard: DashboardServer,
    coordinator: OperationsCoordinator,
    page: Any,
    token: str,
    blocked: Any,
    wait_until: Any,
) -> None:
    page.goto(dashboard.url)
    page.wait_for_selector("#live-state.on", timeout=15_000)

    # no token at all: the server answers 401 to the page's own request
    status = page.evaluate(
        "() => fetch('api/pause', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: '{}'}).then(r => r.status)"
    )
    assert status == 401
    # a wrong token typed into the page: the button is refused with 403
    page.fill("#admin-token", "not-the-admin-token-000000")
    page.click("#admin button[data-action=pause]")
    page.wait_for_function(
        "() => document.querySelector('#message').textContent.includes('refused (403)')",
        timeout=10_000,
    )
    assert not coordinator.stats().paused

    # the right token: the same button pauses the coordinator and the page shows it
    page.fill("#admin-token", token)
    page.click("#admin button[data-action=pause]")
    assert wait_until(lambda: coordinator.stats().paused)
    page.wait_for_function(
        "() => document.querySelector('#run-state').textContent === 'paused'", timeout=10_000
    )
    page.click("#admin button[data-action=resume]")
    assert wait_until(lambda: not coordinator.stats().paused)

    # kill a token from its row
    victim = blocked()
    selector = f"#tokens tbody tr:has(td:text-is('{victim.token_id}')) button"
    page.wait_for_selector(selector, timeout=15_000)
    page.click(selector)
    assert isinstance(victim.exception(10), TaskKilledError)
    page.wait_for_function(
        "() => document.querySelector('#message').textContent.includes('1 token(s) ended')",
        timeout=10_000,
    )
    assert page.errors == []


def test_a_read_only_page_has_no_controls(read_only: DashboardServer, page: Any) -> None:
    page.goto(read_only.url)
    page.wait_for_selector("#live-state.on", timeout=15_000)
    page.wait_for_function(
        "() => document.querySelector('#cores tbody tr td') !== null", timeout=10_000
    )
    assert page.locator("button").count() == 0
    assert page.locator("#admin-token").count() == 0
    assert page.errors == []
