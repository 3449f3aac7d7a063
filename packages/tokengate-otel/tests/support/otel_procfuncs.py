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
