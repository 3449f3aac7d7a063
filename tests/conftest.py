"""Shared set-up of the cross-package tests (``tests/``).

Process-domain bodies must be importable by module and qualified name inside a spawned
worker process, and test modules are not (pytest's importlib import mode). They live in
``tests/support/``; the repository root goes on ``sys.path`` here so that they import as
``tests.support.<module>`` — the same name in the tests, in the worker processes (spawned
children inherit ``sys.path``) and for mypy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokengate.core import plugin_manager

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

PluginRegistrar = Callable[[object, str], str]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report the faults the reliability tests injected (by kind) at the end of the run."""
    from tests.support.reliability_checks import FAULTS, VOLUME

    if FAULTS:
        terminalreporter.section("reliability: faults injected")
        for kind, count in sorted(FAULTS.items()):
            terminalreporter.write_line(f"{count:>8,}  {kind}")
        terminalreporter.write_line(f"{sum(FAULTS.values()):>8,}  in all")
    if VOLUME:
        terminalreporter.section("reliability: volume")
        for kind, count in sorted(VOLUME.items()):
            terminalreporter.write_line(f"{count:>8,}  {kind}")


@pytest.fixture
def register_plugin() -> Iterator[PluginRegistrar]:
    """Register plugins by hand (``register_plugin(obj, name)``); each one is unregistered
    afterwards, even when the test fails."""
    names: list[str] = []
    host = plugin_manager()

    def register(plugin: object, name: str) -> str:
        registered = host.register(plugin, name=name)
        names.append(registered)
        return registered

    try:
        yield register
    finally:
        for name in reversed(names):
            if host.has_plugin(name):
                host.unregister(name=name)
