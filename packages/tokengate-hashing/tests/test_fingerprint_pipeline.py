"""Every layer of the fingerprint pipeline, and hostile inputs."""

from __future__ import annotations

import array
import collections
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from tokengate.hashing import HandlerRegistry, fast_make_hashable, is_hashable, make_hashable
from tokengate.hashing._fingerprint import MAX_HEIGHT, MAX_NODES


def fp(obj: object) -> Hashable:
    """Fingerprint with an empty private registry, and check it is hashable."""
    result = make_hashable(obj, registry=HandlerRegistry())
    hash(result)
    return result


# -- layer 1: hashable objects are their own fingerprint ------------------------------


@pytest.mark.parametrize("value", [None, True, 7, 2.5, "s", b"b", (1, "a"), frozenset({1})])
def test_hashable_objects_are_returned_unchanged(value: object) -> None:
    assert fp(value) is value


def test_hash_raising_runtime_error_is_unhashable() -> None:
    class Tensorish:
        def __hash__(self) -> int:
            raise RuntimeError("non-scalar tensor")

    obj = Tensorish()
    assert not is_hashable(obj)
    assert fp(obj) == (f"{__name__}.{Tensorish.__qualname__}", f"<{Tensorish.__qualname__}>")


def test_is_hashable() -> None:
    assert is_hashable(1)
    assert is_hashable((1, "a"))
    assert not is_hashable([1])
    assert not is_hashable((1, [2]))


# -- layer 2: exact-type dispatch -----------------------------------------------------


DISPATCH_CASES: list[tuple[object, Hashable]] = [
    ({"b": 1, "a": 2}, ("dict", (("a", 2), ("b", 1)))),
    ([1, "x"], ("list", (1, "x"))),
    ({3, 1, 2}, ("set", (1, 2, 3))),
    ((1, [2]), ("tuple", (1, ("list", (2,))))),
    (bytearray(b"ab"), ("bytearray", b"ab")),
    (memoryview(bytearray(b"xy")), ("memoryview", "B", (2,), b"xy")),
    (slice(1, [2], None), ("slice", (1, ("list", (2,)), None))),
    (array.array("B", [1, 2]), ("array", "B", b"\x01\x02")),
    (collections.deque([1, 2]), ("deque", (1, 2))),
    (collections.OrderedDict([("b", 1), ("a", 2)]), ("OrderedDict", (("b", 1), ("a", 2)))),
    (collections.defaultdict(int, {"b": 1, "a": 2}), ("defaultdict", (("a", 2), ("b", 1)))),
    (collections.Counter("aab"), ("Counter", (("a", 2), ("b", 1)))),
    (
        collections.ChainMap[str, object]({"a": 1}, {"b": [2]}),
        ("ChainMap", (("a", 1), ("b", ("list", (2,))))),
    ),
]


@pytest.mark.parametrize(("value", "expected"), DISPATCH_CASES)
def test_exact_type_dispatch(value: object, expected: Hashable) -> None:
    assert fp(value) == expected


def test_list_and_tuple_with_same_items_differ() -> None:
    assert fp([1, [2]]) != fp((1, [2]))
    assert fp([1, 2]) != fp({1, 2})


def test_ordered_dict_keeps_order_but_dict_does_not() -> None:
    first = collections.OrderedDict([("a", 1), ("b", 2)])
    second = collections.OrderedDict([("b", 2), ("a", 1)])
    assert fp(first) != fp(second)
    assert fp(dict(first)) == fp(dict(second))


def test_large_byte_buffers_are_keyed_by_length_and_prefix() -> None:
    data = bytearray(200_000)
    key = fp(data)
    assert isinstance(key, tuple)
    assert key[0] == "bytearray"
    assert key != fp(bytearray(200_001))


# -- layer 3: subclasses, structural fallbacks ----------------------------------------


class MyDict(dict[Any, Any]):
    pass


class MyList(list[Any]):
    pass


class MySet(set[Any]):
    pass


class MyTuple(tuple[Any, ...]):
    pass


class MyDeque(collections.deque[Any]):
    pass


class MyOrderedDict(collections.OrderedDict[Any, Any]):
    pass


class MyCounter(collections.Counter[Any]):
    pass


class MyChainMap(collections.ChainMap[Any, Any]):
    pass


class MyByteArray(bytearray):
    pass


@pytest.mark.parametrize(
    ("value", "base"),
    [
        (MyDict(a=[1]), {"a": [1]}),
        (MyList([1, [2]]), [1, [2]]),
        (MySet({1, 2}), {1, 2}),
        (MyTuple((1, [2])), (1, [2])),
        (MyDeque([1]), collections.deque([1])),
        (MyOrderedDict(a=1), collections.OrderedDict(a=1)),
        (MyCounter("ab"), collections.Counter("ab")),
        (MyChainMap({"a": [1]}), collections.ChainMap({"a": [1]})),
        (MyByteArray(b"ab"), bytearray(b"ab")),
    ],
)
def test_subclasses_take_the_isinstance_chain(value: object, base: object) -> None:
    assert not is_hashable(value) or isinstance(value, tuple)
    assert fp(value) == fp(base)


