"""numpy: ndarray (and subclasses) by shape and dtype, scalars by their Python value."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable

import pytest

pytest.importorskip("numpy")

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tokengate.hashing import HandlerRegistry, make_hashable
from tokengate.numeric import (
    ndarray_fingerprint,
    numpy_scalar_fingerprint,
    register_handlers,
)

REGISTRY = HandlerRegistry()
register_handlers(REGISTRY)


def fingerprint(obj: object) -> Hashable:
    return make_hashable(obj, registry=REGISTRY)


def test_ndarray_is_keyed_by_shape_and_dtype_only() -> None:
    first = np.arange(12, dtype=np.float64).reshape(3, 4)
    second = np.full((3, 4), 7.5)
    assert fingerprint(first) == ("ndarray", (3, 4), "float64")
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(first.T)
    assert fingerprint(first) != fingerprint(first.astype(np.float32))


def test_ndarray_fingerprint_holds_plain_python_values() -> None:
    key = fingerprint(np.zeros((2, 5), dtype=np.int16))
    assert key == ("ndarray", (2, 5), "int16")
    assert isinstance(key, tuple)
    assert all(type(size) is int for size in key[1])
    assert type(key[2]) is str


def make_matrix() -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix([[1, 2], [3, 4]])


SUBCLASS_BUILDERS: dict[str, Callable[[], np.ndarray]] = {
    "matrix": make_matrix,
    "masked": lambda: np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False]),
    "recarray": lambda: np.rec.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
}


@pytest.mark.parametrize("name", list(SUBCLASS_BUILDERS))
def test_ndarray_subclasses_get_the_ndarray_family(name: str) -> None:
    array = SUBCLASS_BUILDERS[name]()
    assert type(array) is not np.ndarray
    assert fingerprint(array) == ("ndarray", tuple(array.shape), str(array.dtype))


def test_local_ndarray_subclass_gets_the_ndarray_family() -> None:
    class Tagged(np.ndarray):
        pass

    view = np.zeros(4).view(Tagged)
    assert type(view) is Tagged
    assert fingerprint(view) == ("ndarray", (4,), "float64")


def test_zero_d_and_empty_and_structured_arrays() -> None:
    assert fingerprint(np.array(3.0)) == ("ndarray", (), "float64")
    assert fingerprint(np.empty((0, 3), dtype=np.uint8)) == ("ndarray", (0, 3), "uint8")
    structured = np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")])
    assert fingerprint(structured) == ("ndarray", (2,), "[('a', '<i4'), ('b', '<f8')]")
    assert fingerprint(np.array(["x", None], dtype=object)) == ("ndarray", (2,), "object")


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.float64(1.5), 1.5),
        (np.float32(0.25), 0.25),
        (np.int32(-3), -3),
        (np.uint64(7), 7),
        (np.bool_(True), True),
        (np.str_("abc"), "abc"),
        (np.bytes_(b"ab"), b"ab"),
        (np.complex128(1 + 2j), 1 + 2j),
    ],
)
def test_numpy_scalars_become_their_python_value(scalar: np.generic, expected: object) -> None:
    key = fingerprint(scalar)
    assert key == expected
    assert type(key) is type(expected)


def test_numpy_scalar_and_equal_python_number_share_a_key() -> None:
    assert fingerprint(np.int64(5)) == fingerprint(5)
    assert fingerprint((np.float64(2.0), np.int8(1))) == fingerprint((2.0, 1))


def test_numpy_scalar_without_python_equivalent_is_plain_text() -> None:
    key = fingerprint(np.longdouble(2.5))
    assert key == (str(np.dtype(np.longdouble)), "2.5")


def test_numpy_scalars_inside_containers_and_dates() -> None:
    assert fingerprint([np.int16(1), np.float64(2.5)]) == ("list", (1, 2.5))
    day = np.datetime64("2020-01-02")
    assert fingerprint(day) == day.item()


def test_handlers_can_be_called_directly() -> None:
    assert ndarray_fingerprint(np.ones((1, 2), dtype=np.int8)) == ("ndarray", (1, 2), "int8")
    assert numpy_scalar_fingerprint(np.float16(0.5)) == 0.5


DTYPES = ["float64", "float32", "int64", "int8", "uint16", "bool", "complex64"]


@given(
    shape=st.lists(st.integers(min_value=0, max_value=5), max_size=4),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_property_arrays_key_on_shape_and_dtype_never_contents(
    shape: list[int], dtype: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    noisy = np.asarray(rng.random(shape) * 100).astype(dtype)
    zeros = np.zeros(shape, dtype=dtype)
    assert fingerprint(noisy) == fingerprint(zeros) == ("ndarray", tuple(shape), dtype)


@given(
    first=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3),
    second=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3),
)
def test_property_different_shapes_give_different_keys(first: list[int], second: list[int]) -> None:
    same = first == second
    assert (fingerprint(np.zeros(first)) == fingerprint(np.zeros(second))) is same
