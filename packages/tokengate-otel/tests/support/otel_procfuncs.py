"""Bodies for the process-executor tests: importable by module name in a worker process."""

from __future__ import annotations

from opentelemetry import trace


def current_span_ids() -> tuple[int, int, bool]:
    """The trace id and span id current around this body, and whether they are valid."""
    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id, context.is_valid


def add(a: int, b: int) -> int:
    """A plain body."""
    return a + b


def ids_inside_remote_scope(carrier: object) -> tuple[int, int, bool]:
    """What a process executor does around a body: enter the extension's remote scope with
    the value made in the parent, and report the span current inside."""
    from tokengate.otel._extension import TracingExtension

    with TracingExtension.remote_scope(carrier):
        return current_span_ids()
