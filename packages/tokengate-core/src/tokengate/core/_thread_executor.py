"""The ``thread`` executor as the built-in plugin registers it: the domain scheduler
(:class:`~._threads.ThreadExecutor`) running each token with :func:`~._run.run_token`."""

from __future__ import annotations

from ._executors import ExecutorDomain
from ._run import run_token
from ._threads import ThreadExecutor

__all__ = ("make_thread_executor",)


def make_thread_executor(domain: ExecutorDomain) -> ThreadExecutor:
    """The thread executor of one core domain: extensions run around each body, in the body's
    thread, and the token's coordinator is the current one there."""
    return ThreadExecutor(domain, runner=run_token)
