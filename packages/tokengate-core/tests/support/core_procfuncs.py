"""Process-domain targets for the tokengate-core tests (importable by module and qualname).

Everything here runs inside a domain's worker process; what the tests observe comes back as
results, exceptions, files or socket messages.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

from tokengate.core import TaskToken, task_token_guard


class TwoArgumentError(Exception):
    """An exception that pickles but cannot be rebuilt (its ``__init__`` wants two arguments)."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def echo(value: object) -> object:
    """Return the argument (a pickle round trip both ways)."""
    return value


def whoami() -> int:
    """The pid of the process running the body."""
    return os.getpid()


def affinity() -> list[int]:
    """The CPUs the calling thread may run on."""
    return sorted(os.sched_getaffinity(0))


def spin(n: int) -> int:
    """A pure-Python CPU loop."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def fail_with(message: str) -> None:
    """Raise ``ValueError(message)`` from a nested frame."""
    _inner_failure(message)


def _inner_failure(message: str) -> None:
    raise ValueError(message)


def fail_unportably() -> None:
    """Raise an exception that cannot be rebuilt in another process."""
    raise TwoArgumentError("left", "right")


def record_run(path: str, payload: object = None) -> int:
    """Append one line to ``path`` (one per run of the body); return the number of runs."""
    with open(path, "a") as handle:
        handle.write("ran\n")
    return len(Path(path).read_text().splitlines())


def record_and_return_lock(path: str) -> threading.Lock:
    """Record the run, then return something that cannot be pickled."""
    record_run(path)
    return threading.Lock()


def crash(code: int) -> None:
    """End the process at once with ``code`` (no cleanup, no answer)."""
    os._exit(code)


def kill_self() -> None:
    """Kill the process with SIGKILL."""
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_go(port: int) -> str:
    """Tell the test on ``port`` that the body started, then block until it says go."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(f"{os.getpid()}\n".encode())
        conn.recv(16)
    return "finished"


@task_token_guard(operation_type="support_double", tags={"process_pool": True})
def double(x: int) -> int:
    """A decorated process-domain operation defined in an importable module."""
    return 2 * x


def make_token_inside() -> TaskToken[int]:
    """Call a decorated function from inside a body (refused in a worker process)."""
    return double(1)
