"""The backends of one coordinator: one per (core domain, executor name), made lazily."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._errors import ConfigurationError
from ._executors import AUTO, ExecutorBackend, ExecutorDomain, ExecutorStats
from ._metrics import CoreStats

__all__ = ("BackendTable", "ExecutorFactory", "executor_argument")

_log = logging.getLogger("tokengate.coordinator")

#: ``factory(domain) -> ExecutorBackend``.
ExecutorFactory = Callable[[ExecutorDomain], ExecutorBackend]
#: ``factory_of(name)``: the factory of an executor name (raises KeyError for an unknown one).
FactoryLookup = Callable[[str], ExecutorFactory]


class BackendTable:
    """Makes each backend on first use and shuts them all down once.

    ``row(name)`` is a list indexed by core id (index 0 unused) that fills in as backends are
    made, so routing can keep a reference to it per operation and find a domain's backend
    with one index.
    """

    __slots__ = ("_closed", "_cores", "_domain_of", "_factory_of", "_lock", "_made", "_rows")

    def __init__(
        self, cores: int, domain_of: Callable[[int], ExecutorDomain], factory_of: FactoryLookup
    ) -> None:
        self._domain_of = domain_of
        self._factory_of = factory_of
        self._rows: dict[str, list[ExecutorBackend | None]] = {}
        self._made: list[tuple[str, int, ExecutorBackend]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._cores = cores

    def row(self, name: str) -> list[ExecutorBackend | None]:
        """The backends of executor ``name`` by core id (None until made)."""
        row = self._rows.get(name)
        if row is None:
            with self._lock:
                row = self._rows.get(name)
                if row is None:
                    self._factory_of(name)  # an unknown name fails here, before any token
                    row = self._rows[name] = [None] * (self._cores + 1)
        return row

    def get(self, name: str, core_id: int) -> ExecutorBackend:
        """The backend of executor ``name`` for ``core_id``, made now if needed.

        Raises:
            RuntimeError: the table was shut down (the coordinator stopped).
            Exception: whatever the factory raised.
        """
        row = self.row(name)
        backend = row[core_id]
        if backend is not None:
            return backend
        with self._lock:
            backend = row[core_id]
            if backend is None:
                if self._closed:
                    raise RuntimeError("the coordinator stopped: no new executor backends")
                made = self._factory_of(name)(self._domain_of(core_id))
                if not isinstance(made, ExecutorBackend):
                    raise TypeError(
                        f"the factory of executor {name!r} returned {made!r}, not an "
                        "ExecutorBackend"
                    )
                backend = row[core_id] = made
                self._made.append((name, core_id, made))
                _log.debug("made the %s backend of core %d", name, core_id)
        return backend

    def made(self) -> list[tuple[str, int, ExecutorBackend]]:
        """Every backend made so far: ``(executor name, core id, backend)``."""
        with self._lock:
            return list(self._made)

    def stats(self, core_id: int) -> dict[str, ExecutorStats]:
        """The stats of every backend of ``core_id`` by executor name (a failing one is
        reported not alive)."""
        result: dict[str, ExecutorStats] = {}
        for name, core, backend in self.made():
            if core != core_id:
                continue
            try:
                result[name] = backend.stats()
            except Exception as exc:
                result[name] = ExecutorStats(0, 0, 0, alive=False, details={"error": repr(exc)})
        return result

    def core_stats(self, core_id: int) -> CoreStats:
        """One core domain for ``stats()``: every backend of the domain added up, and each
        one by executor name."""
        per_executor = self.stats(core_id)
        process = per_executor.get("process")
        backlog = 0
        for executor_stats in per_executor.values():
            value = executor_stats.details.get("backlog", 0)
            backlog += value if isinstance(value, int) else 0
        return CoreStats(
            core_id,
            sum(s.workers for s in per_executor.values()),
            sum(s.busy for s in per_executor.values()),
            sum(s.queued for s in per_executor.values()),
            backlog,
            None if process is None else process.alive,
            per_executor,
        )

    def shutdown(self, deadline: float) -> None:
        """Shut every backend down (each gets what is left of the time until ``deadline``,
        at least half a second); no backend is made afterwards."""
        with self._lock:
            self._closed = True
            made = list(self._made)
        for name, core, backend in made:
            try:
                backend.shutdown(max(0.5, deadline - time.monotonic()))
            except Exception:
                _log.exception("shutting down the %s backend of core %d failed", name, core)


def executor_argument(executor: object) -> tuple[str, ExecutorFactory | None, int | None]:
    """``(name, factory or None, suggested cores)`` of ``OperationsCoordinator(executor=...)``:
    a registered name, or a factory object (its ``name`` attribute, else its class name in
    lower case; its optional ``cores``).

    Raises:
        ConfigurationError: neither a name nor a factory, or a factory with a bad ``name`` or
            ``cores``.
    """
    if isinstance(executor, str):
        name = executor.strip().lower()
        if not name:
            raise ConfigurationError(
                "invalid OperationsCoordinator setting: executor must be a registered "
                "executor name or a factory object, got ''"
            )
        return name, None, None
    if not callable(executor):
        raise ConfigurationError(
            "invalid OperationsCoordinator setting: executor must be a registered executor "
            f"name or a factory object (callable as factory(domain) -> ExecutorBackend), "
            f"got {executor!r}"
        )
    raw_name = getattr(executor, "name", None)
    if raw_name is None:
        raw_name = type(executor).__name__
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise ConfigurationError(
            f"invalid OperationsCoordinator setting: the executor factory {executor!r} has a "
            f"'name' that is not a non-empty string ({raw_name!r})"
        )
    name = raw_name.strip().lower()
    if name == AUTO:
        raise ConfigurationError(
            f"invalid OperationsCoordinator setting: the executor factory {executor!r} cannot "
            f"be named {AUTO!r} (reserved)"
        )
    suggested = getattr(executor, "cores", None)
    if suggested is not None and (
        not isinstance(suggested, int) or isinstance(suggested, bool) or suggested < 1
    ):
        raise ConfigurationError(
            f"invalid OperationsCoordinator setting: the executor factory {executor!r} "
            f"suggests cores={suggested!r}; expected an int >= 1 (or no 'cores' attribute)"
        )
    factory: ExecutorFactory = executor
    return name, factory, suggested
