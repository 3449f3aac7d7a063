"""Awaiting a token from trio (and from anyio on its trio backend).

asyncio (and anyio on asyncio) awaits a token through the token's own ``__await__``; under
trio there is no asyncio loop, so the waiting trio task parks itself and the token's done
callback wakes it through the run's ``TrioToken`` (thread-safe). trio is imported only when
it is already loaded, i.e. only by code that runs under it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from typing import Any, Protocol

__all__ = ("CallbackTarget", "in_trio", "wait_in_trio")


class CallbackTarget(Protocol):
    """What a trio task waits on: a token's done-callback registration (this module sits below
    the token in the layers, so it names only what it uses)."""

    def add_done_callback(self, fn: Callable[[Any], object]) -> None: ...

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int: ...


def in_trio() -> bool:
    """True when the calling thread runs a trio task (cheap when trio was never imported)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def _park(token: CallbackTarget) -> None:
    import trio

    task = trio.lowlevel.current_task()
    run_token = trio.lowlevel.current_trio_token()
    lock = threading.Lock()
    state = {"waiting": True}

    def wake(_token: object) -> None:
        with lock:
            if not state["waiting"]:
                return  # the waiting task was cancelled meanwhile: nobody to wake
            state["waiting"] = False
        try:
            run_token.run_sync_soon(trio.lowlevel.reschedule, task)
        except trio.RunFinishedError:
            pass  # the trio run ended: nobody is left to wake

    def abort(_raise_cancel: Any) -> Any:
        with lock:
            if not state["waiting"]:
                return trio.lowlevel.Abort.FAILED  # a wake-up is already on its way
            state["waiting"] = False
        token.remove_done_callback(wake)
        return trio.lowlevel.Abort.SUCCEEDED

    token.add_done_callback(wake)
    await trio.lowlevel.wait_task_rescheduled(abort)


def wait_in_trio(token: CallbackTarget) -> Generator[Any, None, None]:
    """``yield from`` this in ``TaskToken.__await__`` under trio: returns once the token is
    done. Cancelling the waiting task stops the wait; the token itself is unaffected."""
    return (yield from _park(token).__await__())
