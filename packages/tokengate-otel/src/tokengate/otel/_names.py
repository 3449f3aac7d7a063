"""The names the instrumentation exports: instruments, attributes, span attributes.

One place for every name, so the code, the tests and the documentation table agree.
"""

from __future__ import annotations

from typing import Final

__all__ = (
    "ATTR_CORE",
    "ATTR_COORDINATOR",
    "ATTR_EXECUTOR",
    "ATTR_OPERATION",
    "ATTR_STATE",
    "DURATION_BUCKETS",
    "METER_NAME",
    "METRIC_BUSY_WORKERS",
    "METRIC_CONDUCTOR_DOMAINS",
    "METRIC_IN_FLIGHT",
    "METRIC_QUEUE_DEPTH",
    "METRIC_QUEUE_DURATION",
    "METRIC_RUN_DURATION",
    "METRIC_STICKY_PINS",
    "METRIC_TOKENS",
    "OTHER_OPERATIONS",
    "SPAN_CORE",
    "SPAN_ERROR_TYPE",
    "SPAN_EXECUTOR",
    "SPAN_KILL_REASON",
    "SPAN_OPERATION",
    "SPAN_STATE",
    "SPAN_WEIGHT",
    "TRACER_NAME",
)

#: Instrumentation scope of the tracer and the meter.
TRACER_NAME: Final = "tokengate.otel"
METER_NAME: Final = "tokengate.otel"

# ---------------------------------------------------------------- metrics (OpenTelemetry names)
#: Counter: tokens that reached a terminal state (operation, state, core, executor).
METRIC_TOKENS: Final = "tokengate.tokens"
#: Histogram, seconds: creation to the start of the body (tokens that ran).
METRIC_QUEUE_DURATION: Final = "tokengate.token.queue.duration"
#: Histogram, seconds: start of the body to the terminal move (tokens that ran).
METRIC_RUN_DURATION: Final = "tokengate.token.run.duration"
#: Up-down counter: tokens created and not yet terminal (coordinator).
METRIC_IN_FLIGHT: Final = "tokengate.tokens.in_flight"
#: Gauge: tokens queued in a core domain (coordinator, core).
METRIC_QUEUE_DEPTH: Final = "tokengate.domain.queue_depth"
#: Gauge: workers of a core domain running a body now (coordinator, core).
METRIC_BUSY_WORKERS: Final = "tokengate.domain.busy_workers"
#: Gauge: live sticky pins (coordinator).
METRIC_STICKY_PINS: Final = "tokengate.sticky.pins"
#: Gauge: conductor domains open (coordinator); reported when tokengate-conductor is installed.
METRIC_CONDUCTOR_DOMAINS: Final = "tokengate.conductor.domains"

#: Metric attributes. Bounded: never a token id or an argument.
ATTR_OPERATION: Final = "operation"
ATTR_STATE: Final = "state"
ATTR_CORE: Final = "core"
ATTR_EXECUTOR: Final = "executor"
ATTR_COORDINATOR: Final = "coordinator"

#: The ``operation`` value of every operation past the configured limit.
OTHER_OPERATIONS: Final = "other"

#: Bucket boundaries (seconds) of the two duration histograms: 100 µs to 5 minutes.
DURATION_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

# ---------------------------------------------------------------- span attributes
SPAN_OPERATION: Final = "tokengate.operation"
SPAN_WEIGHT: Final = "tokengate.weight"
SPAN_CORE: Final = "tokengate.core"
SPAN_EXECUTOR: Final = "tokengate.executor"
SPAN_STATE: Final = "tokengate.token.state"
SPAN_KILL_REASON: Final = "tokengate.token.kill_reason"
SPAN_ERROR_TYPE: Final = "error.type"
