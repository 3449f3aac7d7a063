"""Bodies for the process executor tests; they run inside worker processes.

What the tests observe comes back as results, or as lines appended to a file (one line per
body that ran, so a body that ran twice shows up twice).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from typing import Any

from tokengate.core import TaskToken, TokenExtension, task_token_guard

_held: list[bytearray] = []
SCOPE: contextvars.ContextVar[object] = contextvars.ContextVar("scope", default=None)


def add(a: int, b: int) -> int:
    """a + b."""
    return a + b


def pid() -> int:
    """The pid of the process running the body."""
    return os.getpid()


def record(path: str, tag: str, crash_on: str | None = None) -> int:
    """Append ``tag`` to ``path`` (one line per run); die at once when ``tag == crash_on``."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{tag} {os.getpid()}\n")
    if tag == crash_on:
        os._exit(3)
    return os.getpid()


def sleep_then(seconds: float, value: object) -> object:
    """Sleep, then return ``value``."""
    time.sleep(seconds)
    return value


def record_then_sleep(path: str, tag: str, seconds: float) -> int:
    """Append ``tag`` to ``path``, then sleep ``seconds``; returns the pid."""
    record(path, tag)
    time.sleep(seconds)
    return os.getpid()


def grow(megabytes: int) -> int:
    """Keep ``megabytes`` MiB alive in this process (touched, so resident); returns the pid."""
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _held.append(block)
    return os.getpid()


def echo(value: object) -> object:
    """``value`` back."""
    return value


def array_info(array: Any) -> tuple[bool, int, float]:
    """(writable, nbytes, sum) of a numpy array, as the body sees it."""
    return bool(array.flags.writeable), int(array.nbytes), float(array.sum())


def scope_value() -> object:
    """The value the remote scope set around this body."""
    return SCOPE.get()


class Scoped:
    """A token extension's remote scope: sets :data:`SCOPE` around the body."""

    @classmethod
    @contextlib.contextmanager
    def remote_scope(cls, value: object) -> Iterator[object]:
        """Set ``SCOPE`` to ``value`` while the body runs."""
        reset = SCOPE.set(value)
        try:
            yield value
        finally:
            SCOPE.reset(reset)


class ScopedExtension(TokenExtension):
    """Carries ``"trace:<token id>"`` into the worker process around each body."""

    def remote_context(self, token: TaskToken[Any]) -> object:
        """The value the body sees in :data:`SCOPE`."""
        return f"trace:{token.token_id}"

    @classmethod
    def remote_scope(cls, value: object) -> contextlib.AbstractContextManager[object]:
        """Set :data:`SCOPE` around the body."""
        return Scoped.remote_scope(value)


@task_token_guard("procfuncs_child_square", tags={"process_pool": True, "hash_policy": "none"})
def child_square(x: int) -> int:
    """x * x (a decorated operation that a body in a process calls)."""
    return x * x


@task_token_guard("procfuncs_child_fail", tags={"process_pool": True, "hash_policy": "none"})
def child_fail(x: int) -> int:
    """Raises ValueError."""
    raise ValueError(f"child {x} failed")


def lead(n: int) -> tuple[list[int], str]:
    """Calls the decorated ``child_square`` n times (and ``child_fail`` once); returns the
    children's results, the failure's message and the pid."""
    results = [child_square(i).get() for i in range(n)]
    try:
        child_fail(n).get()
    except ValueError as exc:
        message = str(exc)
    else:
        message = "no error"
    return results, f"{message} in {os.getpid()}"


@task_token_guard("procfuncs_tile", tags={"weight": "light", "hash_policy": "none"})
def tile(x: int) -> int:
    """A conductor member: doubles ``x``."""
    return 2 * x


@task_token_guard(
    "procfuncs_render",
    tags={"external_calls": ["procfuncs_tile"], "executor": "process", "hash_policy": "none"},
)
def render(tiles: int) -> tuple[list[int], str | None, int]:
    """A conductor lead that runs in a worker process and calls ``tile`` there: the
    children's results, the active seed the body sees, and the pid."""
    from tokengate.conductor import get_active_seed

    results = [tile(i).get() for i in range(tiles)]
    return results, get_active_seed(), os.getpid()
