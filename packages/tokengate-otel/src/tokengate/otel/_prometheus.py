"""``serve_prometheus``: TokenGate's metrics on a Prometheus ``/metrics`` endpoint."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from ._instrumentor import (
    DEFAULT_MAX_HISTOGRAM_RATE,
    DEFAULT_MAX_OPERATIONS,
    TokenGateInstrumentor,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider

__all__ = ("PrometheusEndpoint", "serve_prometheus")

_log = logging.getLogger("tokengate.otel")

_MISSING_EXTRA = (
    "serve_prometheus needs the OpenTelemetry SDK, its Prometheus exporter and "
    "prometheus-client: pip install 'tokengate-otel[prometheus]'"
)


class PrometheusEndpoint:
    """A running ``/metrics`` endpoint made by :func:`serve_prometheus`.

    Attributes:
        url: where Prometheus scrapes, e.g. ``http://127.0.0.1:9464/metrics``.
        host: the address the server listens on.
        port: the port it listens on (the real one when 0 was asked for).
        meter_provider: the SDK meter provider whose metrics it serves.
    """

    def __init__(
        self,
        server: WSGIServer,
        thread: threading.Thread,
        meter_provider: MeterProvider,
        host: str,
        owns_instrumentation: bool,
    ) -> None:
        self._server = server
        self._thread = thread
        self._owns_instrumentation = owns_instrumentation
        self._stopped = False
        self.meter_provider = meter_provider
        self.host = host
        self.port: int = server.server_port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving; uninstrument TokenGate if this endpoint instrumented it. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._owns_instrumentation:
            instrumentor = TokenGateInstrumentor()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        self.meter_provider.shutdown()
        _log.info("Prometheus endpoint %s stopped", self.url)

    def __enter__(self) -> PrometheusEndpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
        return f"<PrometheusEndpoint {self.url} {state}>"


def serve_prometheus(
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    traces: bool = False,
    max_operations: int = DEFAULT_MAX_OPERATIONS,
    max_histogram_rate: float | None = DEFAULT_MAX_HISTOGRAM_RATE,
) -> PrometheusEndpoint:
    """Serve TokenGate's metrics for Prometheus at ``http://{addr}:{port}/metrics``.

    Makes an OpenTelemetry SDK meter provider with a Prometheus reader, instruments TokenGate
    with it (see :class:`TokenGateInstrumentor`) and starts a small HTTP server in a daemon
    thread. Operations decorated afterwards are measured. Stop it with ``endpoint.stop()``
    (or use it as a context manager), which also uninstruments.

    Args:
        port: the TCP port (0 picks a free one; read it back from ``endpoint.port``).
        addr: the address to listen on; the loopback interface unless you say otherwise.
        traces: also trace tokens through the global tracer provider.
        max_operations: distinct ``operation`` attribute values before ``other``.
        max_histogram_rate: tokens per second of one operation recorded in the duration
            histograms before they are sampled (None: every token).

    Raises:
        RuntimeError: TokenGate is already instrumented (then add
            ``opentelemetry.exporter.prometheus.PrometheusMetricReader`` to the meter
            provider you instrumented with instead), or the SDK extras are missing.
        OSError: the port is taken or the address cannot be bound.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"serve_prometheus(port={port!r}): a TCP port is an int in 0..65535")
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"serve_prometheus(addr={addr!r}): give an address such as '127.0.0.1'")
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise RuntimeError(f"{_MISSING_EXTRA} ({exc})") from exc
    instrumentor = TokenGateInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        raise RuntimeError(
            "serve_prometheus: TokenGate is already instrumented; add "
            "opentelemetry.exporter.prometheus.PrometheusMetricReader to the meter provider "
            "given to TokenGateInstrumentor().instrument(), or call uninstrument() first"
        )
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except BaseException:
        provider.shutdown()
        raise
    try:
        instrumentor.instrument(
            meter_provider=provider,
            traces=traces,
            max_operations=max_operations,
            max_histogram_rate=max_histogram_rate,
            raise_exception_on_conflict=True,
        )
    except BaseException:
        server.shutdown()
        server.server_close()
        provider.shutdown()
        raise
    endpoint = PrometheusEndpoint(server, thread, provider, addr, owns_instrumentation=True)
    _log.info("serving TokenGate metrics for Prometheus at %s", endpoint.url)
    return endpoint
