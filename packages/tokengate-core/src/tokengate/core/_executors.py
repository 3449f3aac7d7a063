"""The public executor interface: how a core domain's tokens reach whatever runs their bodies.

Threads, processes and plugins' backends (Dask) are all implementations of
:class:`ExecutorBackend`, registered by name through the ``tokengate_register_executors``
hook with ``registry.register(name, factory)``.
"""

from __future__ import annotations

import abc
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._config import CoordinatorConfig
    from ._token import TaskToken

__all__ = (
    "AUTO",
    "ExecutorBackend",
    "ExecutorDomain",
    "ExecutorFactory",
    "ExecutorRegistry",
    "ExecutorStats",
)


#: The ``executor`` tag value that lets the coordinator choose between threads and processes.
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ExecutorDomain:
    """What a backend learns about the core domain it serves, when it is made.

    Attributes:
        core_id: the domain (numbered 1..cores).
        cores: how many domains the coordinator has.
        cpu: the CPU the domain is bound to when ``pin_cpus`` is on, else None.
        config: the coordinator's validated configuration.
        coordinator_name: a name unique in the process (use it in thread/process names).
    """

    core_id: int
    cores: int
    cpu: int | None
    config: CoordinatorConfig
    coordinator_name: str


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    """A backend's snapshot for ``stats()``.

    Attributes:
        workers: threads, processes or cluster workers serving the domain now.
        busy: bodies running now.
        queued: tokens the backend holds that have not started.
        alive: whether the backend's workers are up (False after a crash until replaced).
        details: anything else worth showing (bounded: a few keys, short values).
    """

    workers: int
    busy: int
    queued: int
    alive: bool = True
    details: Mapping[str, object] = field(default_factory=dict)


class ExecutorBackend(abc.ABC):
    """Runs the bodies of the tokens routed to one core domain.

    The coordinator makes one backend per (core domain, executor name), lazily, through the
    factory registered under that name. The contract:

    * :meth:`submit` receives routed tokens (state ``ADMITTED``) in batches and returns at
      once: it never blocks the caller for a body's duration.
    * Right before a body starts, the backend calls ``token.set_running()``. False means the
      token was killed, drained or timed out while it waited: its body must never run.
      Backends that run the body in the calling thread use :func:`tokengate.core.run_token`,
      which does that, runs the extensions around the body and records the outcome.
    * The outcome is reported exactly once with ``token.set_result(value)`` or
      ``token.set_exception(exc)``; False means a kill or a timeout got there first and the
      late outcome is dropped.
    * :meth:`cancel` is called once for a token the backend holds when it ends ``KILLED`` or
      ``TIMEOUT`` (queued or running); a backend that can stop a running body does so.
    * :meth:`shutdown` is called once, after the last :meth:`submit`; it ends every token the
      backend still holds and returns within about ``timeout`` seconds, never hanging.
    """

    @abc.abstractmethod
    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Take ``ADMITTED`` tokens and return at once."""

    @abc.abstractmethod
    def shutdown(self, timeout: float) -> None:
        """Stop within about ``timeout`` seconds, ending every token still held."""

    def cancel(self, token: TaskToken[Any]) -> None:  # noqa: B027 - optional, default no-op
        """A held token ended ``KILLED`` or ``TIMEOUT``; stop its body if the backend can.

        The default does nothing: the body (if running) finishes on its own and its late
        outcome is dropped by ``set_result`` / ``set_exception``.
        """

    def stats(self) -> ExecutorStats:
        """A snapshot for ``stats()``; the default reports nothing held."""
        return ExecutorStats(workers=0, busy=0, queued=0)


@runtime_checkable
class ExecutorFactory(Protocol):
    """Makes the backend of one core domain: ``factory(domain) -> ExecutorBackend``."""

    def __call__(self, domain: ExecutorDomain) -> ExecutorBackend: ...


class ExecutorRegistry:
    """Named executor factories, filled through ``tokengate_register_executors``.

    ``registry.register("name", factory)``; the built-in ``thread`` and ``process`` executors
    are registered the same way. An ``executor`` tag may name any registered executor. A
    factory may also be given as ``"package.module:Name"``: it is imported on first use, so
    an executor that is never used costs no import.
    """

    __slots__ = ("_factories", "_lock")

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[ExecutorDomain], ExecutorBackend] | str] = {}
        self._lock = threading.Lock()

    def register(
        self, name: str, factory: Callable[[ExecutorDomain], ExecutorBackend] | str
    ) -> None:
        """Register ``factory`` under ``name`` (case-insensitive; the first registration wins).

        Args:
            name: the executor's name, as the ``executor`` tag spells it.
            factory: ``factory(domain) -> ExecutorBackend`` (a backend class works), or a
                ``"package.module:Name"`` reference to one, imported on first use.

        Raises:
            ValueError: ``name`` is empty, not a string or ``auto`` (reserved), or
                ``factory`` is neither callable nor a ``module:name`` reference.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an executor name must be a non-empty string, got {name!r}")
        key = name.strip().lower()
        if key == AUTO:
            raise ValueError(
                f"the executor name {AUTO!r} is reserved (the coordinator's own choice between "
                "threads and processes); register under another name"
            )
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            if not module or not attribute:
                raise ValueError(
                    f"executor {name!r}: a factory reference must read 'package.module:Name', "
                    f"got {factory!r}"
                )
        elif not callable(factory):
            raise ValueError(
                f"executor {name!r}: the factory must be callable as factory(domain) -> "
                f"ExecutorBackend, got {factory!r}"
            )
        self._factories.setdefault(key, factory)

    def get(self, name: str) -> Callable[[ExecutorDomain], ExecutorBackend]:
        """The factory registered under ``name`` (a reference is imported now, once).

        Raises:
            KeyError: no executor has that name (the message lists the registered ones).
            ImportError: a ``module:name`` reference cannot be imported.
        """
        key = name.lower()
        try:
            factory = self._factories[key]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise KeyError(
                f"no executor named {name!r} is registered (registered: {known})"
            ) from None
        if isinstance(factory, str):
            with self._lock:
                factory = self._factories[key]
                if isinstance(factory, str):
                    factory = self._factories[key] = _resolve(name, factory)
        return factory

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))

    def __len__(self) -> int:
        return len(self._factories)


def _resolve(name: str, reference: str) -> Callable[[ExecutorDomain], ExecutorBackend]:
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"executor {name!r}: its factory {reference!r} cannot be imported: {exc}"
        ) from exc
    if not callable(target):
        raise ImportError(f"executor {name!r}: {reference!r} is not callable")
    factory: Callable[[ExecutorDomain], ExecutorBackend] = target
    return factory
