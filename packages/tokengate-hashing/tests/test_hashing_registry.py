"""HandlerRegistry: registration, lazy names, mro matching, caching, failure fall-through."""

from __future__ import annotations

import sys
import threading
from collections.abc import Hashable
from typing import NoReturn

import pytest

from tokengate.hashing import HandlerRegistry, default_registry, make_hashable


class Base:
    pass


class Child(Base):
    pass


def tag(label: str) -> object:
    def handler(obj: object) -> Hashable:
        return (label, type(obj).__name__)

    return handler


def test_register_and_lookup_by_type_and_subclass() -> None:
    registry = HandlerRegistry()
    handler = tag("base")
    registry.register(Base, handler)  # type: ignore[arg-type]
    assert registry.handler_for(Base) is handler
    assert registry.handler_for(Child) is handler
    assert registry.handler_for(int) is None
    assert Base in registry
    assert Child not in registry
    assert len(registry) == 1
    assert make_hashable(Child(), registry=registry) == ("base", "Child")


def test_most_derived_registration_wins() -> None:
    registry = HandlerRegistry()
    registry.register(Base, lambda obj: "base")
    registry.register(Child, lambda obj: "child")
    assert make_hashable(Child(), registry=registry) == "child"
    assert make_hashable(Base(), registry=registry) == "base"


def test_unregister_and_clear_bump_generation_and_invalidate_cache() -> None:
    registry = HandlerRegistry()
    start = registry.generation
    registry.register(Base, lambda obj: "base")
    assert registry.generation == start + 1
    assert make_hashable(Base(), registry=registry) == "base"
    assert registry.unregister(Base) is True
    assert registry.unregister(Base) is False
    assert registry.generation == start + 2
    obj = Base()
    assert make_hashable(obj, registry=registry) is obj  # cached "base" is gone
    registry.register_lazy(f"{__name__}.Base", lambda obj: "lazy")
    assert f"{__name__}.Base" in registry
    assert registry.unregister(f"{__name__}.Base") is True
    registry.register(Base, lambda obj: "base")
    registry.clear()
    assert len(registry) == 0
    assert registry.handler_for(Base) is None


def make_fake_type(module: str, qualname: str, base: type = object) -> type:
    created = type(qualname.rpartition(".")[2], (base,), {"__hash__": None})
    created.__module__ = module
    created.__qualname__ = qualname
    return created


def test_lazy_handler_applies_once_a_matching_type_shows_up() -> None:
    registry = HandlerRegistry()
    registry.register_lazy("fakemod.Thing", lambda obj: ("Thing", 1))
    assert "fakemod" not in sys.modules
    thing_type = make_fake_type("fakemod", "Thing")
    assert make_hashable(thing_type(), registry=registry) == ("Thing", 1)
    other = make_fake_type("fakemod", "Other")
    assert make_hashable(other(), registry=registry) != ("Thing", 1)


def test_lazy_handler_matches_subclasses_through_the_mro() -> None:
    registry = HandlerRegistry()
    registry.register_lazy("fakenumpy.ndarray", lambda obj: ("ndarray", type(obj).__name__))
    ndarray = make_fake_type("fakenumpy", "ndarray")
    matrix = make_fake_type("fakenumpy.matrixlib", "matrix", ndarray)
    assert make_hashable(matrix(), registry=registry) == ("ndarray", "matrix")


def test_registry_never_imports_the_module() -> None:
    name = "tokengate_surely_missing_module_xyz"
    registry = HandlerRegistry()
    registry.register_lazy(f"{name}.Thing", lambda obj: "never")
    assert make_hashable([1, {"a": object()}], registry=registry) is not None
    assert registry.handler_for(int) is None
    assert name not in sys.modules


def test_raising_handler_falls_through_to_the_pipeline() -> None:
    def broken(obj: object) -> NoReturn:
        raise RuntimeError("plugin bug")

    registry = HandlerRegistry()
    registry.register(list, broken)
    registry.register(int, broken)
    assert make_hashable([1, 2], registry=registry) == ("list", (1, 2))
    assert make_hashable(5, registry=registry) == 5


def test_registration_errors_say_what_was_wrong() -> None:
    registry = HandlerRegistry()
    with pytest.raises(TypeError, match="not a class"):
        registry.register("numpy.ndarray", lambda obj: 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not callable"):
        registry.register(Base, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"module\.QualName"):
        registry.register_lazy("ndarray", lambda obj: 1)


def test_cache_is_bounded() -> None:
    registry = HandlerRegistry()
    registry.register(Base, lambda obj: "base")
    for index in range(5_000):
        registry.handler_for(make_fake_type("m", f"T{index}"))
    assert len(registry._cache) <= 2_048


def test_concurrent_registration_is_safe() -> None:
    registry = HandlerRegistry()
    types = [make_fake_type("threads", f"T{index}") for index in range(200)]

    def register_slice(start: int) -> None:
        for tp in types[start::4]:
            registry.register(tp, lambda obj: "x")
            make_hashable(tp(), registry=registry)

    threads = [threading.Thread(target=register_slice, args=(start,)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry) == 200
    assert all(registry.handler_for(tp) is not None for tp in types)


def test_default_registry_is_the_one_make_hashable_uses() -> None:
    registry = default_registry()
    assert registry is default_registry()
    thing = make_fake_type("defaultmod", "Thing")
    registry.register(thing, lambda obj: "from-default")
    try:
        assert make_hashable(thing()) == "from-default"
    finally:
        registry.unregister(thing)
    assert make_hashable(thing()) != "from-default"
