"""Routing fingerprints: ``make_hashable`` and friends (the pipeline: see the hashing docs).

The walk is iterative (an explicit stack, so nesting depth is limited by memory, not by the
recursion limit), detects cycles by the ids of the containers on the current path, and is
bounded by a node budget so that a huge argument costs milliseconds, not seconds.
"""

from __future__ import annotations

import array
import collections
import hashlib
import itertools
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from operator import itemgetter
from typing import Any, Final

from ._registry import SCALAR_TYPES, Handler, HandlerRegistry, default_registry, type_name
from ._text import bounded_repr, stable_text

__all__ = (
    "fast_args_key",
    "fast_make_hashable",
    "is_hashable",
    "make_hashable",
    "safe_args_key",
)

logger = logging.getLogger("tokengate.hashing")

MAX_NODES: Final = 20_000
"""Objects visited per fingerprint before the rest is summarised (``'<truncated>'``)."""
MAX_HEIGHT: Final = 16
"""Container levels kept as nested tuples; deeper subtrees are replaced by a digest."""
_BYTES_INLINE: Final = 1024
_BYTES_DIGESTED: Final = 65_536

_ORDERED: Final = 0
_ORDERED_MAPPING: Final = 1
_UNORDERED: Final = 2
_MAPPING: Final = 3

_END: Final = object()
_MISS: Final = object()
_DEFAULT_REGISTRY: Final = default_registry()
_SORTABLE_SCALARS: Final = frozenset({int, str, bytes})
_FIRST: Final = itemgetter(0)


class _Frame:
    """A container being walked: its children's fingerprints accumulate in ``results``."""

    __slots__ = ("anchor", "height", "iterator", "kind", "results", "size", "status", "tag")

    def __init__(
        self, anchor: object, tag: str, kind: int, iterator: Iterator[Any], size: int | None
    ) -> None:
        self.anchor = anchor  # the object whose id marks the path; kept alive by the frame
        self.tag = tag
        self.kind = kind
        self.iterator = iterator
        self.size = size
        self.results: list[Hashable] = []
        self.height = 0
        self.status: Hashable = None


# -- small helpers ---------------------------------------------------------------------


def _identity(obj: object) -> Hashable:
    return (type_name(type(obj)), id(obj))


def _bytes_key(view: Any) -> Hashable:
    """Content key of a flat byte buffer: the bytes when short, else length + prefix digest."""
    size = len(view)
    if size <= _BYTES_INLINE:
        return bytes(view)
    prefix = hashlib.blake2b(bytes(view[:_BYTES_DIGESTED]), digest_size=16).hexdigest()
    return ("<blake2b-prefix>", size, prefix)


def _sorted_items(items: list[Hashable]) -> list[Hashable]:
    """Sort set members with a total order that never raises and ignores iteration order."""
    if len(items) < 2:
        return items
    kinds = set(map(type, items))
    if len(kinds) == 1 and kinds.pop() in _SORTABLE_SCALARS:
        return sorted(items)  # type: ignore[type-var]
    return sorted(items, key=stable_text)


def _sorted_pairs(pairs: list[tuple[Hashable, Hashable]]) -> list[tuple[Hashable, Hashable]]:
    """Sort mapping entries; keys of one plain type sort natively, anything else by text."""
    if len(pairs) < 2:
        return pairs
    keys = [pair[0] for pair in pairs]
    kinds = set(map(type, keys))
    if len(kinds) == 1 and kinds.pop() in _SORTABLE_SCALARS and len(set(keys)) == len(keys):
        return sorted(pairs, key=_FIRST)
    return sorted(pairs, key=stable_text)


def _finish(frame: _Frame) -> tuple[Hashable, int]:
    results = frame.results
    kind = frame.kind
    body: tuple[Hashable, ...]
    if kind == _ORDERED:
        body = tuple(results)
    elif kind == _UNORDERED:
        body = tuple(_sorted_items(results))
    else:
        pairs = list(zip(results[0::2], results[1::2], strict=False))
        body = tuple(pairs if kind == _ORDERED_MAPPING else _sorted_pairs(pairs))
    value: Hashable = (frame.tag, body) if frame.status is None else (frame.tag, body, frame.status)
    height = frame.height + 1
    if height > MAX_HEIGHT:
        # Keep the fingerprint shallow: comparing (==) nested tuples recurses in C and
        # would hit the recursion limit on a few hundred levels.
        text = stable_text(value).encode("utf-8", "surrogatepass")
        value = ("<deep>", frame.tag, hashlib.blake2b(text, digest_size=16).hexdigest())
        height = 1
    return value, height


