"""Fixtures of the tokengate-otel tests: the real OpenTelemetry SDK with in-memory exporters,
and started coordinators that are stopped and checked clean afterwards."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator
from tokengate.otel import TokenGateInstrumentor

# Helpers and process bodies live in tests/support (importable by module name here and in
# spawned workers, which inherit sys.path).
_SUPPORT = str(Path(__file__).parent / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

from otel_support import Otel, make_otel  # noqa: E402


@pytest.fixture
def otel_sdk() -> Iterator[Otel]:
    """SDK providers with in-memory exporters (not yet instrumented)."""
    otel = make_otel()
    try:
        yield otel
    finally:
        instrumentor = TokenGateInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        otel.tracer_provider.shutdown()
        otel.meter_provider.shutdown()


@pytest.fixture
def otel(otel_sdk: Otel) -> Otel:
    """TokenGate instrumented (traces and metrics) into in-memory SDK providers; operations
    must be decorated inside the test (after this fixture) to be instrumented."""
    TokenGateInstrumentor().instrument(
        tracer_provider=otel_sdk.tracer_provider,
        meter_provider=otel_sdk.meter_provider,
        skip_dep_check=True,
    )
    return otel_sdk


def assert_clean(coordinator: OperationsCoordinator) -> None:
    """After a stop: every token terminal, no sticky pin left."""
    assert coordinator.in_flight() == []
    assert coordinator.stats().in_flight == 0
    assert dict(coordinator.sticky_snapshot()) == {}


CoordinatorFactory = Callable[..., OperationsCoordinator]


@pytest.fixture
def coordinator_factory() -> Iterator[CoordinatorFactory]:
    """Make and start coordinators; each is stopped and checked clean afterwards."""
    made: list[OperationsCoordinator] = []

    def make(**settings: Any) -> OperationsCoordinator:
        settings.setdefault("stop_timeout", 30)
        coordinator = OperationsCoordinator(**settings)
        made.append(coordinator)
        return coordinator.start()

    try:
        yield make
    finally:
        for coordinator in reversed(made):
            coordinator.stop(timeout=30)
    for coordinator in made:
        assert_clean(coordinator)


@pytest.fixture
def coordinator(coordinator_factory: CoordinatorFactory) -> OperationsCoordinator:
    """A started coordinator with 2 cores x 2 workers."""
    return coordinator_factory(cores=2, workers_per_core=2)
