"""The exception hierarchy of TokenGate."""

from __future__ import annotations

import asyncio

__all__ = (
    "ConfigurationError",
    "CoordinatorNotRunningError",
    "PluginError",
    "ProcessDomainError",
    "RoutingError",
    "TagValidationError",
    "TaskKilledError",
    "TaskKilledException",
    "TokenCancelledError",
    "TokenGateError",
    "TokenTimeoutError",
)


class TokenGateError(Exception):
    """Base class of every error TokenGate raises on its own account."""


class TagValidationError(TokenGateError, ValueError):
    """A tag given to ``task_token_guard`` is unknown, malformed or conflicts with another.

    Raised at decoration time; the message names the function, the tag and what is allowed.
    """


class ConfigurationError(TokenGateError, ValueError):
    """An ``OperationsCoordinator`` setting is invalid; the message names it and its range."""


class CoordinatorNotRunningError(TokenGateError, RuntimeError):
    """A decorated function was called while no coordinator is running in this process.

    Start one first (``OperationsCoordinator().start()`` or ``with OperationsCoordinator():``).
    """


class TaskKilledError(TokenGateError):
    """The token was killed (``kill()``, an admin call, a drain or a stop) before its result."""


class TokenCancelledError(TaskKilledError, asyncio.CancelledError):
    """The token was killed through asyncio's ``cancel()`` (``asyncio.wait_for`` on a timeout,
    cancelling a ``gather``): a ``TaskKilledError`` that is also an ``asyncio.CancelledError``,
    so asyncio turns it into the ``TimeoutError`` or cancellation its callers expect."""


TaskKilledException = TaskKilledError
"""Alias of :class:`TaskKilledError`, the name the original Py-TokenGate used."""


class TokenTimeoutError(TokenGateError, TimeoutError):
    """The token missed the deadline set by its ``timeout`` tag and ended ``TIMEOUT``."""


class RoutingError(TokenGateError):
    """Routing a token failed (a plugin raised, or chose a core that does not exist).

    The token ends ``FAILED`` with this error; it is never lost.
    """


class PluginError(TokenGateError):
    """A plugin hook raised or returned something invalid; the message names the plugin."""


class ProcessDomainError(TokenGateError):
    """A process-domain token could not cross to or from its worker process, or the process died."""
