"""Errors of the Dask executor."""

from __future__ import annotations

from tokengate.core import TokenGateError

__all__ = ("DaskExecutorError", "DaskWorkerLostError")


class DaskExecutorError(TokenGateError, RuntimeError):
    """The Dask executor cannot do what was asked: no client, a closed client, an argument
    or result that cannot cross to a worker, a batch that Dask failed. The message says what
    to change."""


class DaskWorkerLostError(DaskExecutorError):
    """The Dask worker that was running a call left the cluster (it died or was retired).

    Only the calls that had been sent to that worker fail with it; the core domain moves to
    a live worker and later calls run there.
    """
