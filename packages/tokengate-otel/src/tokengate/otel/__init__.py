"""OpenTelemetry traces and metrics for TokenGate, and a Prometheus endpoint."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