# -- builders: one per dispatch-table entry ----------------------------------------------


def _mapping_pairs(obj: Any) -> Iterator[Any]:
    for key in obj.keys():  # noqa: SIM118 - duck mappings may only offer keys()
        yield key
        yield obj[key]


def _build_dict(obj: Any) -> _Frame:
    return _Frame(obj, "dict", _MAPPING, itertools.chain.from_iterable(dict.items(obj)), len(obj))


def _build_ordered_dict(obj: Any) -> _Frame:
    items = collections.OrderedDict.items(obj)
    return _Frame(
        obj, "OrderedDict", _ORDERED_MAPPING, itertools.chain.from_iterable(items), len(obj)
    )


def _build_defaultdict(obj: Any) -> _Frame:
    items = itertools.chain.from_iterable(dict.items(obj))
    return _Frame(obj, "defaultdict", _MAPPING, items, dict.__len__(obj))


def _build_counter(obj: Any) -> _Frame:
    items = itertools.chain.from_iterable(dict.items(obj))
    return _Frame(obj, "Counter", _MAPPING, items, dict.__len__(obj))


def _build_chain_map(obj: Any) -> _Frame:
    return _Frame(obj, "ChainMap", _MAPPING, _mapping_pairs(obj), None)


def _build_list(obj: Any) -> _Frame:
    return _Frame(obj, "list", _ORDERED, list.__iter__(obj), list.__len__(obj))


def _build_tuple(obj: Any) -> _Frame:
    return _Frame(obj, "tuple", _ORDERED, tuple.__iter__(obj), tuple.__len__(obj))


def _build_set(obj: Any) -> _Frame:
    return _Frame(obj, "set", _UNORDERED, set.__iter__(obj), set.__len__(obj))


def _build_frozenset(obj: Any) -> _Frame:
    return _Frame(obj, "frozenset", _UNORDERED, frozenset.__iter__(obj), frozenset.__len__(obj))


def _build_deque(obj: Any) -> _Frame:
    iterator = collections.deque.__iter__(obj)
    return _Frame(obj, "deque", _ORDERED, iterator, collections.deque.__len__(obj))


def _build_slice(obj: Any) -> _Frame:
    return _Frame(obj, "slice", _ORDERED, iter((obj.start, obj.stop, obj.step)), 3)


def _build_bytearray(obj: Any) -> Hashable:
    return ("bytearray", _bytes_key(memoryview(obj)))


def _build_memoryview(obj: Any) -> Hashable:
    content: Hashable
    if obj.nbytes <= _BYTES_INLINE:
        content = obj.tobytes()
    elif obj.c_contiguous:
        content = _bytes_key(obj.cast("B"))
    else:
        content = ("<non-contiguous>", obj.nbytes)
    return ("memoryview", obj.format, obj.shape, content)


def _build_array(obj: Any) -> Hashable:
    return ("array", obj.typecode, _bytes_key(memoryview(obj).cast("B")))


_Builder = Callable[[Any], "Hashable | _Frame"]

_EXACT: Final[dict[type, _Builder]] = {
    dict: _build_dict,
    list: _build_list,
    tuple: _build_tuple,
    set: _build_set,
    frozenset: _build_frozenset,
    bytearray: _build_bytearray,
    memoryview: _build_memoryview,
    slice: _build_slice,
    array.array: _build_array,
    collections.deque: _build_deque,
    collections.OrderedDict: _build_ordered_dict,
    collections.defaultdict: _build_defaultdict,
    collections.Counter: _build_counter,
    collections.ChainMap: _build_chain_map,
}

# Most specific first: OrderedDict, defaultdict and Counter are dict subclasses.
_SUBCLASS_CHAIN: Final[tuple[tuple[type, _Builder], ...]] = (
    (collections.OrderedDict, _build_ordered_dict),
    (collections.defaultdict, _build_defaultdict),
    (collections.Counter, _build_counter),
    (dict, _build_dict),
    (list, _build_list),
    (tuple, _build_tuple),
    (set, _build_set),
    (frozenset, _build_frozenset),
    (bytearray, _build_bytearray),
    (collections.deque, _build_deque),
    (array.array, _build_array),
    (collections.ChainMap, _build_chain_map),
)


# -- structural fallbacks and last resort -------------------------------------------------


