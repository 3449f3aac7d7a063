"""The token extensions: what the instrumentation does in the life of each token.

Made once per operation (``tokengate_token_extension``) with everything that can be decided
then — the ``operation`` label, the span name and base attributes, the histogram attributes —
so a token costs a few dict operations, two histogram records and, with traces, one span.

* :class:`MetricsExtension` — ``on_terminal`` only (count by state, queue and run
  durations): it leaves the creation and the body's path alone.
* :class:`TracingExtension` — adds ``on_create`` (the caller's context) and the token span:
  started around the body in the worker thread (``before_execute``/``after_execute``),
  parented to the context the call was made in and current while the body runs; for bodies
  sent to another process, started in the parent (``remote_context``) and re-entered there
  (``remote_scope``) from a W3C ``traceparent``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, attach, detach, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokengate.core import (
    OperationInfo,
    OperationsCoordinator,
    TaskToken,
    TokenExtension,
    TokenState,
)

from ._names import (
    ATTR_OPERATION,
    SPAN_CORE,
    SPAN_ERROR_TYPE,
    SPAN_EXECUTOR,
    SPAN_KILL_REASON,
    SPAN_OPERATION,
    SPAN_STATE,
    SPAN_WEIGHT,
)
from ._telemetry import OperationSeries, Telemetry

__all__ = ("MetricsExtension", "TracingExtension", "executor_name")

_log = logging.getLogger("tokengate.otel")

_COMPLETED = TokenState.COMPLETED
_FAILED = TokenState.FAILED
_KILLED = TokenState.KILLED
_TIMEOUT = TokenState.TIMEOUT
_ROOT = Context()
_random = random.random
_perf = time.perf_counter
#: Tokens between two estimates of an operation's rate (for histogram sampling).
_RATE_WINDOW = 128
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def executor_name(tags: Mapping[str, object], coordinator: object) -> str:
    """The ``executor`` attribute of an operation's tokens on ``coordinator``: the operation's
    ``executor`` tag, ``process`` for ``process_pool``, else the coordinator's default."""
    explicit = tags.get("executor")
    if isinstance(explicit, str) and explicit:
        return explicit
    if tags.get("process_pool") is True:
        return "process"
    default = getattr(getattr(coordinator, "config", None), "executor", None)
    if isinstance(default, str) and default:
        return default
    name = getattr(default, "name", None)
    return name if isinstance(name, str) and name else "thread"


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its class, qualified by module unless builtin."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class MetricsExtension(TokenExtension):
    """Counts an operation's tokens at their terminal move: one counter cell under a short
    lock and, for tokens that ran, the queue and run durations. Nothing else per token.

    The duration histograms record every token while the operation finishes fewer than
    ``max_histogram_rate`` tokens per second; above that rate they record a uniform random
    sample of about that many tokens per second (the counter stays exact). The rate is
    re-estimated every 128 tokens, so the cost of the histograms stays bounded however fast
    tokens go.
    """

    def __init__(
        self, telemetry: Telemetry, series: OperationSeries, operation: OperationInfo
    ) -> None:
        self._telemetry = telemetry
        self._series = series
        self._tags = operation.tags
        self._label = series.label
        self._hist_attributes = {ATTR_OPERATION: series.label}
        instruments = telemetry.instruments
        self._metrics = instruments is not None
        self._record_queue = instruments.queue_duration.record if instruments else None
        self._record_run = instruments.run_duration.record if instruments else None
        self._max_rate = telemetry.max_histogram_rate
        #: Probability that a token is recorded in the histograms (1.0: every token).
        self._sample = 1.0
        self._window_count = 0
        self._window_start = _perf()
        #: (coordinator, executor name), replaced as one tuple.
        self._bound: tuple[object, str] = (None, "")

    def _bind(self, coordinator: object) -> tuple[object, str]:
        bound = (coordinator, executor_name(self._tags, coordinator))
        self._bound = bound
        if isinstance(coordinator, OperationsCoordinator):
            self._telemetry.see_coordinator(coordinator)
        return bound

    def _retune(self) -> None:
        """Re-estimate the operation's rate and the histogram sampling probability (racy
        updates from several workers only blur the estimate)."""
        now = _perf()
        elapsed = now - self._window_start
        rate = self._window_count / elapsed if elapsed > 0 else float("inf")
        self._window_count = 0
        self._window_start = now
        limit = self._max_rate
        self._sample = 1.0 if limit is None or rate <= limit else limit / rate

    def on_terminal(self, token: TaskToken[Any]) -> None:
        if not self._metrics or not self._telemetry.enabled:
            return
        bound = self._bound
        if token.coordinator is not bound[0]:
            bound = self._bind(token.coordinator)
        key = (token.state, token.core_id, bound[1])
        series = self._series
        with series.lock:
            counts = series.finished
            counts[key] = counts.get(key, 0) + 1
        started = token.started_at
        if started is None or self._record_queue is None or self._record_run is None:
            return
        count = self._window_count = self._window_count + 1
        if count >= _RATE_WINDOW and self._max_rate is not None:
            self._retune()
        sample = self._sample
        if sample < 1.0 and _random() >= sample:
            return
        attributes = self._hist_attributes
        # an empty context: no exemplar work per record
        self._record_queue(max(0.0, started - token.created_at), attributes, _ROOT)
        finished = token.finished_at
        if finished is not None:
            self._record_run(max(0.0, finished - started), attributes, _ROOT)

    def __repr__(self) -> str:
        return f"<tokengate.otel metrics extension operation={self._label!r}>"


