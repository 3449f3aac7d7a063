"""The handler registry: plugin-provided fingerprint handlers, resolved by type."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeAlias

__all__ = ("SCALAR_TYPES", "Handler", "HandlerRegistry", "default_registry", "type_name")

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
    """

    __slots__ = ("_by_name", "_by_type", "_cache", "_generation", "_lock", "_scalars_unhandled")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[type, Handler] = {}
        self._by_name: dict[str, Handler] = {}
        self._generation = 0
        self._cache: dict[type, Handler | None] = {}
        # True while no handler applies to any of SCALAR_TYPES: lets the per-call fast
        # path of safe_args_key return a tuple of scalars unchanged with one attribute read.
        self._scalars_unhandled = True

    # -- registration -----------------------------------------------------------------

    def register(self, cls: type, handler: Handler) -> None:
        """Make ``handler`` the fingerprint of ``cls`` and of its subclasses.

        Replaces an earlier handler registered for the same class.

        Raises:
            TypeError: ``cls`` is not a class or ``handler`` is not callable.
        """
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

    @property
    def generation(self) -> int:
        """A counter that increases on every change to the registry."""
        return self._generation

    def __len__(self) -> int:
        return len(self._by_type) + len(self._by_name)

    def __contains__(self, cls_or_name: object) -> bool:
        """True if a handler is registered under exactly this class or qualified name."""
        if isinstance(cls_or_name, str):
            return cls_or_name in self._by_name
        try:
            return cls_or_name in self._by_type
        except TypeError:
            return False

    def __repr__(self) -> str:
        names = sorted([type_name(t) for t in self._by_type] + list(self._by_name))
        return f"HandlerRegistry(generation={self._generation}, handlers={names})"


_DEFAULT_REGISTRY: Final = HandlerRegistry()


def default_registry() -> HandlerRegistry:
    """Return the process-wide registry that ``make_hashable`` uses when given none.

    The core's plugin host fills it from the ``tokengate_register_hash_handlers`` hook.
    Always the same object.
    """
    return _DEFAULT_REGISTRY
