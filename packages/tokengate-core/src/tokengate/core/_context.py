"""The *current coordinator*: a context variable and the started coordinators of the process.

The only process-wide state besides the plugin host. It sits low in the layers: the token's
runner sets it around a body (so tokens created there go to the coordinator running it),
the coordinator registers itself when it starts, and the decorator reads it.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from ._protocols import TokenOwner

__all__ = (
    "CURRENT",
    "PLAN_ATTRIBUTE",
    "current_owner",
    "in_worker_process",
    "mark_worker_process",
    "push_running",
    "remove_running",
    "running_owners",
)

#: The attribute under which a decorated function carries its compiled plan.
PLAN_ATTRIBUTE = "__tokengate_plan__"
#: Set in a process-domain worker process, where tokens cannot be created.
IN_WORKER_PROCESS = False

#: The coordinator explicitly current in this context (set around every body that runs).
CURRENT: ContextVar[TokenOwner[Any] | None] = ContextVar(
    "tokengate_current_coordinator", default=None
)
#: Started coordinators of this process, newest last: the fallback for code that runs outside
#: any token.
_RUNNING: list[TokenOwner[Any]] = []
_RUNNING_LOCK = threading.Lock()


def push_running(owner: TokenOwner[Any]) -> None:
    """A coordinator started: it becomes the fallback current coordinator."""
    with _RUNNING_LOCK:
        _RUNNING.append(owner)


def remove_running(owner: TokenOwner[Any]) -> None:
    """A coordinator stopped."""
    with _RUNNING_LOCK:
        if owner in _RUNNING:
            _RUNNING.remove(owner)


def running_owners() -> list[TokenOwner[Any]]:
    """The started coordinators, newest last (the live list: read, never change it)."""
    return _RUNNING


def current_owner() -> TokenOwner[Any] | None:
    """The explicitly current coordinator, else the newest started one, else None."""
    owner = CURRENT.get()
    if owner is not None:
        return owner
    running = _RUNNING
    return running[-1] if running else None


def mark_worker_process() -> None:
    """Called once in an executor's worker process: decorated calls there cannot make tokens
    of the parent's coordinator (the error says so)."""
    global IN_WORKER_PROCESS
    IN_WORKER_PROCESS = True


def in_worker_process() -> bool:
    """True in an executor's worker process (see :func:`mark_worker_process`)."""
    return IN_WORKER_PROCESS
