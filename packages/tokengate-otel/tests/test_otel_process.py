"""The trace context crosses the hop to a process executor: the token span is made in the
coordinator's process (``remote_context``) and is current around the body in the worker
process (``remote_scope``), so spans made there nest under it."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from types import MappingProxyType
from typing import Any

import otel_procfuncs
import pytest
from otel_support import WAIT, Otel, wait_for_spans

from tokengate.core import (
    OperationInfo,
    OperationsCoordinator,
    TaskToken,
    Weight,
    plugin_manager,
    task_token_guard,
)
from tokengate.otel._extension import TracingExtension

needs_remote_contexts = pytest.mark.skipif(
    not hasattr(TaskToken, "remote_contexts"),
    reason="this tokengate-core's process executor does not enter extension remote contexts",
)


@needs_remote_contexts
def test_token_span_is_current_in_the_worker_process(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    remote_ids = task_token_guard("otel_proc_ids", tags={"process_pool": True})(
        otel_procfuncs.current_span_ids
    )
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        token = remote_ids()
    trace_id, span_id, valid = token.get(timeout=WAIT)
    assert valid, "no span was current around the body in the worker process"
    (span,) = wait_for_spans(otel, 1, "otel_proc_ids")
    assert span.context is not None
    assert (trace_id, span_id) == (span.context.trace_id, span.context.span_id)
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["tokengate.executor"] == "process"
    assert attributes["tokengate.token.state"] == "completed"


def test_process_tokens_are_counted(otel: Otel, coordinator: OperationsCoordinator) -> None:
    add = task_token_guard("otel_proc_add", tags={"process_pool": True})(otel_procfuncs.add)
    assert [add(i, 1).get(timeout=WAIT) for i in range(3)] == [1, 2, 3]
    counts = {
        (dict(p.attributes)["operation"], dict(p.attributes)["executor"]): p.value
        for p in otel.points("tokengate.tokens")
    }
    assert counts == {("otel_proc_add", "process"): 3}
    run = otel.points("tokengate.token.run.duration")
    assert sum(p.count for p in run) == 3


@needs_remote_contexts
def test_one_span_per_process_token(otel: Otel, coordinator: OperationsCoordinator) -> None:
    add = task_token_guard("otel_proc_spans", tags={"process_pool": True})(otel_procfuncs.add)
    assert [add(i, 1).get(timeout=WAIT) for i in range(3)] == [1, 2, 3]
    spans = wait_for_spans(otel, 3, "otel_proc_spans")
    assert len(spans) == 3
    assert all(s.parent is None for s in spans)  # no caller span: roots


def test_remote_context_round_trip_through_a_real_process(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    """The extension's half of the process hop, driven as a process executor drives it: the
    carrier made in this process is entered in a spawned one, and a token that then never
    runs leaves no span."""
    op = task_token_guard("otel_proc_manual")(otel_procfuncs.add)
    (extension,) = [
        ext
        for ext in plugin_manager().token_extensions(
            OperationInfo(
                "otel_proc_manual", otel_procfuncs.add, MappingProxyType({}), Weight.MEDIUM
            )
        )
        if isinstance(ext, TracingExtension)
    ]
    tracer = otel.tracer_provider.get_tracer("app")
    coordinator.pause()
    try:
        with tracer.start_as_current_span("request") as request:
            token = op(1, 2)
            extension.on_create(token)  # in the calling thread, as the core calls it
        carrier = extension.remote_context(token)
        assert isinstance(carrier, dict)
        assert "traceparent" in carrier
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            trace_id, span_id, valid = pool.submit(
                otel_procfuncs.ids_inside_remote_scope, carrier
            ).result(timeout=WAIT * 2)
        assert valid
        assert trace_id == request.get_span_context().trace_id
        assert span_id != request.get_span_context().span_id  # the token span, a child
        assert token.kill("never ran")
        # the span started for the remote body is dropped: the token never ran
        extension.on_terminal(token)
        assert otel.token_spans() == []
    finally:
        coordinator.resume()
    # an empty or foreign value is no scope at all
    with TracingExtension.remote_scope(None):
        pass
    with TracingExtension.remote_scope({}):
        pass


def test_executor_attribute_follows_the_coordinators_default(
    otel: Otel, coordinator_factory: Any
) -> None:
    coordinator_factory(cores=1, workers_per_core=1, executor="process")
    add = task_token_guard("otel_default_process")(otel_procfuncs.add)
    assert add(2, 3).get(timeout=WAIT) == 5
    executors = {dict(p.attributes)["executor"] for p in otel.points("tokengate.tokens")}
    assert executors == {"process"}