def _shape_key(shape: object) -> Hashable:
    try:
        hash(shape)
        return shape
    except Exception:
        pass
    try:
        converted = tuple(itertools.islice(iter(shape), 64))  # type: ignore[call-overload]
        hash(converted)
        return converted
    except Exception:
        return bounded_repr(shape)


def _structural(obj: Any, tp: type) -> Hashable | _Frame:
    # Array-like: shape and dtype are the key, contents are not read.
    try:
        shape = obj.shape
        dtype = obj.dtype
    except Exception:
        pass
    else:
        try:
            dtype_text = str(dtype)[:200]
        except Exception:
            dtype_text = type_name(type(dtype))
        return (tp.__qualname__, _shape_key(shape), dtype_text)
    name = type_name(tp)
    # Mapping-like.
    try:
        if isinstance(obj, Mapping) or (
            callable(getattr(tp, "keys", None)) and hasattr(tp, "__getitem__")
        ):
            return _Frame(obj, f"mapping:{name}", _MAPPING, _mapping_pairs(obj), None)
    except Exception:
        pass
    # Iterable with a length (never a one-shot iterator: walking it would consume it).
    try:
        if hasattr(tp, "__len__") and hasattr(tp, "__iter__"):
            size = len(obj)
            iterator = iter(obj)
            if iterator is not obj:
                kind = _UNORDERED if isinstance(obj, AbstractSet) else _ORDERED
                return _Frame(obj, f"iterable:{name}", kind, iterator, size)
    except Exception:
        pass
    # __eq__ without __hash__: equality is user-defined, so identity is the only safe key.
    try:
        defines_eq = getattr(tp, "__eq__", None) is not getattr(object, "__eq__", None)
        if defines_eq and getattr(tp, "__hash__", _MISS) is None:
            return (name, id(obj))
    except Exception:
        pass
    return (name, bounded_repr(obj))


# -- quick path: small, shallow plain data, recursively -----------------------------------

_QUICK_DEPTH: Final = 12
_QUICK_NODES: Final = 2_000


class _Bail(Exception):
    """The quick path met something it does not handle; the full walk takes over."""


_BAIL: Final = _Bail()


class _Quick:
    """Fingerprint small acyclic plain data (list/dict/set of scalars, hashables and each
    other) recursively, producing exactly what the full walk would. Anything else — a
    handler, an unhashable non-container, depth, size, a cycle (seen as depth) — bails."""

    __slots__ = ("cache", "nodes")

    def __init__(self, cache: dict[type, Handler | None] | None) -> None:
        self.cache = cache
        self.nodes = 0

    def child(self, obj: object, depth: int) -> Hashable:
        tp = type(obj)
        cache = self.cache
        if cache is not None and cache.get(tp, _MISS) is not None:
            raise _BAIL  # a handler applies, or the type was never resolved
        if tp is list or tp is dict or tp is set:
            return self.container(obj, tp, depth + 1)
        try:
            hash(obj)
        except Exception:
            raise _BAIL from None
        return obj

    def container(self, obj: Any, tp: type, depth: int) -> Hashable:
        if depth > _QUICK_DEPTH:
            raise _BAIL
        self.nodes += len(obj)
        if self.nodes > _QUICK_NODES:
            raise _BAIL
        scalars = SCALAR_TYPES
        if tp is dict:
            pairs = [
                (
                    key if type(key) in scalars else self.child(key, depth),
                    value if type(value) in scalars else self.child(value, depth),
                )
                for key, value in obj.items()
            ]
            return ("dict", tuple(_sorted_pairs(pairs)))
        items = [item if type(item) in scalars else self.child(item, depth) for item in obj]
        if tp is list:
            return ("list", tuple(items))
        return ("set", tuple(_sorted_items(items)))


def _quick(obj: object, tp: type, registry: HandlerRegistry | None) -> Hashable:
    """Return the quick-path fingerprint of a list/dict/set, or ``_MISS``."""
    if registry is not None and not registry._scalars_unhandled:
        return _MISS
    try:
        return _Quick(None if registry is None else registry._cache).container(obj, tp, 0)
    except Exception:
        return _MISS


# -- the walk --------------------------------------------------------------------------


