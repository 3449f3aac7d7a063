"""OpenTelemetry traces and metrics for TokenGate, and a Prometheus endpoint.

``TokenGateInstrumentor().instrument()`` (or ``opentelemetry-instrument python app.py``) gives
every token that runs a span parented to the caller's span, and the coordinator metrics with
bounded attributes; :func:`serve_prometheus` serves those metrics on ``/metrics``.
"""

from __future__ import annotations

from ._instrumentor import DEFAULT_MAX_HISTOGRAM_RATE as DEFAULT_MAX_HISTOGRAM_RATE
from ._instrumentor import DEFAULT_MAX_OPERATIONS as DEFAULT_MAX_OPERATIONS
from ._instrumentor import TokenGateInstrumentor as TokenGateInstrumentor
from ._overhead import OverheadReport as OverheadReport
from ._overhead import measure_overhead as measure_overhead
from ._prometheus import PrometheusEndpoint as PrometheusEndpoint
from ._prometheus import serve_prometheus as serve_prometheus

__all__ = (
    "DEFAULT_MAX_HISTOGRAM_RATE",
    "DEFAULT_MAX_OPERATIONS",
    "OverheadReport",
    "PrometheusEndpoint",
    "TokenGateInstrumentor",
    "measure_overhead",
    "serve_prometheus",
)
