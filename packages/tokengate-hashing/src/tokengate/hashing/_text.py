"""Bounded, never-raising text renderings used by the fingerprint pipeline.

* :func:`bounded_repr` — a short description of an object, built without calling the
  object's own ``__repr__`` (which could build an arbitrarily large string or raise) and
  bounded *while* it is produced: few levels, few items per container, short strings.
* :func:`stable_text` — a deterministic serialization of fingerprint values (the same in
  every process, independent of string-hash randomisation), used as a total sort key and as
  the input of the digest that replaces over-deep fingerprints.
"""

from __future__ import annotations

import collections
import enum
import itertools
from typing import Any, Final

from ._registry import type_name

__all__ = ("bounded_repr", "stable_text")

_REPR_LEVELS: Final = 3
_REPR_ITEMS: Final = 6
_REPR_STRING: Final = 48
_REPR_LIMIT: Final = 256

_TEXT_LEVELS: Final = 100
_TEXT_ITEMS: Final = 10_000


def bounded_repr(obj: object) -> str:
    """Describe ``obj`` in at most 256 characters; never raises, never calls user ``__repr__``."""
    parts: list[str] = []
    try:
        _repr_into(obj, parts, 0)
    except Exception:
        parts.append("<?>")
    text = "".join(parts)
    if len(text) > _REPR_LIMIT:
        return text[: _REPR_LIMIT - 3] + "..."
    return text


def _repr_items(
    items: Any, total: int, opening: str, closing: str, out: list[str], level: int
) -> None:
    out.append(opening)
    for index, item in enumerate(itertools.islice(items, _REPR_ITEMS)):
        if index:
            out.append(", ")
        _repr_into(item, out, level + 1)
    if total > _REPR_ITEMS:
        out.append(f", ...{total - _REPR_ITEMS} more")
    out.append(closing)


def _repr_into(obj: object, out: list[str], level: int) -> None:
    tp = type(obj)
    if obj is None or tp is bool or tp is float or tp is complex:
        out.append(repr(obj))
    elif tp is int:
        assert isinstance(obj, int)
        out.append(repr(obj) if obj.bit_length() <= 256 else f"<int of {obj.bit_length()} bits>")
    elif isinstance(obj, str):
        head = str.__getitem__(obj, slice(0, _REPR_STRING))
        out.append(repr(head) + ("..." if str.__len__(obj) > _REPR_STRING else ""))
    elif isinstance(obj, bytes | bytearray):
        out.append(repr(bytes(obj[:_REPR_STRING])) + ("..." if len(obj) > _REPR_STRING else ""))
    elif isinstance(obj, enum.Enum):
        out.append(f"{tp.__qualname__}.{obj.name}")
    elif level >= _REPR_LEVELS:
        out.append("...")
    elif isinstance(obj, list):
        _repr_items(list.__iter__(obj), list.__len__(obj), "[", "]", out, level)
    elif isinstance(obj, tuple):
        _repr_items(tuple.__iter__(obj), tuple.__len__(obj), "(", ")", out, level)
    elif isinstance(obj, collections.deque):
        _repr_items(iter(obj), len(obj), "deque([", "])", out, level)
    elif isinstance(obj, set | frozenset):
        _repr_items(iter(obj), len(obj), "{", "}", out, level)
    elif isinstance(obj, dict):
        out.append("{")
        for index, (key, value) in enumerate(itertools.islice(dict.items(obj), _REPR_ITEMS)):
            if index:
                out.append(", ")
            _repr_into(key, out, level + 1)
            out.append(": ")
            _repr_into(value, out, level + 1)
        if len(obj) > _REPR_ITEMS:
            out.append(f", ...{len(obj) - _REPR_ITEMS} more")
        out.append("}")
    else:
        _repr_state(obj, tp, out, level)


def _repr_state(obj: object, tp: type, out: list[str], level: int) -> None:
    """Render ``QualName(attr=..., ...)`` from the instance ``__dict__``, if any."""
    name = tp.__qualname__
    try:
        state = object.__getattribute__(obj, "__dict__")
    except Exception:
        state = None
    if not isinstance(state, dict) or not state:
        out.append(f"<{name}>")
        return
    out.append(f"{name}(")
    for index, (key, value) in enumerate(itertools.islice(dict.items(state), _REPR_ITEMS)):
        if index:
            out.append(", ")
        out.append(f"{str(key)[:_REPR_STRING]}=")
        try:
            _repr_into(value, out, level + 1)
        except Exception:
            out.append("<?>")
    if len(state) > _REPR_ITEMS:
        out.append(", ...")
    out.append(")")


def stable_text(obj: object) -> str:
    """Serialize a fingerprint value deterministically; never raises.

    Equal numbers give equal text (``1``, ``1.0`` and ``True`` all render as ``n1``), strings
    and bytes are length-prefixed, frozensets are rendered in sorted order, and any other
    object renders as its type name and :func:`bounded_repr`. Depth and width are bounded,
    so the text of a huge or very deep value is a deterministic prefix.
    """
    parts: list[str] = []
    try:
        _text_into(obj, parts, 0)
    except Exception:
        parts.append("?")
    return "".join(parts)


def _number_text(obj: int | float) -> str:
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return f"n{obj!r}"
        if obj.is_integer():
            return f"n{int(obj):x}"
        return f"n{obj.hex()}"
    return f"n{int(obj):x}"


def _text_into(obj: object, out: list[str], level: int) -> None:
    tp = type(obj)
    if tp is str:
        assert isinstance(obj, str)
        out.append(f"s{len(obj)}:")
        out.append(obj)
    elif tp is int or tp is bool or tp is float:
        assert isinstance(obj, int | float)
        out.append(_number_text(obj))
    elif obj is None:
        out.append("N")
    elif tp is bytes:
        assert isinstance(obj, bytes)
        out.append(f"b{len(obj)}:{obj[:_TEXT_ITEMS].hex()}")
    elif level >= _TEXT_LEVELS:
        out.append("~")
    elif tp is tuple:
        assert isinstance(obj, tuple)
        out.append("(")
        for item in obj[:_TEXT_ITEMS]:
            _text_into(item, out, level + 1)
            out.append(",")
        if len(obj) > _TEXT_ITEMS:
            out.append(f"~{len(obj)}")
        out.append(")")
    elif tp is frozenset:
        assert isinstance(obj, frozenset)
        texts = sorted(
            stable_text_at(item, level + 1) for item in itertools.islice(obj, _TEXT_ITEMS)
        )
        out.append("{")
        out.append(",".join(texts))
        out.append("}")
    else:
        out.append(f"o{type_name(tp)}:{bounded_repr(obj)}")


def stable_text_at(obj: object, level: int) -> str:
    """:func:`stable_text` starting at a nesting level (for nested frozensets)."""
    parts: list[str] = []
    _text_into(obj, parts, level)
    return "".join(parts)
