"""Shared fixtures of the tokengate-core tests.

Fixtures here stay generic (coordinators, plugin registration) so every test module of the
package can use them; add new ones below without changing these.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator
from tokengate.core.testing import PluginRegistrar

CoordinatorFactory = Callable[..., OperationsCoordinator]


def assert_coordinator_clean(coordinator: OperationsCoordinator) -> None:
    """SPEC I3/I4 after a stop: every token is terminal and no registry holds anything."""
    left = coordinator.in_flight()
    assert left == [], f"tokens still in flight after stop: {left[:10]}"
    assert coordinator.stats().in_flight == 0, "the token table is not empty after stop"
    assert dict(coordinator.sticky_snapshot()) == {}, "sticky pins left after every token ended"


@pytest.fixture
def coordinator() -> Iterator[OperationsCoordinator]:
    """A started coordinator with 4 cores x 2 workers; stopped and checked clean afterwards."""
    coord = OperationsCoordinator(cores=4, workers_per_core=2, stop_timeout=30).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=30)
    assert_coordinator_clean(coord)


@pytest.fixture
def coordinator_factory() -> Iterator[CoordinatorFactory]:
    """Make (and start) coordinators with any settings; all are stopped and checked clean
    afterwards. Pass ``start=False`` to get one that is not started."""
    made: list[OperationsCoordinator] = []

    def make(*, start: bool = True, **settings: Any) -> OperationsCoordinator:
        settings.setdefault("stop_timeout", 30)
        coord = OperationsCoordinator(**settings)
        made.append(coord)
        return coord.start() if start else coord

    try:
        yield make
    finally:
        for coord in reversed(made):
            coord.stop(timeout=30)
    for coord in made:
        assert_coordinator_clean(coord)


@pytest.fixture
def register_plugin(tokengate_plugin: PluginRegistrar) -> PluginRegistrar:
    """The ``tokengate_plugin`` fixture shipped with tokengate-core, under the name these
    tests use: ``register_plugin(obj, name)``; unregistered after the test."""
    return tokengate_plugin


# Process-domain targets must be importable by module and qualified name in the worker
# process; test modules are not (pytest's importlib import mode), so those functions live in
# tests/support, put on sys.path here. Spawned worker processes inherit sys.path.
_SUPPORT = str(Path(__file__).resolve().parent / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