class TracingExtension(MetricsExtension):
    """Counts an operation's tokens and traces each one that runs."""

    def __init__(
        self,
        telemetry: Telemetry,
        series: OperationSeries,
        operation: OperationInfo,
        tracer: Tracer,
    ) -> None:
        super().__init__(telemetry, series, operation)
        self._tracer = tracer
        self._span_name = operation.operation_type
        self._weight = operation.weight.value
        #: The context each token was created in, until it starts (or ends without starting).
        self._parents: dict[TaskToken[Any], Context] = {}
        #: Span attributes by (coordinator id, core), with the coordinator they were made for:
        #: made once, reused by every token.
        self._span_attributes: dict[tuple[int, int | None], tuple[object, dict[str, Any]]] = {}
        #: Spans started in this process for bodies that run in another one.
        self._remote: dict[TaskToken[Any], Span] = {}

    def on_create(self, token: TaskToken[Any]) -> None:
        if self._telemetry.enabled:
            self._parents[token] = get_current()

    def _attributes(self, token: TaskToken[Any]) -> dict[str, Any]:
        coordinator = token.coordinator
        key = (id(coordinator), token.core_id)
        entry = self._span_attributes.get(key)
        if entry is not None and entry[0] is coordinator:
            return entry[1]
        bound = self._bound
        if coordinator is not bound[0]:
            bound = self._bind(coordinator)
        attributes: dict[str, Any] = {
            SPAN_OPERATION: self._span_name,
            SPAN_WEIGHT: self._weight,
            SPAN_EXECUTOR: bound[1],
        }
        if token.core_id is not None:
            attributes[SPAN_CORE] = token.core_id
        if len(self._span_attributes) < 1024 or key in self._span_attributes:
            self._span_attributes[key] = (coordinator, attributes)
        return attributes

    def _start(self, token: TaskToken[Any]) -> tuple[Span, Context]:
        parent = self._parents.pop(token, None) or _ROOT
        span = self._tracer.start_span(
            self._span_name, parent, SpanKind.INTERNAL, self._attributes(token)
        )
        return span, set_span_in_context(span, parent)

    def before_execute(self, token: TaskToken[Any]) -> object:
        if not self._telemetry.enabled or (self._remote and token in self._remote):
            return None
        span, context = self._start(token)
        return span, attach(context)

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        if type(state) is not tuple:
            return
        span, context_token = state
        try:
            detach(context_token)
        finally:
            _end(span, token)

    def remote_context(self, token: TaskToken[Any]) -> object:
        if not self._telemetry.enabled:
            return None
        span, context = self._start(token)
        self._remote[token] = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=context)
        return carrier

    @classmethod
    def remote_scope(cls, value: object) -> contextlib.AbstractContextManager[object]:
        if not isinstance(value, dict) or not value:
            return contextlib.nullcontext()
        return _remote_scope(value)

    def on_terminal(self, token: TaskToken[Any]) -> None:
        super().on_terminal(token)
        if self._parents:
            self._parents.pop(token, None)
        if self._remote:
            span = self._remote.pop(token, None)
            # A body sent away but killed before it started never ran: its span is dropped
            # (never ended, so never exported), as for a token killed in its queue.
            if span is not None and token.started_at is not None:
                _end(span, token)

    def __repr__(self) -> str:
        return f"<tokengate.otel tracing extension operation={self._label!r}>"


@contextlib.contextmanager
def _remote_scope(carrier: dict[str, str]) -> Iterator[object]:
    """Around a body in a worker process: the token span (from its carrier) is current."""
    context_token = attach(_PROPAGATOR.extract(carrier, context=_ROOT))
    try:
        yield None
    finally:
        detach(context_token)


def _end(span: Span, token: TaskToken[Any]) -> None:
    """Write the token's final state on its span and end it."""
    try:
        state = token.state
        span.set_attribute(SPAN_STATE, state.value)
        if state is _FAILED:
            exc = _exception_of(token)
            span.set_attribute(SPAN_ERROR_TYPE, error_type(exc) if exc is not None else "failed")
            if exc is not None:
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, repr(exc) if exc is not None else "failed"))
        elif state is _KILLED or state is _TIMEOUT:
            reason = token.kill_reason or state.value
            span.set_attribute(SPAN_ERROR_TYPE, state.value)
            span.set_attribute(SPAN_KILL_REASON, reason)
            span.set_status(Status(StatusCode.ERROR, f"{state.value}: {reason}"))
    except Exception:
        _log.exception("writing the span of %s failed", token.token_id)
    finally:
        span.end()


def _exception_of(token: TaskToken[Any]) -> BaseException | None:
    try:
        return token.exception(timeout=0)
    except Exception:
        return None
