"""``TokenGateInstrumentor``: the OpenTelemetry instrumentor of TokenGate."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tokengate.core import plugin_manager

from ._names import METER_NAME, TRACER_NAME
from ._plugin import PLUGIN_NAME, InstrumentationPlugin
from ._telemetry import Telemetry

__all__ = ("DEFAULT_MAX_HISTOGRAM_RATE", "DEFAULT_MAX_OPERATIONS", "TokenGateInstrumentor")

_log = logging.getLogger("tokengate.otel")

#: Distinct ``operation`` attribute values before the rest are reported as ``other``.
DEFAULT_MAX_OPERATIONS = 100

#: Tokens per second of one operation recorded in the duration histograms before sampling.
DEFAULT_MAX_HISTOGRAM_RATE = 100.0

_OPTIONS = frozenset(
    {
        "tracer_provider",
        "meter_provider",
        "traces",
        "metrics",
        "max_operations",
        "max_histogram_rate",
    }
)


def _version() -> str:
    try:
        return importlib.metadata.version("tokengate-otel")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class TokenGateInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces and metrics for every TokenGate token, the OpenTelemetry way.

    ``TokenGateInstrumentor().instrument()`` registers a TokenGate plugin that gives each
    operation decorated (or, once plugins are re-read, called) afterwards:

    * a span per token that ran, named after the operation, parented to the span that was
      current where the call was made and current while the body runs (so the body's own
      spans nest under it), across thread and process executors;
    * metrics with bounded attributes (``operation``, ``state``, ``core``, ``executor``):
      terminal tokens by state, queue and run durations, tokens in flight, and per core
      domain the queue depth and busy workers, plus sticky pins and conductor domains.

    It is registered under the ``opentelemetry_instrumentor`` entry point, so
    ``opentelemetry-instrument python app.py`` turns it on with no code change.
    ``uninstrument()`` unregisters the plugin: no extension is given to later operations, and
    extensions already handed out stop recording.

    Like every OpenTelemetry instrumentor it is a singleton: ``TokenGateInstrumentor()``
    always returns the same object.
    """

    _telemetry: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The instrumented distribution: ``tokengate-core``."""
        return ("tokengate-core >= 0.1.0",)

    def instrument(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        traces: bool = True,
        metrics: bool = True,
        max_operations: int = DEFAULT_MAX_OPERATIONS,
        max_histogram_rate: float | None = DEFAULT_MAX_HISTOGRAM_RATE,
        **kwargs: Any,
    ) -> None:
        """Start tracing and measuring TokenGate tokens.

        Args:
            tracer_provider: where token spans go (default: the global tracer provider).
            meter_provider: where the metrics go (default: the global meter provider).
            traces: False for metrics only (no per-token span work at all).
            metrics: False for traces only.
            max_operations: distinct ``operation`` attribute values; the operations named
                after these are reported as ``other``. At least 1.
            max_histogram_rate: tokens per second of one operation recorded in the queue
                and run duration histograms; above it they hold a uniform random sample of
                about that many per second (``tokengate.tokens`` stays exact). None records
                every token.
            **kwargs: the options of ``BaseInstrumentor.instrument`` (``skip_dep_check``,
                ``raise_exception_on_conflict``).

        Raises:
            TypeError: an unknown option or a value of the wrong type.
            ValueError: ``max_operations`` below 1, ``max_histogram_rate`` not positive, or
                both ``traces`` and ``metrics`` off.
        """
        super().instrument(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            traces=traces,
            metrics=metrics,
            max_operations=max_operations,
            max_histogram_rate=max_histogram_rate,
            **kwargs,
        )

    def _instrument(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - _OPTIONS)
        if unknown:
            raise TypeError(
                f"TokenGateInstrumentor.instrument() got unknown option(s) {', '.join(unknown)}; "
                f"the options are {', '.join(sorted(_OPTIONS))}"
            )
        traces = kwargs.get("traces", True)
        want_metrics = kwargs.get("metrics", True)
        max_operations = kwargs.get("max_operations", DEFAULT_MAX_OPERATIONS)
        for name, value in (("traces", traces), ("metrics", want_metrics)):
            if not isinstance(value, bool):
                raise TypeError(f"instrument({name}=...) takes True or False, not {value!r}")
        if not isinstance(max_operations, int) or isinstance(max_operations, bool):
            raise TypeError(f"instrument(max_operations=...) takes an int, not {max_operations!r}")
        if max_operations < 1:
            raise ValueError(
                f"instrument(max_operations={max_operations}): at least 1 operation must be "
                "reported by name"
            )
        rate = kwargs.get("max_histogram_rate", DEFAULT_MAX_HISTOGRAM_RATE)
        if rate is not None:
            if not isinstance(rate, int | float) or isinstance(rate, bool):
                raise TypeError(
                    f"instrument(max_histogram_rate=...) takes a number or None, not {rate!r}"
                )
            if not rate > 0:
                raise ValueError(
                    f"instrument(max_histogram_rate={rate!r}): give a positive rate in tokens "
                    "per second, or None to record every token"
                )
            rate = float(rate)
        if not traces and not want_metrics:
            raise ValueError(
                "instrument(traces=False, metrics=False) would record nothing; leave one on "
                "(or do not instrument)"
            )
        version = _version()
        tracer = (
            otel_trace.get_tracer(TRACER_NAME, version, kwargs.get("tracer_provider"))
            if traces
            else None
        )
        meter = (
            otel_metrics.get_meter(METER_NAME, version, kwargs.get("meter_provider"))
            if want_metrics
            else None
        )
        telemetry = Telemetry(
            tracer=tracer, meter=meter, max_operations=max_operations, max_histogram_rate=rate
        )
        host = plugin_manager()
        if host.has_plugin(PLUGIN_NAME):
            host.unregister(name=PLUGIN_NAME)
        host.register(InstrumentationPlugin(telemetry), name=PLUGIN_NAME)
        self._telemetry = telemetry
        _log.info(
            "TokenGate instrumented (traces=%s, metrics=%s, max_operations=%d)",
            traces,
            want_metrics,
            max_operations,
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        host = plugin_manager()
        if host.has_plugin(PLUGIN_NAME):
            host.unregister(name=PLUGIN_NAME)
        telemetry = self._telemetry
        self._telemetry = None
        if telemetry is not None:
            telemetry.close()
        _log.info("TokenGate uninstrumented")
