"""The executor interface a core domain uses for work that does not run on its own threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("ExecutorBackend",)


class ExecutorBackend(Protocol):
    """A backend owned by one core domain (threads are the domain's own workers; processes
    and, later, distributed engines implement this).

    The contract:

    * ``submit`` receives an ``ADMITTED`` token and returns at once; it must not block the
      calling worker for the duration of the body.
    * Right before the body starts, the backend moves the token to ``EXECUTING``
      (``token._move({ADMITTED}, EXECUTING)``); if that move fails, the token was killed,
      drained or timed out while it waited, and its body must never run. Until then the
      token counts as not started (``drain`` and ``stop(cancel_pending=True)`` end it).
    * The backend ends the token exactly once through ``token._finish(COMPLETED, result)``
      or ``token._finish(FAILED, exc=...)``; ``_finish`` returns False when a kill or a
      timeout got there first, and the late result is then dropped.
    * ``shutdown`` is called once the domain's worker threads are gone (no further
      ``submit``); it ends every token the backend still holds and never hangs.
    """

    def submit(self, token: TaskToken[Any]) -> None:
        """Start running ``token`` elsewhere; return at once."""

    @property
    def alive(self) -> bool:
        """Whether the backend's worker (process, cluster client …) is up."""

    def shutdown(self, timeout: float) -> None:
        """Stop the backend within about ``timeout`` seconds, ending every token it holds."""
