"""The TokenGate plugin the instrumentor registers: hook implementations only."""

from __future__ import annotations

from tokengate.core import OperationInfo, OperationsCoordinator, TokenExtension, hookimpl
from tokengate.core.plugin import Plugin

from ._extension import MetricsExtension, TracingExtension
from ._telemetry import Telemetry

__all__ = ("PLUGIN_NAME", "InstrumentationPlugin")

#: The name the plugin is registered under in ``tokengate.core.plugin_manager()``.
PLUGIN_NAME = "tokengate.otel"


class InstrumentationPlugin(Plugin):
    """Hands every operation its extension and tracks the coordinators to report."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        """The metrics (and, with a tracer, tracing) extension of ``operation``."""
        telemetry = self.telemetry
        if not telemetry.enabled:
            return None
        series = telemetry.series_for(operation.operation_type)
        if telemetry.tracer is not None:
            return TracingExtension(telemetry, series, operation, telemetry.tracer)
        if telemetry.instruments is None:
            return None
        return MetricsExtension(telemetry, series, operation)

    @hookimpl
    def tokengate_coordinator_started(self, coordinator: OperationsCoordinator) -> None:
        """Report the new coordinator's domains."""
        if self.telemetry.enabled:
            self.telemetry.see_coordinator(coordinator)

    @hookimpl
    def tokengate_coordinator_stopped(self, coordinator: OperationsCoordinator) -> None:
        """Stop reporting the stopped coordinator's domains."""
        self.telemetry.forget_coordinator(coordinator)

    def __repr__(self) -> str:
        return "<tokengate.otel instrumentation plugin>"
