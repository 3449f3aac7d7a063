"""Process-domain bodies of the reliability suite, importable by module and qualified name.

Test modules are imported by pytest's importlib mode and cannot be imported by a spawned
worker process, so every body that runs in a process domain lives here. ``tests/conftest.py``
puts the repository root on ``sys.path`` (spawned workers inherit it), so this module is
``tests.support.reliability_targets`` both in the tests and in the worker processes.

What a body did in the worker process comes back as its result, its exception, or lines in
a run log: ``mark_run(path, marker)`` appends ``marker`` once per run of the body, which is
how the tests count runs of a body per token (SPEC I5) across the process boundary.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

__all__ = (
    "ExplodesInChild",
    "ExitsInChild",
    "RefusesPickling",
    "add",
    "count_runs",
    "die_by_signal",
    "exit_abruptly",
    "fail",
    "mark_and_return_unpicklable",
    "mark_run",
    "mark_then_sleep",
    "whoami",
)


def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


def whoami() -> int:
    """The pid of the process running the body."""
    return os.getpid()


def mark_run(path: str, marker: str, payload: object = None) -> str:
    """Append ``marker`` to the run log at ``path`` (one line per run); return ``marker``."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{marker}\n")
    return marker


def mark_then_sleep(path: str, marker: str, seconds: float) -> str:
    """Record the run, then keep the worker process busy for ``seconds`` (a hung body)."""
    mark_run(path, marker)
    time.sleep(seconds)
    return marker


def mark_and_return_unpicklable(path: str, marker: str) -> threading.Lock:
    """Record the run, then return something that cannot be pickled."""
    mark_run(path, marker)
    return threading.Lock()


def fail(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


def exit_abruptly(code: int) -> None:
    """End the worker process at once (no cleanup, no answer)."""
    os._exit(code)


def die_by_signal() -> None:
    """Kill the worker process with SIGKILL."""
    os.kill(os.getpid(), signal.SIGKILL)


def count_runs(path: str) -> dict[str, int]:
    """Read a run log: marker → number of runs (in the test's own process)."""
    counts: dict[str, int] = {}
    log = Path(path)
    if not log.exists():
        return counts
    for line in log.read_text(encoding="utf-8").splitlines():
        if line:
            counts[line] = counts.get(line, 0) + 1
    return counts


class RefusesPickling:
    """An argument whose pickling raises in the coordinator's process."""

    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("RefusesPickling will not be pickled")


def _explode(note: str) -> None:
    raise RuntimeError(f"unpickling refused in the worker process: {note}")


class ExplodesInChild:
    """Pickles fine, but unpickling it (in the worker process) raises."""

    def __init__(self, note: str) -> None:
        self.note = note

    def __reduce__(self) -> tuple[object, ...]:
        return (_explode, (self.note,))


class ExitsInChild:
    """Pickles fine, but unpickling it ends the worker process before any body can run."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (os._exit, (self.code,))