def test_list_subclass_with_raising_iter_uses_the_builtin_iteration() -> None:
    class Hostile(list[int]):
        def __iter__(self) -> NoReturn:
            raise ValueError("no iteration")

    assert fp(Hostile([1, 2])) == ("list", (1, 2))


class ArrayLike:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self.dtype = dtype


def test_array_like_duck_is_keyed_by_shape_and_dtype() -> None:
    assert fp(ArrayLike((2, 3), "float32")) == ("ArrayLike", (2, 3), "float32")
    assert fp(ArrayLike((2, 3), "float32")) == fp(ArrayLike((2, 3), "float32"))
    assert fp(ArrayLike((2, 3), "float32")) != fp(ArrayLike((3, 2), "float32"))


class MappingDuck:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: dict[str, object]) -> None:
        self._data = data

    def keys(self) -> list[str]:
        return list(self._data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]


def test_mapping_like_duck_is_walked_order_independently() -> None:
    first = fp(MappingDuck({"a": [1], "b": 2}))
    second = fp(MappingDuck({"b": 2, "a": [1]}))
    assert first == second
    assert isinstance(first, tuple)
    assert first[0] == f"mapping:{__name__}.MappingDuck"
    assert first[1] == (("a", ("list", (1,))), ("b", 2))


class AbcMapping(Mapping[str, int]):
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: str) -> int:
        return {"x": 1}[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["x"])

    def __len__(self) -> int:
        return 1


def test_abc_mapping_is_mapping_like() -> None:
    assert fp(AbcMapping()) == (f"mapping:{__name__}.AbcMapping", (("x", 1),))


class Bag:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, *items: object) -> None:
        self._items = list(items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[object]:
        return iter(self._items)


def test_iterable_with_length_is_walked_in_order() -> None:
    assert fp(Bag(1, [2])) == (f"iterable:{__name__}.Bag", (1, ("list", (2,))))
    assert fp(Bag(1, 2)) != fp(Bag(2, 1))


def test_one_shot_iterator_with_length_is_not_consumed() -> None:
    class CountingIterator:
        __hash__ = None  # type: ignore[assignment]

        def __init__(self) -> None:
            self.left = 3

        def __len__(self) -> int:
            return self.left

        def __iter__(self) -> CountingIterator:
            return self

        def __next__(self) -> int:
            if not self.left:
                raise StopIteration
            self.left -= 1
            return self.left

    iterator = CountingIterator()
    fp(iterator)
    assert iterator.left == 3


@dataclass
class Point:
    x: int
    y: list[int]


def test_eq_without_hash_is_identity() -> None:
    first, second = Point(1, [2]), Point(1, [2])
    assert first == second
    assert fp(first) == (f"{__name__}.Point", id(first))
    assert fp(first) != fp(second)
    assert fp(first) == fp(first)


def test_last_resort_is_type_name_and_bounded_repr() -> None:
    class Opaque:
        __hash__ = None  # type: ignore[assignment]

        def __init__(self) -> None:
            self.size = 3
            self.label = "x" * 10_000

    key = fp(Opaque())
    assert isinstance(key, tuple)
    name, text = key
    assert name == f"{__name__}.{Opaque.__qualname__}"
    assert isinstance(text, str)
    assert text.startswith(f"{Opaque.__qualname__}(size=3, label='xxx")
    assert len(text) <= 256
    assert fp(Opaque()) == key  # same state, same key


# -- registry handlers inside containers ----------------------------------------------


def test_handlers_apply_to_nested_objects_and_results_are_walked() -> None:
    class Tensor:
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape = shape

    registry = HandlerRegistry()
    registry.register(Tensor, lambda tensor: ("Tensor", tensor.shape))
    key = make_hashable([Tensor((2,)), {"t": Tensor((3,))}], registry=registry)
    assert key == ("list", (("Tensor", (2,)), ("dict", (("t", ("Tensor", (3,))),))))
    registry.register(Tensor, lambda tensor: ["unhashable", list(tensor.shape)])  # type: ignore[arg-type,return-value]
    assert make_hashable(Tensor((4,)), registry=registry) == (
        "list",
        ("unhashable", ("list", (4,))),
    )


def test_handler_for_builtin_scalar_is_authoritative() -> None:
    registry = HandlerRegistry()
    registry.register(int, lambda value: ("int", value % 10))
    assert make_hashable(13, registry=registry) == ("int", 3)
    assert make_hashable([13], registry=registry) == ("list", (("int", 3),))


# -- hostile inputs -------------------------------------------------------------------


def test_self_containing_list_and_dict() -> None:
    items: list[object] = [1]
    items.append(items)
    assert fp(items) == ("list", (1, ("<cycle>", 1)))
    mapping: dict[str, object] = {}
    mapping["self"] = mapping
    assert fp(mapping) == ("dict", (("self", ("<cycle>", 1)),))


def test_mutual_cycles() -> None:
    first: list[object] = []
    second: list[object] = [first]
    first.append(second)
    assert fp(first) == ("list", (("list", (("<cycle>", 2),)),))
    holder: dict[str, object] = {"list": first}
    first.append(holder)
    hash(fp(holder))


def test_cycle_through_a_tuple() -> None:
    inner: list[object] = []
    outer = (inner,)
    inner.append(outer)
    assert fp(outer) == ("tuple", (("list", (("<cycle>", 2),)),))


def nested_lists(depth: int, leaf: object) -> list[object]:
    value: list[object] = [leaf]
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int, leaf: object) -> dict[str, object]:
    value: dict[str, object] = {"leaf": leaf}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("build", [nested_lists, nested_dicts])
