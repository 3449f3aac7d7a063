"""TokenGate on a Dask cluster: core domains on Dask workers, routing contracts kept.

``OperationsCoordinator(executor=DaskExecutor(client))`` runs every operation on the cluster;
with the plugin installed, the ``executor: "dask"`` tag runs chosen operations there on the
process's default client. Each core domain runs on one worker, so sticky keys and conductor
domains keep their locality across machines; small calls travel in batches, each call with
its own token.

``distributed`` is imported on first use of a name below, not with the package: the plugin
costs nothing to processes that never use Dask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._errors import DaskExecutorError as DaskExecutorError
    from ._errors import DaskWorkerLostError as DaskWorkerLostError
    from ._executor import DaskBackend as DaskBackend
    from ._executor import DaskExecutor as DaskExecutor
    from ._remote import current_worker_address as current_worker_address
    from ._remote import worker_coordinator as worker_coordinator

__all__: tuple[str, ...] = (
    "DaskBackend",
    "DaskExecutor",
    "DaskExecutorError",
    "DaskWorkerLostError",
    "current_worker_address",
    "worker_coordinator",
)

_WHERE = {
    "DaskBackend": "._executor",
    "DaskExecutor": "._executor",
    "DaskExecutorError": "._errors",
    "DaskWorkerLostError": "._errors",
    "current_worker_address": "._remote",
    "worker_coordinator": "._remote",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tokengate.dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
