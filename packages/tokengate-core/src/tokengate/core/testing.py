"""Helpers for testing code that uses TokenGate, and for testing plugins.

The pytest plugin shipped with ``tokengate-core`` (loaded automatically through the
``pytest11`` entry point) wraps these as fixtures: ``tokengate_coordinator``,
``tokengate_plugin`` and ``tokengate_eager_coordinator``. Outside pytest, use them directly::

    with registered_plugin(MyPlugin(), "my-plugin"), OperationsCoordinator() as coordinator:
        ...
    check_no_leaks(coordinator)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._coordinator import OperationsCoordinator
from ._executors import ExecutorBackend, ExecutorDomain, ExecutorRegistry, ExecutorStats
from ._hookspecs import hookimpl
from ._plugins import plugin_manager
from ._run import run_token
from ._token import TaskToken

__all__ = (
    "EAGER_EXECUTOR",
    "EagerExecutor",
    "PluginRegistrar",
    "check_no_leaks",
    "eager_coordinator",
    "registered_plugin",
)

EAGER_EXECUTOR = "eager"
"""The executor name of :class:`EagerExecutor` (registered by :func:`eager_coordinator`)."""

_EAGER_PLUGIN_NAME = "tokengate.core.testing.eager"


def check_no_leaks(coordinator: OperationsCoordinator) -> None:
    """Check a stopped coordinator: every token terminal, no sticky pin left.

    Raises:
        AssertionError: naming the tokens still in flight or the pins still held.
    """
    left = coordinator.in_flight()
    if left:
        raise AssertionError(
            f"{len(left)} token(s) of {coordinator.name} still in flight after stop: {left[:10]}"
        )
    if coordinator.stats().in_flight:
        raise AssertionError(f"the token table of {coordinator.name} is not empty after stop")
    pins = dict(coordinator.sticky_snapshot())
    if pins:
        raise AssertionError(
            f"sticky pins of {coordinator.name} left after every token ended: "
            f"{dict(list(pins.items())[:10])}"
        )


class PluginRegistrar:
    """Registers plugins for a while: ``registrar(plugin, name=None) -> registered name``;
    :meth:`close` unregisters every one, newest first (also those a test failed with)."""

    def __init__(self) -> None:
        self._names: list[str] = []

    def __call__(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (see ``PluginHost.register``) and return its name."""
        registered = plugin_manager().register(plugin, name=name)
        self._names.append(registered)
        return registered

    def close(self) -> None:
        """Unregister every plugin registered through this registrar that is still there."""
        host = plugin_manager()
        while self._names:
            name = self._names.pop()
            if host.has_plugin(name):
                host.unregister(name=name)


@contextmanager
def registered_plugin(plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` for the ``with`` block; yields its name, unregisters it after."""
    registrar = PluginRegistrar()
    try:
        yield registrar(plugin, name)
    finally:
        registrar.close()


class EagerExecutor(ExecutorBackend):
    """Runs each body at once, in the thread that submits its token — the caller of the
    decorated function — so a call returns a finished token (as Celery's
    ``task_always_eager``). For unit tests: breakpoints, thread-locals and tracebacks are
    the caller's, and nothing runs concurrently."""

    def __init__(self, domain: ExecutorDomain) -> None:
        self._domain = domain
        self._lock = threading.Lock()
        self._busy = 0

    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Run every token's body now, in this thread, one after the other."""
        for token in tokens:
            with self._lock:
                self._busy += 1
            try:
                run_token(token)  # start hooks, extensions around the body, outcome
            finally:
                with self._lock:
                    self._busy -= 1

    def shutdown(self, timeout: float) -> None:
        """Nothing is ever held: every body ran inside :meth:`submit`."""

    def stats(self) -> ExecutorStats:
        """One "worker" (the caller), busy while a body runs."""
        with self._lock:
            busy = self._busy
        return ExecutorStats(workers=1, busy=busy, queued=0, alive=True)


class _EagerPlugin:
    @hookimpl
    def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.register(EAGER_EXECUTOR, EagerExecutor)


def _ensure_eager_registered() -> None:
    host = plugin_manager()
    if not host.has_plugin(_EAGER_PLUGIN_NAME):
        try:
            host.register(_EagerPlugin(), name=_EAGER_PLUGIN_NAME)
        except ValueError:  # another thread registered it meanwhile
            pass


@contextmanager
def eager_coordinator(**settings: Any) -> Iterator[OperationsCoordinator]:
    """A started coordinator whose calls run inline in the caller (the ``eager``
    executor); stopped and checked with :func:`check_no_leaks` afterwards.

    ``settings`` go to :class:`~tokengate.core.OperationsCoordinator` (``executor`` is set).
    """
    _ensure_eager_registered()
    settings.setdefault("cores", 1)
    settings.setdefault("workers_per_core", 1)
    coordinator = OperationsCoordinator(executor=EAGER_EXECUTOR, **settings).start()
    try:
        yield coordinator
    finally:
        coordinator.stop()
    check_no_leaks(coordinator)
