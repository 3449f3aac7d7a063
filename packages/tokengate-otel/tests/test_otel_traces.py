"""Token spans with the real SDK: parenting across the executor hop, nesting of the body's own
spans, attributes, failures, kills and timeouts, and tokens that never ran."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from otel_support import WAIT, Otel, wait_for_spans

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TaskToken,
    TokenTimeoutError,
    task_token_guard,
)


def test_token_span_is_a_child_of_the_callers_span_across_the_thread_hop(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    @task_token_guard("otel_child", tags={"weight": "medium"})
    def body(x: int) -> int:
        return x * 2

    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        tokens = [body(i) for i in range(8)]
        caller_thread = threading.get_ident()
    assert [t.get(timeout=WAIT) for t in tokens] == [i * 2 for i in range(8)]
    spans = wait_for_spans(otel, 8, "otel_child")
    assert len(spans) == 8
    request_context = request.get_span_context()
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == request_context.span_id
        assert span.context is not None
        assert span.context.trace_id == request_context.trace_id
        assert span.kind is SpanKind.INTERNAL
        attributes = dict(span.attributes or {})
        assert attributes["tokengate.operation"] == "otel_child"
        assert attributes["tokengate.weight"] == "medium"
        assert attributes["tokengate.executor"] == "thread"
        assert attributes["tokengate.core"] in {1, 2}
        assert attributes["tokengate.token.state"] == "completed"
        assert "error.type" not in attributes
        assert span.status.status_code is StatusCode.UNSET
    # the spans really ran elsewhere: the caller's thread made none of them current
    assert caller_thread == threading.get_ident()


def test_body_spans_nest_under_the_token_span(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    tracer = otel.tracer_provider.get_tracer("body")

    @task_token_guard("otel_nesting")
    def body() -> str:
        with tracer.start_as_current_span("inside-body"):
            return threading.current_thread().name

    worker = body().get(timeout=WAIT)
    assert worker != threading.current_thread().name
    (token_span,) = wait_for_spans(otel, 1, "otel_nesting")
    (inner,) = [s for s in otel.spans() if s.name == "inside-body"]
    assert token_span.context is not None
    assert inner.parent is not None
    assert inner.parent.span_id == token_span.context.span_id
    assert inner.context is not None
    assert inner.context.trace_id == token_span.context.trace_id
    # no caller span: the token span is a root
    assert token_span.parent is None


def test_worker_context_does_not_leak_into_the_next_body(
    otel: Otel, coordinator_factory: Any
) -> None:
    coordinator_factory(cores=1, workers_per_core=1)
    tracer = otel.tracer_provider.get_tracer("app")
    from opentelemetry import trace

    @task_token_guard("otel_leak")
    def body() -> int:
        return trace.get_current_span().get_span_context().span_id

    with tracer.start_as_current_span("first"):
        first = body()
    inside_first = first.get(timeout=WAIT)
    second = body().get(timeout=WAIT)  # no caller span now
    spans = {s.context.span_id: s for s in wait_for_spans(otel, 2, "otel_leak") if s.context}
    assert inside_first in spans
    assert second in spans
    assert spans[second].parent is None  # a root, not a child of the first token's span


def test_failure_records_error_type_and_exception(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    @task_token_guard("otel_fails")
    def body() -> None:
        raise KeyError("missing")

    token = body()
    with pytest.raises(KeyError):
        token.get(timeout=WAIT)
    (span,) = wait_for_spans(otel, 1, "otel_fails")
    attributes = dict(span.attributes or {})
    assert attributes["tokengate.token.state"] == "failed"
    assert attributes["error.type"] == "KeyError"
    assert span.status.status_code is StatusCode.ERROR
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert dict(events[0].attributes or {})["exception.type"] == "KeyError"


class Custom(Exception):
    """A user exception: ``error.type`` is qualified by its module."""


def test_error_type_of_a_user_exception_is_qualified(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    @task_token_guard("otel_custom")
    def body() -> None:
        raise Custom("no")

    with pytest.raises(Custom):
        body().get(timeout=WAIT)
    (span,) = wait_for_spans(otel, 1, "otel_custom")
    assert dict(span.attributes or {})["error.type"] == f"{Custom.__module__}.Custom"


def test_kill_while_running_is_visible_on_the_span(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    started = threading.Event()
    release = threading.Event()

    @task_token_guard("otel_killed")
    def body() -> str:
        started.set()
        release.wait(WAIT)
        return "late"

    token = body()
    assert started.wait(WAIT)
    assert token.kill("operator said so")
    with pytest.raises(TaskKilledError):
        token.get(timeout=WAIT)
    release.set()
    (span,) = wait_for_spans(otel, 1, "otel_killed")
    attributes = dict(span.attributes or {})
    assert attributes["tokengate.token.state"] == "killed"
    assert attributes["error.type"] == "killed"
    assert attributes["tokengate.token.kill_reason"] == "operator said so"
    assert span.status.status_code is StatusCode.ERROR
    assert "operator said so" in (span.status.description or "")


def test_timeout_while_running_is_visible_on_the_span(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    release = threading.Event()

    @task_token_guard("otel_timeout", tags={"timeout": 0.2})
    def body() -> None:
        release.wait(WAIT)

    token = body()
    with pytest.raises(TokenTimeoutError):
        token.get(timeout=WAIT)
    release.set()
    (span,) = wait_for_spans(otel, 1, "otel_timeout")
    attributes = dict(span.attributes or {})
    assert attributes["tokengate.token.state"] == "timeout"
    assert attributes["error.type"] == "timeout"
    assert "timeout" in str(attributes["tokengate.token.kill_reason"])
    assert span.status.status_code is StatusCode.ERROR


def test_tokens_that_never_ran_have_no_span(otel: Otel, coordinator: OperationsCoordinator) -> None:
    @task_token_guard("otel_never")
    def body(i: int) -> int:
        return i

    coordinator.pause()
    queued: list[TaskToken[int]] = [body(i) for i in range(5)]
    for token in queued:
        assert token.kill("drained before start")
    coordinator.resume()
    ran = body(99)
    assert ran.get(timeout=WAIT) == 99
    spans = wait_for_spans(otel, 1, "otel_never")
    assert len(spans) == 1
    assert dict(spans[0].attributes or {})["tokengate.token.state"] == "completed"
