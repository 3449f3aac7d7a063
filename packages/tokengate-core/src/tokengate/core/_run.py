"""``run_token``: run one admitted token's body in the calling thread.

The one place where a token moves to ``EXECUTING`` with its start hooks, its extensions run
around the body, and the outcome is reported. The thread executor and any backend that runs
bodies in its own threads use it; backends that run bodies elsewhere (processes, clusters)
call ``token.set_running()`` and report the outcome with ``set_result`` / ``set_exception``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._context import CURRENT
from ._errors import PluginError

if TYPE_CHECKING:
    from ._protocols import PlanView
    from ._token import TaskToken

__all__ = ("run_token",)

_log = logging.getLogger("tokengate.worker")


def run_token(token: TaskToken[Any]) -> bool:
    """Run an ``ADMITTED`` token's body in this thread and report its outcome.

    Moves the token to ``EXECUTING`` (``token.set_running()``, which runs the
    ``tokengate_token_started`` hooks), runs each extension's ``before_execute``, the body and
    each ``after_execute`` in this thread, with the token's coordinator as the current one
    (tokens the body creates go to it), and ends the token with ``set_result`` or
    ``set_exception``. An extension that fails before the body fails the token with a
    :class:`~tokengate.core.PluginError` and the body does not run. Never raises for the
    body's or a plugin's exception.

    Returns:
        False when the token must not run (it was killed, drained or timed out while it
        waited, or a start hook failed); True once the body ran (whatever its outcome, and
        even if a kill or timeout got there first and the late outcome was dropped).
    """
    if not token.set_running():
        return False
    plan = token._plan
    owner = token._owner
    reset = None if CURRENT.get() is owner else CURRENT.set(owner)
    try:
        if plan.plain or (plan.plain_free and token._ext is None):
            _run_body(token, plan)
        else:
            _run_around(token, plan)
    finally:
        if reset is not None:
            CURRENT.reset(reset)
    return True


def _run_body(token: TaskToken[Any], plan: PlanView) -> None:
    try:
        result = plan.func(*token.args, **token.kwargs)
    except BaseException as exc:
        if plan.storage is not None:  # the slot frees before anyone sees the token end
            token._owner.body_returned(token)
        token.set_exception(exc)
    else:
        if plan.storage is not None:
            token._owner.body_returned(token)
        token.set_result(result)


def _run_around(token: TaskToken[Any], plan: PlanView) -> None:
    around = plan.ext_around if token._ext is not None else plan.ext_around_free
    states: list[object] = []
    try:
        try:
            for ext in around:
                states.append(ext.before_execute(token))
        except BaseException as exc:
            token.set_exception(
                PluginError(f"a plugin failed before {token.token_id} ran: {exc!r}")
            )
        else:
            _run_body(token, plan)
    finally:
        # Whatever escapes the terminal move (a done-callback raising SystemExit is re-raised
        # once every release step ran), each extension still closes what it opened on this
        # thread: a conductor domain must not outlive its lead on the worker.
        for ext, state in zip(around, states, strict=False):
            try:
                ext.after_execute(token, state)
            except Exception:
                _log.exception("after_execute of %r failed for %s", ext, token.token_id)
        if plan.storage is not None:  # the body never ran, or its outcome raised: free it
            token._owner.body_returned(token)
