"""The Dask executor plugin (entry point ``tokengate = dask``): registers the name ``dask``.

Importing this module is cheap: ``distributed`` is imported only when a coordinator first
makes a ``dask`` backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokengate.core import ExecutorRegistry, hookimpl

if TYPE_CHECKING:
    from tokengate.core import ExecutorBackend, ExecutorDomain

__all__ = ("dask_factory", "tokengate_register_executors")


def dask_factory(domain: ExecutorDomain) -> ExecutorBackend:
    """The ``dask`` factory: see :func:`tokengate.dask._factory.dask_factory` (imported on
    first use, with ``distributed``)."""
    from ._factory import dask_factory as make

    return make(domain)


@hookimpl
def tokengate_register_executors(registry: ExecutorRegistry) -> None:
    """Register the ``dask`` executor."""
    registry.register("dask", dask_factory)
