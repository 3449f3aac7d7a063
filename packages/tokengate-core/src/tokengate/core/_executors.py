"""The executor interface a core domain uses for work that does not run on its own threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("ExecutorBackend",)


class ExecutorBackend(Protocol):
    """A backend owned by one core domain (threads are the domain's own workers; processes
    and, later, distributed engines implement this).

    ``submit`` receives a token already ``EXECUTING`` and must end it exactly once through
    ``token._finish`` — or leave it to a kill or timeout that got there first. It must not
    block the calling worker for the duration of the body.
    """

    def submit(self, token: TaskToken[Any]) -> None:
        """Start running ``token`` elsewhere; return at once."""

    @property
    def alive(self) -> bool:
        """Whether the backend's worker (process, cluster client …) is up."""

    def shutdown(self, timeout: float) -> None:
        """Stop the backend within ``timeout`` seconds, ending every token it still holds."""
