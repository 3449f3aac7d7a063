"""The execution log: one bounded, named record per terminal token."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ._enums import TokenState
from ._metrics import ExecutionRecord

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("ERROR_TEXT_LIMIT", "ExecutionLog", "ExecutionRow")

_log = logging.getLogger("tokengate.coordinator")

#: Characters of an error's ``repr`` kept in a record (a record never holds a huge message).
ERROR_TEXT_LIMIT = 500
_COMPLETED = TokenState.COMPLETED.value


class ExecutionRow(NamedTuple):
    """What the log keeps per token: cheap to make on the terminal move, named to read back.

    Every field is an atomic value (the state is kept as its string value): the garbage
    collector stops tracking such a tuple at its first pass, so a full log is never traversed
    again by later collections.
    """

    seq: int
    operation_type: str
    state: str
    duration: float | None
    latency: float
    core_id: int | None
    worker_id: int | None
    error: str | None


def error_text(exc: BaseException | None, limit: int = ERROR_TEXT_LIMIT) -> str | None:
    """``repr(exc)`` cut to ``limit`` characters (None for no exception; never raises)."""
    if exc is None:
        return None
    try:
        text = repr(exc)
    except Exception:  # a hostile __repr__
        text = f"<{type(exc).__qualname__} whose repr failed>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class ExecutionLog:
    """The newest ``size`` execution records of one coordinator (``size`` 0 keeps none)."""

    __slots__ = ("_rows", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=size)

    def add(self, token: TaskToken[Any], state: TokenState, exc: BaseException | None) -> None:
        """Record a token that just made its terminal move (a plain tuple: rows are named
        only when read back)."""
        if self.size:
            self._rows.append(_row(token, state, exc))

    def add_many(self, tokens: list[TaskToken[Any]]) -> None:
        """:meth:`add` for a batch of tokens that just made their terminal moves."""
        if self.size:
            self._rows.extend([_row(token, token._tstate, token._exc) for token in tokens])

    def clear(self) -> None:
        """Forget every record."""
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def recent(self, limit: int = 50) -> list[ExecutionRecord]:
        """The newest ``limit`` records, newest first."""
        if limit <= 0:
            return []
        rows = _snapshot(self._rows)
        return [_record(row) for row in reversed(rows[-limit:])]

    def dump(self, coordinator_name: str, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every kept record to a JSON file and return its path.

        The file holds ``{"timestamp", "coordinator", "total_executions", "executions"}``;
        without ``path`` it is ``execution_history_<unix time>.json`` in the working directory.
        """
        target = (
            Path(path) if path is not None else Path(f"execution_history_{int(time.time())}.json")
        )
        records = self.recent(len(self._rows))
        payload = {
            "timestamp": time.time(),
            "coordinator": coordinator_name,
            "total_executions": len(records),
            "executions": [record.as_dict() for record in records],
        }
        target.write_text(json.dumps(payload, indent=2))
        return target


def _row(token: TaskToken[Any], state: TokenState, exc: BaseException | None) -> tuple[Any, ...]:
    started = token.started_at
    finished = token.finished_at or 0.0
    return (
        token.seq,
        token._plan.operation_type,
        state._value_,
        None if started is None else finished - started,
        finished - token.created_at,
        token._core_id,
        token._worker_id,
        None if exc is None else error_text(exc),
    )


def _snapshot(rows: deque[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A copy of ``rows`` while other threads append (a copy that met an append is retried)."""
    while True:
        try:
            return list(rows)
        except RuntimeError:  # deque mutated during iteration
            continue


def _record(raw: tuple[Any, ...]) -> ExecutionRecord:
    row = ExecutionRow._make(raw)
    return ExecutionRecord(
        token_id=f"{row.operation_type}#{row.seq}",
        operation_type=row.operation_type,
        state=row.state,
        success=row.state == _COMPLETED,
        duration=row.duration,
        latency=row.latency,
        core_id=row.core_id,
        worker_id=row.worker_id,
        error=row.error,
    )