def test_deep_nesting_works_and_stays_comparable(build: Any) -> None:
    first, second, other = build(5_000, "x"), build(5_000, "x"), build(5_000, "y")
    key = fp(first)
    assert key == fp(second)  # == on the result must not hit the recursion limit
    assert key != fp(other)
    assert hash(key) == hash(fp(second))
    assert "<deep>" in repr(key)


def test_deep_nesting_fast_variant() -> None:
    assert fast_make_hashable(nested_lists(5_000, 1)) == fast_make_hashable(nested_lists(5_000, 1))


def test_shallow_values_are_not_digested() -> None:
    assert "<deep>" not in repr(fp(nested_lists(MAX_HEIGHT - 2, 1)))


def test_dict_with_mixed_key_types() -> None:
    first = {1: "a", "b": 2, (1, 2): 3, None: 4}
    second = {None: 4, (1, 2): 3, "b": 2, 1: "a"}
    assert fp(first) == fp(second)
    assert fp({1: [1], "1": [2]}) == fp({"1": [2], 1: [1]})


def test_set_with_mixed_types_is_order_independent() -> None:
    members: list[object] = ["a", 1, None, 2.5, b"x", (1, "t"), frozenset({"f"})]
    backwards = members[::-1]
    first, second = set(members), set(backwards)
    assert fp(first) == fp(second)


class RaisingEverything:
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        raise ValueError("repr")

    def __len__(self) -> int:
        raise OSError("len")

    def __iter__(self) -> NoReturn:
        raise KeyError("iter")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")


class HashRaises:
    def __hash__(self) -> int:
        raise ZeroDivisionError("hash")

    def __repr__(self) -> str:
        raise ValueError("repr")


class AttributeHostile:
    __hash__ = None  # type: ignore[assignment]

    def __getattribute__(self, name: str) -> NoReturn:
        raise RuntimeError(name)


class IterRaisesMidway:
    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Iterator[int]:
        yield 1
        raise ValueError("midway")


@pytest.mark.parametrize(
    "factory", [RaisingEverything, HashRaises, AttributeHostile, IterRaisesMidway]
)
def test_hostile_objects_still_get_a_fingerprint(factory: type) -> None:
    obj = factory()
    key = fp(obj)
    hash(key)
    assert fast_make_hashable(obj) is not None
    hash(fp([obj, {"k": obj}]))


def test_iteration_error_is_recorded() -> None:
    key = fp(IterRaisesMidway())
    assert isinstance(key, tuple)
    assert key[1] == (1,)
    assert key[2] == ("<error>", "ValueError")


class CountingItem:
    reprs = 0

    def __repr__(self) -> str:
        CountingItem.reprs += 1
        return "CountingItem()"


class HugeHolder:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, count: int) -> None:
        self.items = [CountingItem()] * count

    def __repr__(self) -> str:
        return repr(self.items)


def test_huge_unhashable_object_repr_is_bounded_while_produced() -> None:
    holder = HugeHolder(2_000_000)
    CountingItem.reprs = 0
    key = fp(holder)
    assert CountingItem.reprs < 10  # the 2,000,000-item repr was never built
    assert isinstance(key, tuple)
    assert len(key[1]) <= 256
    assert "1999994 more" in key[1]


class CountingList(list[CountingItem]):
    pass


def test_huge_list_subclass_visits_a_bounded_number_of_items() -> None:
    visited = 0

    def counting_handler(item: CountingItem) -> Hashable:
        nonlocal visited
        visited += 1
        return "item"

    registry = HandlerRegistry()
    registry.register(CountingItem, counting_handler)
    huge = CountingList([CountingItem()] * 2_000_000)
    key = make_hashable(huge, registry=registry)
    assert visited <= MAX_NODES
    assert isinstance(key, tuple)
    assert key[2] == ("<truncated>", 2_000_000)


def test_huge_set_is_summarised_order_independently() -> None:
    first = {f"s{i}" for i in range(MAX_NODES + 10)}
    key = fp(first)
    assert key == ("set", "<large>", MAX_NODES + 10)
    assert fp({"wrapper": [first]}) == fp({"wrapper": [set(first)]})
