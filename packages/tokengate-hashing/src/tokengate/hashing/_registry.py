"""The handler registry: plugin-provided fingerprint handlers, resolved by type."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final, TypeAlias

__all__ = (
    "HANDLERS_ENTRY_POINT_GROUP",
    "SCALAR_TYPES",
    "Handler",
    "HandlerRegistry",
    "default_registry",
    "type_name",
)

_log = logging.getLogger("tokengate.plugins")

HANDLERS_ENTRY_POINT_GROUP: Final = "tokengate.hash_handlers"
"""The entry-point group of installed fingerprint handlers: each entry point names a callable
``register(registry)`` that fills a :class:`HandlerRegistry` (name it as the distribution's
``tokengate`` plugin, so ``TOKENGATE_DISABLED_PLUGINS`` blocks both)."""

_AUTOLOAD_ENV: Final = "TOKENGATE_DISABLE_PLUGIN_AUTOLOAD"
_DISABLED_ENV: Final = "TOKENGATE_DISABLED_PLUGINS"

Handler: TypeAlias = Callable[[Any], Hashable]
"""A fingerprint handler: takes an object of the registered type, returns its fingerprint."""

SCALAR_TYPES: Final[frozenset[type]] = frozenset({int, str, float, bool, bytes, type(None)})
"""Builtin scalar types that are their own fingerprint unless a handler claims them."""

_CACHE_LIMIT: Final = 2048


def type_name(tp: type) -> str:
    """Return ``"module.QualName"`` for ``tp`` without ever raising."""
    try:
        return f"{tp.__module__}.{tp.__qualname__}"
    except Exception:
        return "<unknown type>"


class HandlerRegistry:
    """Fingerprint handlers keyed by type or by qualified type name.

    Handlers registered here are authoritative for their types: ``make_hashable`` consults
    them before it even tries ``hash()``. A type resolves to the handler of the first class
    in its ``__mro__`` that has one, either registered by the class object itself
    (:meth:`register`) or by its ``"module.QualName"`` (:meth:`register_lazy`), so
    subclasses inherit their base's handler.

    Guarantees:

    * Registration is thread-safe (one lock, copy-on-write maps); lookups take no lock.
    * :meth:`handler_for` caches the resolution per type in a bounded dict; every change to
      the registry bumps :attr:`generation` and starts a fresh cache, so a stale resolution
      is never returned after a change.
    * The registry never imports anything: a lazy name matches only once a class with that
      module and qualified name is seen in an object's ``__mro__``.
    * A registry made with ``entry_point_group`` (the :func:`default_registry` is) loads the
      handlers of installed distributions from that group before it answers or changes for
      the first time, so the same object gets the same fingerprint from the first call on,
      whatever was imported first. ``TOKENGATE_DISABLE_PLUGIN_AUTOLOAD=1`` skips that
      discovery and ``TOKENGATE_DISABLED_PLUGINS=a,b`` skips the named entry points; one that
      fails to load is skipped, logged on ``tokengate.plugins`` and listed in
      :attr:`load_errors`.
    """

    __slots__ = (
        "_by_name",
        "_by_type",
        "_cache",
        "_discoverer",
        "_discovery_lock",
        "_generation",
        "_group",
        "_load_errors",
        "_lock",
        "_scalars_unhandled",
    )

    def __init__(self, *, entry_point_group: str | None = None) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[type, Handler] = {}
        self._by_name: dict[str, Handler] = {}
        self._generation = 0
        self._cache: dict[type, Handler | None] = {}
        # The entry-point group still to discover (None once done, or for a plain registry).
        self._group = entry_point_group
        self._discovery_lock = threading.RLock()
        self._discoverer: int | None = None
        self._load_errors: tuple[str, ...] = ()
        # True while no handler applies to any of SCALAR_TYPES: lets the per-call fast
        # path of safe_args_key return a tuple of scalars unchanged with one attribute read.
        # False while discovery is pending, so that the first call always reaches
        # handler_for (which discovers) instead of answering before the handlers are in.
        self._scalars_unhandled = entry_point_group is None

    # -- discovery --------------------------------------------------------------------

    def _discover(self) -> None:
        """Load the handlers of the entry-point group, once (other threads wait for it)."""
        if self._group is None:
            return
        with self._discovery_lock:
            group = self._group
            if group is None or self._discoverer == threading.get_ident():
                return  # done, or re-entered from a handler module being loaded
            self._discoverer = threading.get_ident()
            try:
                self._load_errors = tuple(self._load_group(group))
            finally:
                self._group = None
                self._discoverer = None
                with self._lock:
                    self._publish(self._by_type, self._by_name)

    def _load_group(self, group: str) -> Iterator[str]:
        if os.environ.get(_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes"}:
            return
        disabled = {
            name.strip() for name in os.environ.get(_DISABLED_ENV, "").split(",") if name.strip()
        }
        try:
            entry_points = list(importlib.metadata.entry_points(group=group))
        except Exception as exc:
            message = f"could not list the {group!r} entry points: {exc!r}"
            _log.warning("%s", message)
            yield message
            return
        for ep in entry_points:
            if ep.name in disabled:
                _log.info("fingerprint handlers %r skipped (%s)", ep.name, _DISABLED_ENV)
                continue
            try:
                register = ep.load()
                if not callable(register):
                    raise TypeError(f"{ep.value} is not callable; name a register(registry)")
                register(self)
            except Exception as exc:
                message = (
                    f"fingerprint handlers {ep.name!r} ({ep.value}, entry point group "
                    f"{group!r}) failed to load: {exc!r}; objects of its types get the "
                    "generic fingerprint"
                )
                # Logged, not warned: a fingerprint never raises, not even under -W error.
                # The core's plugin host turns these into warnings (or errors when strict).
                _log.warning("%s", message)
                yield message

    @property
    def load_errors(self) -> tuple[str, ...]:
        """Messages of handler entry points that failed to load (empty for a plain registry)."""
        self._discover()
        return self._load_errors

    # -- registration -----------------------------------------------------------------

    def register(self, cls: type, handler: Handler) -> None:
        """Make ``handler`` the fingerprint of ``cls`` and of its subclasses.

        Replaces an earlier handler registered for the same class.

        Raises:
            TypeError: ``cls`` is not a class or ``handler`` is not callable.
        """
        self._discover()
        if not isinstance(cls, type):
            raise TypeError(f"HandlerRegistry.register: {cls!r} is not a class; pass a type")
        if not callable(handler):
            raise TypeError(
                f"HandlerRegistry.register: handler for {type_name(cls)} is not callable"
            )
        with self._lock:
            by_type = dict(self._by_type)
            by_type[cls] = handler
            self._publish(by_type, self._by_name)

    def register_lazy(self, qualified_name: str, handler: Handler) -> None:
        """Register ``handler`` for the class named ``"module.QualName"`` without importing it.

        The name matches a type when ``f"{t.__module__}.{t.__qualname__}"`` equals it, for
        the object's type or any class in its ``__mro__`` (so ``"numpy.ndarray"`` also
        covers ``numpy.matrix``). Nothing is imported, now or later.

        Raises:
            TypeError: ``handler`` is not callable or the name is not a string.
            ValueError: the name has no module part (``"module.QualName"`` is required).
        """
        self._discover()
        if not isinstance(qualified_name, str):
            raise TypeError(
                f"HandlerRegistry.register_lazy: name must be a 'module.QualName' string, "
                f"got {type(qualified_name).__name__}"
            )
        module, _, qualname = qualified_name.rpartition(".")
        if not module or not qualname:
            raise ValueError(
                f"HandlerRegistry.register_lazy: {qualified_name!r} is not a qualified name; "
                "use 'module.QualName', e.g. 'numpy.ndarray'"
            )
        if not callable(handler):
            raise TypeError(
                f"HandlerRegistry.register_lazy: handler for {qualified_name!r} is not callable"
            )
        with self._lock:
            by_name = dict(self._by_name)
            by_name[qualified_name] = handler
            self._publish(self._by_type, by_name)

    def unregister(self, cls_or_name: type | str) -> bool:
        """Remove the handler registered for a class or a qualified name.

        Returns:
            True if a handler was removed, False if none was registered under that key.
        """
        self._discover()
        with self._lock:
            if isinstance(cls_or_name, str):
                if cls_or_name not in self._by_name:
                    return False
                by_name = dict(self._by_name)
                del by_name[cls_or_name]
                self._publish(self._by_type, by_name)
                return True
            if cls_or_name not in self._by_type:
                return False
            by_type = dict(self._by_type)
            del by_type[cls_or_name]
            self._publish(by_type, self._by_name)
            return True

    def clear(self) -> None:
        """Remove every handler (the generation still advances)."""
        self._discover()
        with self._lock:
            self._publish({}, {})

    def _publish(self, by_type: dict[type, Handler], by_name: dict[str, Handler]) -> None:
        # Called with the lock held. The maps are written before the new cache, and a
        # lookup reads the cache before the maps, so a resolution computed from old maps can
        # only land in the old (discarded) cache.
        self._by_type = by_type
        self._by_name = by_name
        self._generation += 1
        self._scalars_unhandled = all(
            self._resolve(tp, by_type, by_name) is None for tp in SCALAR_TYPES
        )
        self._cache = {}

    # -- lookup -----------------------------------------------------------------------

    def handler_for(self, tp: type) -> Handler | None:
        """Return the handler that applies to objects of type ``tp``, or None.

        Resolution walks ``tp.__mro__``; for each class a handler registered by type wins
        over one registered by name. The answer is cached per type until the registry
        changes. Never raises.
        """
        if self._group is not None:
            self._discover()
        cache = self._cache
        try:
            return cache[tp]
        except KeyError:
            pass
        except TypeError:  # a metaclass made the type unhashable: resolve without caching
            return self._resolve(tp, self._by_type, self._by_name)
        resolved = self._resolve(tp, self._by_type, self._by_name)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[tp] = resolved
        return resolved

    @staticmethod
    def _resolve(
        tp: type, by_type: dict[type, Handler], by_name: dict[str, Handler]
    ) -> Handler | None:
        if not by_type and not by_name:
            return None
        try:
            mro = tp.__mro__
        except Exception:
            return None
        for klass in mro:
            try:
                handler = by_type.get(klass)
            except TypeError:
                handler = None
            if handler is not None:
                return handler
            if by_name:
                handler = by_name.get(type_name(klass))
                if handler is not None:
                    return handler
        return None

    def get(self, cls_or_name: type | str) -> Handler | None:
        """The handler registered under exactly this class or qualified name, or None.

        Unlike :meth:`handler_for`, no ``__mro__`` walk: a subclass of a registered class
        gets None here.
        """
        self._discover()
        if isinstance(cls_or_name, str):
            return self._by_name.get(cls_or_name)
        try:
            return self._by_type.get(cls_or_name)
        except TypeError:
            return None

    def entries(self) -> dict[type | str, Handler]:
        """A snapshot of every registration: class or qualified name → handler."""
        self._discover()
        snapshot: dict[type | str, Handler] = {}
        for cls, handler in self._by_type.items():
            snapshot[cls] = handler
        snapshot.update(self._by_name)
        return snapshot

    @property
    def generation(self) -> int:
        """A counter that increases on every change to the registry."""
        return self._generation

    def __len__(self) -> int:
        self._discover()
        return len(self._by_type) + len(self._by_name)

    def __contains__(self, cls_or_name: object) -> bool:
        """True if a handler is registered under exactly this class or qualified name."""
        self._discover()
        if isinstance(cls_or_name, str):
            return cls_or_name in self._by_name
        try:
            return cls_or_name in self._by_type
        except TypeError:
            return False

    def __repr__(self) -> str:
        self._discover()
        names = sorted([type_name(t) for t in self._by_type] + list(self._by_name))
        return f"HandlerRegistry(generation={self._generation}, handlers={names})"


_DEFAULT_REGISTRY: Final = HandlerRegistry(entry_point_group=HANDLERS_ENTRY_POINT_GROUP)


def default_registry() -> HandlerRegistry:
    """Return the process-wide registry that ``make_hashable`` uses when given none.

    Before its first answer it loads the handlers of installed distributions (the
    ``tokengate.hash_handlers`` entry-point group), so fingerprints never depend on import
    order; the core's plugin host also applies the ``tokengate_register_hash_handlers`` hooks
    of registered plugins to it. Always the same object.
    """
    return _DEFAULT_REGISTRY
