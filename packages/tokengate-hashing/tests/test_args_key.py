"""safe_args_key and fast_args_key."""

from __future__ import annotations

from collections.abc import Hashable

from tokengate.hashing import (
    HandlerRegistry,
    fast_args_key,
    fast_make_hashable,
    make_hashable,
    safe_args_key,
)


def test_scalar_args_are_returned_as_is() -> None:
    args = (5, "a", 2.5, None, b"x", True)
    assert safe_args_key(args) is args
    assert fast_args_key(args) is args


def test_args_are_fingerprinted_positionally() -> None:
    args: tuple[object, ...] = ([1], {"a": {2}}, (3, [4]))
    assert safe_args_key(args) == tuple(make_hashable(arg) for arg in args)
    assert fast_args_key(args) == tuple(fast_make_hashable(arg) for arg in args)
    assert safe_args_key(()) == ()


def test_kwargs_element_is_sorted_by_name_and_only_present_when_non_empty() -> None:
    first = safe_args_key((1,), {"b": [2], "a": 1})
    second = safe_args_key((1,), {"a": 1, "b": [2]})
    assert first == second == (1, ("**", (("a", 1), ("b", ("list", (2,))))))
    assert safe_args_key((1,), {}) == (1,)
    assert fast_args_key((1,), {"b": 2, "a": 1}) == (1, ("**", (("a", 1), ("b", 2))))
    assert safe_args_key((1,), {"a": 1}) != safe_args_key((1, 1))


def test_fast_path_respects_handlers_for_builtin_scalars() -> None:
    registry = HandlerRegistry()
    registry.register(int, lambda value: ("int", value % 10))
    assert safe_args_key((13, "s"), registry=registry) == (("int", 3), "s")
    registry.unregister(int)
    assert safe_args_key((13, "s"), registry=registry) == (13, "s")


def test_fast_path_respects_a_handler_for_object() -> None:
    registry = HandlerRegistry()
    registry.register(object, lambda value: "everything")
    assert safe_args_key((1, "s"), registry=registry) == ("everything", "everything")


def test_keys_are_hashable() -> None:
    key: tuple[Hashable, ...] = safe_args_key(([1, {2: [3]}],), {"k": {"x"}})
    hash(key)
