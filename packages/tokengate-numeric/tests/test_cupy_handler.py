"""cupy cannot run here: its handler is tested through lazy registration with stand-ins whose
module and qualified name are those of ``cupy.ndarray``."""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any

import pytest

from tokengate.hashing import HandlerRegistry, make_hashable
from tokengate.numeric import HANDLERS, cupy_ndarray_fingerprint, register_handlers


class FakeDtype:
    """Prints like a numpy dtype without being one."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def make_stand_in(module: str, qualname: str) -> type:
    def init(self: Any, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self.dtype = FakeDtype(dtype)

    def forbidden(self: Any) -> Any:
        raise AssertionError("the handler must not read device memory")

    namespace = {
        "__init__": init,
        "__hash__": None,  # like the real cupy.ndarray
        "get": forbidden,
        "__array__": forbidden,
        "__iter__": forbidden,
    }
    created = type(qualname, (), namespace)
    created.__module__ = module
    created.__qualname__ = qualname
    return created


CupyArray = make_stand_in("cupy", "ndarray")


@pytest.fixture
def registry() -> HandlerRegistry:
    filled = HandlerRegistry()
    register_handlers(filled)
    return filled


def fingerprint(obj: object, registry: HandlerRegistry) -> Hashable:
    return make_hashable(obj, registry=registry)


def test_stand_in_cupy_array_gets_the_cupy_fingerprint(registry: HandlerRegistry) -> None:
    array = CupyArray((4, 5), "float32")
    assert registry.handler_for(CupyArray) is cupy_ndarray_fingerprint
    assert fingerprint(array, registry) == ("cupy.ndarray", (4, 5), "float32")
    assert fingerprint(CupyArray((4, 5), "float32"), registry) == fingerprint(array, registry)
    assert fingerprint(CupyArray((5, 4), "float32"), registry) != fingerprint(array, registry)


def test_cupy_shape_with_non_int_sizes_becomes_plain_ints(registry: HandlerRegistry) -> None:
    class Size(int):
        pass

    key = fingerprint(CupyArray((Size(2), Size(3)), "int8"), registry)
    assert key == ("cupy.ndarray", (2, 3), "int8")
    assert isinstance(key, tuple)
    assert all(type(size) is int for size in key[1])


def test_subclass_of_stand_in_gets_the_family_fingerprint(registry: HandlerRegistry) -> None:
    subclass = type("Special", (CupyArray,), {})
    assert fingerprint(subclass((3,), "float64"), registry) == ("cupy.ndarray", (3,), "float64")


def test_older_cupy_module_name_is_covered(registry: HandlerRegistry) -> None:
    old = make_stand_in("cupy._core.core", "ndarray")
    assert fingerprint(old((2,), "int32"), registry) == ("cupy.ndarray", (2,), "int32")


def test_a_name_that_only_looks_alike_is_not_claimed(registry: HandlerRegistry) -> None:
    impostor = make_stand_in("notcupy", "ndarray")
    assert registry.handler_for(impostor) is None
    # Without a handler the structural fallback still keys it by shape and dtype.
    assert fingerprint(impostor((1,), "float32"), registry) == ("ndarray", (1,), "float32")


def test_broken_stand_in_falls_back_instead_of_raising(registry: HandlerRegistry) -> None:
    array = CupyArray((2,), "float32")
    del array.dtype
    key = fingerprint(array, registry)  # the handler raises AttributeError; never surfaces
    assert key != ("cupy.ndarray", (2,), "float32")
    assert isinstance(key, tuple)


def test_registration_imports_no_cupy() -> None:
    assert "cupy.ndarray" in HANDLERS
    assert "cupy" not in sys.modules
