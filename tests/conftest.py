"""Shared set-up of the cross-package tests (``tests/``).

Process-domain bodies must be importable by module and qualified name inside a spawned
worker process, and test modules are not (pytest's importlib import mode). They live in
``tests/support/``; the repository root goes on ``sys.path`` here so that they import as
``tests.support.<module>`` — the same name in the tests, in the worker processes (spawned
children inherit ``sys.path``) and for mypy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tokengate.core.testing import PluginRegistrar

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


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
def register_plugin(tokengate_plugin: PluginRegistrar) -> PluginRegistrar:
    """The ``tokengate_plugin`` fixture shipped with tokengate-core, under the name these
    tests use: ``register_plugin(obj, name)``; unregistered after the test."""
    return tokengate_plugin