class _Walker:
    __slots__ = ("budget", "registry", "structural")

    def __init__(self, registry: HandlerRegistry | None, structural: bool) -> None:
        self.registry = registry
        self.structural = structural
        self.budget = MAX_NODES

    def enter(self, obj: object, skip_head: bool) -> Hashable | _Frame:
        """Fingerprint a leaf, or open a frame for a container. ``skip_head`` skips the
        registry and ``hash()`` steps (the caller already knows their answer)."""
        tp = type(obj)
        if not skip_head:
            registry = self.registry
            if registry is not None:
                handler = registry.handler_for(tp)
                if handler is not None:
                    outcome = _apply(handler, obj)
                    if outcome is not _MISS:
                        if is_hashable(outcome):
                            return outcome
                        sub = self.enter(outcome, True)
                        if type(sub) is _Frame:
                            sub.anchor = obj
                        return sub
            try:
                hash(obj)
            except Exception:
                pass
            else:
                return obj
        try:
            builder = _EXACT.get(tp)
            if builder is None:
                for base, candidate in _SUBCLASS_CHAIN:
                    if isinstance(obj, base):
                        builder = candidate
                        break
            if builder is not None:
                return builder(obj)
        except Exception:
            pass
        if not self.structural:
            return _identity(obj)
        try:
            return _structural(obj, tp)
        except Exception:
            return _identity(obj)

    def run(self, root: object, skip_head: bool) -> Hashable:
        first = self.enter(root, skip_head)
        if type(first) is not _Frame:
            return first
        stack = [first]
        on_path = {id(root): 0}
        # Index of the outermost unordered frame on the stack, or -1: when the budget runs
        # out inside one, that whole frame is summarised (which part of it was reached
        # depends on set/dict iteration order, so no part of it may leak).
        outer_unordered = 0 if first.kind >= _UNORDERED else -1
        registry = self.registry
        scalars_clean = registry is None or registry._scalars_unhandled
        scalars = SCALAR_TYPES
        while True:
            frame = stack[-1]
            value: Hashable
            if self.budget > 0:
                try:
                    child = next(frame.iterator, _END)
                except Exception as exc:
                    frame.status = ("<error>", type(exc).__name__)
                    child = _END
                if child is not _END:
                    self.budget -= 1
                    tp = type(child)
                    if tp in scalars and scalars_clean:
                        frame.results.append(child)
                        continue
                    level = on_path.get(id(child))
                    if level is not None:
                        frame.results.append(("<cycle>", len(stack) - level))
                        continue
                    sub = self.enter(child, False)
                    if type(sub) is _Frame:
                        on_path[id(sub.anchor)] = len(stack)
                        if outer_unordered < 0 and sub.kind >= _UNORDERED:
                            outer_unordered = len(stack)
                        stack.append(sub)
                    else:
                        frame.results.append(sub)
                    continue
                value, height = _finish(frame)
                del stack[-1]
                on_path.pop(id(frame.anchor), None)
            elif outer_unordered >= 0:
                summarised = stack[outer_unordered]
                for dropped in stack[outer_unordered:]:
                    on_path.pop(id(dropped.anchor), None)
                del stack[outer_unordered:]
                value, height = (summarised.tag, "<large>", summarised.size), 1
            else:
                frame.status = ("<truncated>", frame.size)
                value, height = _finish(frame)
                del stack[-1]
                on_path.pop(id(frame.anchor), None)
            if outer_unordered >= len(stack):
                outer_unordered = -1
            if not stack:
                return value
            parent = stack[-1]
            parent.results.append(value)
            if height > parent.height:
                parent.height = height


def _apply(handler: Handler, obj: object) -> object:
    try:
        return handler(obj)
    except Exception:
        logger.debug("fingerprint handler %r failed on a %s", handler, type_name(type(obj)))
        return _MISS


def _walk(
    obj: object, registry: HandlerRegistry | None, structural: bool, skip_head: bool
) -> Hashable:
    tp = type(obj)
    if skip_head and (tp is list or tp is dict or tp is set):
        quick = _quick(obj, tp, registry)
        if quick is not _MISS:
            return quick
    try:
        return _Walker(registry, structural).run(obj, skip_head)
    except Exception:  # pragma: no cover - defensive: the walk itself guards every step
        return _identity(obj)


# -- public API ------------------------------------------------------------------------


def is_hashable(obj: object) -> bool:
    """Return True if ``hash(obj)`` succeeds.

    False when ``hash()`` raises ``TypeError`` (unhashable type, or a tuple holding one),
    ``RuntimeError`` (e.g. non-scalar torch tensors) or any other exception. Never raises.
    """
    try:
        hash(obj)
    except Exception:
        return False
    return True


