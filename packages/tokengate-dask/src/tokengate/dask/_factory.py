"""The factory registered as ``dask``: the default client's cluster, one executor per
coordinator; inside a Dask worker, the worker's own threads."""

from __future__ import annotations

import threading

from tokengate.core import ExecutorBackend, ExecutorDomain, plugin_manager

from . import _remote
from ._executor import DaskExecutor

__all__ = ("dask_factory",)

_SHARED: dict[str, DaskExecutor] = {}
_LOCK = threading.Lock()
#: Coordinators whose executor is remembered at most (oldest forgotten first).
_SHARED_LIMIT = 64


def dask_factory(domain: ExecutorDomain) -> ExecutorBackend:
    """Make the ``dask`` backend of one core domain.

    Outside Dask: one shared :class:`DaskExecutor` per coordinator, on the process's default
    client (``distributed.get_client()``). Inside a Dask worker (calls made by a body that
    runs there): the worker runs them itself, on the thread executor, so they stay on the
    worker of the body that made them.

    Raises:
        DaskExecutorError: the process has no Dask client (the message says what to pass).
    """
    if _remote.current_worker_address() is not None:
        return plugin_manager().state().executors.get("thread")(domain)
    with _LOCK:
        executor = _SHARED.get(domain.coordinator_name)
        if executor is None or str(executor.client.status) != "running":
            executor = DaskExecutor()
            while len(_SHARED) >= _SHARED_LIMIT:
                del _SHARED[next(iter(_SHARED))]
            _SHARED[domain.coordinator_name] = executor
    return executor(domain)
