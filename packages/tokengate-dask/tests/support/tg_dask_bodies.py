"""Bodies and operations of the tokengate-dask tests.

They live in a module of their own, on ``sys.path`` (see ``conftest.py``), so that Dask
workers import them by name: worker processes of a ``LocalCluster`` inherit ``sys.path``, and
the tests that start ``dask worker`` processes put this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from tokengate.conductor import compute_seed, get_active_seed
from tokengate.core import TaskToken, task_token_guard
from tokengate.dask import current_worker_address
from tokengate.hashing import DigestPolicy, digest, make_hashable

#: What a body reports about where it ran: (worker address, process id).
Where = tuple[str | None, int]


def here() -> Where:
    """The worker address and process id of the calling code."""
    return current_worker_address(), os.getpid()


def square_body(value: int) -> int:
    return value * value


def where_body(key: object) -> tuple[Where, object]:
    return here(), key


def fail_body(message: str) -> None:
    raise ValueError(message)


def lock_body() -> object:
    """Returns something that cannot be pickled."""
    return threading.Lock()


def sleep_body(seconds: float, marker: str | None = None) -> float:
    """Sleep; when ``marker`` is given, create that file first (the body started)."""
    if marker is not None:
        Path(marker).touch()
    time.sleep(seconds)
    return seconds


def touch_body(path: str) -> str:
    """Create ``path`` (fails if it exists: the body ran twice)."""
    with open(path, "x"):
        pass
    return path


def child_body(index: int) -> tuple[Where, int]:
    return here(), index


#: Plain-data values whose fingerprints must not depend on the process computing them.
FINGERPRINTED: list[object] = [
    {"b", "a", "c", "zeta", "éclair"},
    {"k1": [1, 2, {"x", "y"}], "k2": ("t", frozenset({"p", "q"}))},
    [{"s": {3, 1, 2}}, "text", 4.5, None, b"bytes"],
]


def fingerprints_here() -> tuple[list[object], list[str], int]:
    """Computed where this runs: the fingerprints of :data:`FINGERPRINTED`, the digests a
    coordinator makes (conductor seeds under every digest policy) and ``hash("probe")``,
    which differs between processes with different ``PYTHONHASHSEED``."""
    fingerprints = [make_hashable(value) for value in FINGERPRINTED]
    seeds = [
        compute_seed("dask_lead#7", ["dask_child", "other"], policy) for policy in DigestPolicy
    ]
    seeds.append(digest("payload", DigestPolicy.FULL))
    return fingerprints, seeds, hash("probe")


square = task_token_guard("dask_square", tags={"hash_policy": "none"})(square_body)
where = task_token_guard("dask_where")(where_body)
fail = task_token_guard("dask_fail", tags={"hash_policy": "none"})(fail_body)
give_lock = task_token_guard("dask_lock", tags={"hash_policy": "none"})(lock_body)
sleep = task_token_guard("dask_sleep", tags={"hash_policy": "none"})(sleep_body)
touch = task_token_guard("dask_touch", tags={"hash_policy": "none"})(touch_body)
child = task_token_guard("dask_child", tags={"hash_policy": "none"})(child_body)


@task_token_guard("dask_lead", tags={"external_calls": ["dask_child"]})
def lead(children: int) -> tuple[Where, list[tuple[Where, int]], str | None]:
    """A conductor lead: calls ``children`` children, waits on every one of them inside its
    body and reports where it and they ran, and the conductor seed active in its body."""
    tokens: list[TaskToken[tuple[Where, int]]] = [child(i) for i in range(children)]
    results = [token.get(60) for token in tokens]
    return here(), results, get_active_seed()


@task_token_guard("dask_outer_lead", tags={"external_calls": ["dask_lead"]})
def outer_lead(leads: int, children: int) -> tuple[Where, list[Any]]:
    """A lead whose members are leads themselves (nested domains)."""
    inner = [lead(children) for _ in range(leads)]
    return here(), [token.get(60) for token in inner]


def wait_for_file_body(path: str, limit: float = 60.0) -> Where:
    """Wait until ``path`` exists (at most ``limit`` seconds); report where this ran."""
    end = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return here()


wait_for_file = task_token_guard("dask_wait_for_file", tags={"hash_policy": "none"})(
    wait_for_file_body
)


@task_token_guard("dask_waiting_lead", tags={"external_calls": ["dask_wait_for_file"]})
def waiting_lead(path: str) -> tuple[Where, Where]:
    """A lead whose child waits for a file that another call, sent later to the same
    single-thread worker, creates: it completes only if the lead gives the worker's thread
    back while it waits on its child."""
    return here(), wait_for_file(path).get(60)