def make_hashable(obj: object, *, registry: HandlerRegistry | None = None) -> Hashable:
    """Return the routing fingerprint of ``obj`` (the pipeline is described in the hashing docs).

    A fingerprint is a routing key, not an equality witness. Pipeline, first match wins:

    0. a handler from ``registry`` (default: :func:`default_registry`) for the type or a
       class in its ``__mro__`` — registered handlers are authoritative, even for hashable
       types; a handler that raises is skipped;
    1. ``hash(obj)`` succeeds → ``obj`` itself;
    2. exact-type dispatch for builtin and ``collections`` containers;
    3. subclasses of those, then structural fallbacks: array-like (``shape`` + ``dtype``),
       mapping-like, iterable with a length, ``__eq__`` without ``__hash__`` → identity;
    4. ``(type name, bounded repr)``.

    Guarantees: never raises; never loops (cycles become ``('<cycle>', levels_up)``); any
    nesting depth works (subtrees deeper than ``MAX_HEIGHT`` are replaced by a digest); at
    most ``MAX_NODES`` objects are visited (the rest is summarised); equal plain data (None,
    bools, numbers, str, bytes, tuples, lists, dicts, sets, nested) gives equal fingerprints
    in every process, regardless of dict insertion order or string-hash randomisation.
    Containers are tagged, so ``[1, 2]`` and ``(1, 2)`` differ.
    """
    reg = _DEFAULT_REGISTRY if registry is None else registry
    try:
        handler = reg._cache[type(obj)]
    except (KeyError, TypeError):
        handler = reg.handler_for(type(obj))
    if handler is None:
        try:
            hash(obj)
        except Exception:
            return _walk(obj, reg, True, True)
        return obj
    return _walk(obj, reg, True, False)


def fast_make_hashable(obj: object) -> Hashable:
    """Return a fingerprint built from builtins and the standard library only.

    Hashable objects are themselves; builtin and ``collections`` containers (and their
    subclasses) are walked as in :func:`make_hashable`; anything else unhashable becomes
    its identity ``(type name, id(obj))``. No registry handlers, no structural fallbacks.
    Same guarantees: never raises, never loops, bounded work.
    """
    try:
        hash(obj)
    except Exception:
        return _walk(obj, None, False, True)
    return obj


def _kwargs_element(
    kwargs: Mapping[str, object], fingerprint: Callable[[object], Hashable]
) -> tuple[str, tuple[tuple[str, Hashable], ...]]:
    pairs = [(name, fingerprint(value)) for name, value in kwargs.items()]
    try:
        pairs.sort(key=itemgetter(0))
    except Exception:
        pairs.sort(key=lambda pair: stable_text(pair[0]))
    return ("**", tuple(pairs))


def safe_args_key(
    args: tuple[object, ...],
    kwargs: Mapping[str, object] | None = None,
    *,
    registry: HandlerRegistry | None = None,
) -> tuple[Hashable, ...]:
    """Return the fingerprint of a call: one element per positional argument, then, only if
    ``kwargs`` is non-empty, ``('**', ((name, fingerprint), ...))`` sorted by name.

    Equivalent to ``tuple(make_hashable(a) for a in args)`` (plus the keyword element), with
    a fast path: when every argument is a plain ``int``/``str``/``float``/``bool``/``bytes``/
    ``None`` and no registered handler claims those types, ``args`` itself is returned.
    Never raises.
    """
    reg = _DEFAULT_REGISTRY if registry is None else registry
    unhandled = reg._scalars_unhandled
    if not unhandled and reg._group is not None:  # the first call: discover handlers first
        reg._discover()
        unhandled = reg._scalars_unhandled
    if not kwargs and unhandled and type(args) is tuple:
        for arg in args:
            if type(arg) not in SCALAR_TYPES:
                break
        else:
            return args
    key = tuple([make_hashable(arg, registry=reg) for arg in args])
    if kwargs:
        return (*key, _kwargs_element(kwargs, lambda v: make_hashable(v, registry=reg)))
    return key


def fast_args_key(
    args: tuple[object, ...], kwargs: Mapping[str, object] | None = None
) -> tuple[Hashable, ...]:
    """Like :func:`safe_args_key` but with :func:`fast_make_hashable` (no registry).

    Never raises.
    """
    if not kwargs and type(args) is tuple:
        for arg in args:
            if type(arg) not in SCALAR_TYPES:
                break
        else:
            return args
    key = tuple([fast_make_hashable(arg) for arg in args])
    if kwargs:
        return (*key, _kwargs_element(kwargs, fast_make_hashable))
    return key
