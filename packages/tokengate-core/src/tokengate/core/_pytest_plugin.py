"""The pytest plugin of ``tokengate-core`` (entry point ``pytest11``: ``tokengate``).

Fixtures:

* ``tokengate_coordinator`` — a started :class:`~tokengate.core.OperationsCoordinator`,
  stopped after the test and checked: a token still in flight or a sticky pin still held
  fails the test. Settings come from the ``tokengate`` marker:
  ``@pytest.mark.tokengate(cores=2, workers_per_core=1)``.
* ``tokengate_eager_coordinator`` — the same with the ``eager`` executor: every call runs
  inline in the test's thread and returns a finished token.
* ``tokengate_plugin`` — ``tokengate_plugin(plugin, name=None)`` registers a plugin for this
  test only; it is unregistered afterwards, even when the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._coordinator import OperationsCoordinator
from .testing import PluginRegistrar, check_no_leaks, eager_coordinator

__all__ = (
    "pytest_configure",
    "tokengate_coordinator",
    "tokengate_eager_coordinator",
    "tokengate_plugin",
)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``tokengate`` marker (settings of the ``tokengate_coordinator``)."""
    config.addinivalue_line(
        "markers",
        "tokengate(**settings): OperationsCoordinator settings of the tokengate_coordinator "
        "and tokengate_eager_coordinator fixtures",
    )


def _settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {"cores": 2, "workers_per_core": 2, "stop_timeout": 30}
    for marker in reversed(list(request.node.iter_markers("tokengate"))):
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.tokengate takes keyword settings only, not {marker.args!r}"
            )
        settings.update(marker.kwargs)
    return settings


@pytest.fixture
def tokengate_coordinator(request: pytest.FixtureRequest) -> Iterator[OperationsCoordinator]:
    """A started coordinator (2 cores x 2 workers unless ``@pytest.mark.tokengate(...)`` says
    otherwise); stopped after the test, which fails if a token or a sticky pin leaked."""
    coordinator = OperationsCoordinator(**_settings(request)).start()
    try:
        yield coordinator
    finally:
        coordinator.stop()
    check_no_leaks(coordinator)


@pytest.fixture
def tokengate_eager_coordinator(
    request: pytest.FixtureRequest,
) -> Iterator[OperationsCoordinator]:
    """A started coordinator whose calls run inline in the test's thread (eager mode);
    stopped and checked for leaks after the test."""
    with eager_coordinator(**_settings(request)) as coordinator:
        yield coordinator


@pytest.fixture
def tokengate_plugin() -> Iterator[PluginRegistrar]:
    """Register plugins for one test: ``tokengate_plugin(plugin, name=None) -> name``."""
    registrar = PluginRegistrar()
    try:
        yield registrar
    finally:
        registrar.close()
