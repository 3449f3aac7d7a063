"""The documentation site works offline: no script, style or font from outside the site, and
the Mermaid diagrams render in a real (headless) browser with every outside request blocked."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ASSET = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(https?:)?//[^\"]*\"", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(target)],
        cwd=ROOT,
        check=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    return target


def _external_assets(page: Path) -> list[str]:
    html = page.read_text(encoding="utf-8")
    found = []
    for match in ASSET.finditer(html):
        tag = match.group(0)
        if tag.lower().startswith("<link") and "stylesheet" not in tag and "preconnect" not in tag:
            continue  # a plain link (canonical, icon by data URI) is not loaded as an asset
        found.append(tag)
    return found


def test_no_page_loads_anything_from_outside_the_site(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    offenders = {str(p.relative_to(site)): _external_assets(p) for p in pages}
    offenders = {page: tags for page, tags in offenders.items() if tags}
    assert offenders == {}


def test_the_mermaid_script_ships_with_the_site(site: Path) -> None:
    script = site / "assets" / "javascripts" / "mermaid.min.js"
    assert script.stat().st_size > 1_000_000
    routing = (site / "concepts" / "routing" / "index.html").read_text(encoding="utf-8")
    assert "assets/javascripts/mermaid.min.js" in routing
    assert 'class="mermaid"' in routing


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _render_routing_page(
    base: str, shot: Path, *, block: str | None = None
) -> tuple[str, list[str]]:
    """Load the routing page with every outside request refused (and ``block`` refused too);
    return the page's visible text once the diagrams had their chance to render."""
    from playwright.sync_api import Route, sync_playwright

    refused: list[str] = []

    def only_local(route: Route) -> None:
        url = route.request.url
        if url.startswith((base, "data:")) and not (block and block in url):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.goto(f"{base}/concepts/routing/", wait_until="load")
            # Material renders each diagram into a closed shadow root of a <div class="mermaid">
            # that replaces the <pre> holding the source: wait for it to take its size.
            try:
                page.wait_for_function(
                    "() => { const d = document.querySelectorAll('div.mermaid');"
                    " return d.length > 0 && Array.from(d).every("
                    "e => e.getBoundingClientRect().height > 100); }",
                    timeout=15_000,
                )
            except Exception:
                pass  # not rendered: the assertions on the text say so
            page.screenshot(path=str(shot))
            text = page.inner_text("body")
        finally:
            browser.close()
    return text, refused


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_diagrams_render_in_a_browser_with_the_network_cut_off(served: str, tmp_path: Path) -> None:
    text, refused = _render_routing_page(served, tmp_path / "routing.png")
    assert "flowchart TD" not in text  # rendered, not shown as source
    assert [url for url in refused if "favicon" not in url] == []
    assert (tmp_path / "routing.png").stat().st_size > 10_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_without_the_shipped_script_the_source_would_show(served: str, tmp_path: Path) -> None:
    """The control: the check above can fail (no vendored script → raw diagram source)."""
    text, refused = _render_routing_page(served, tmp_path / "raw.png", block="mermaid.min.js")
    assert "flowchart TD" in text
    assert any("mermaid" in url for url in refused)
