"""Asynchronous ``KeyboardInterrupt`` for the reliability tests: one interrupt per armed
window, aimed at a chosen thread with ``PyThreadState_SetAsyncExc``."""

from __future__ import annotations

import ctypes
import random
import threading
import time

__all__ = ("Interrupter", "fire_async")


def fire_async(thread_id: int, exc: type[BaseException] | None) -> int:
    """Make ``exc`` pending in thread ``thread_id`` (None withdraws); returns threads hit."""
    return int(
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
        )
    )


class Interrupter:
    """Fires one ``KeyboardInterrupt`` at ``target`` per armed window, at a random moment.

    The target arms a window (``arm()``, a plain counter write) right before ``kill()`` and
    then calls ``disarm()``, which spins in bytecode until the interrupter has withdrawn its
    interrupt if it did not land; an interrupt therefore lands only inside the target's
    ``try``. The protocol uses no lock and no ``threading.Event`` (which an interrupt could
    leave half-updated). A short switch interval (set by the test) lets the threads
    interleave at a fine grain.
    """

    def __init__(self, target: int, seed: int) -> None:
        self.target = target
        self.fired = 0
        self.armed = 0
        self.finished = 0
        self._closing = False
        self._rng = random.Random(seed)
        self._thread = threading.Thread(target=self._run, name="interrupter", daemon=True)

    def _run(self) -> None:
        while not self._closing:
            window = self.armed
            if window == self.finished:
                time.sleep(0)  # hands the GIL back while nothing is armed
                continue
            # a random moment of the window: each sleep(0) lets the target run a slice
            for _ in range(self._rng.randrange(0, 6)):
                time.sleep(0)
            self.fired += fire_async(self.target, KeyboardInterrupt)
            for _ in range(self._rng.randrange(1, 4)):
                time.sleep(0)
            fire_async(self.target, None)  # withdraw it if it has not landed yet
            self.finished = window

    def arm(self) -> None:
        """Open a window: an interrupt may land from now until :meth:`disarm` returns."""
        self.armed += 1

    def disarm(self) -> None:
        """Close the window (also after an interrupt landed): nothing is pending after."""
        while self.finished != self.armed:
            pass

    def __enter__(self) -> Interrupter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._thread.join()
