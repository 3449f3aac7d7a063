"""torch: tensors by shape, dtype and device; scalar tensors use the same form."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

pytest.importorskip("torch")

import torch

from tokengate.hashing import HandlerRegistry, is_hashable, make_hashable
from tokengate.numeric import register_handlers, tensor_fingerprint

REGISTRY = HandlerRegistry()
register_handlers(REGISTRY)


def fingerprint(obj: object) -> Hashable:
    return make_hashable(obj, registry=REGISTRY)


def test_tensor_is_keyed_by_shape_dtype_and_device() -> None:
    key = fingerprint(torch.zeros(2, 3))
    assert key == ("Tensor", (2, 3), "torch.float32", "cpu")
    assert fingerprint(torch.ones(2, 3)) == key
    assert fingerprint(torch.zeros(3, 2)) != key
    assert fingerprint(torch.zeros(2, 3, dtype=torch.float64)) != key
    assert fingerprint(torch.zeros(2, 3, device="meta")) == (
        "Tensor",
        (2, 3),
        "torch.float32",
        "meta",
    )


def test_tensor_key_holds_plain_values_not_torch_objects() -> None:
    key = fingerprint(torch.arange(6).reshape(2, 3))
    assert isinstance(key, tuple)
    assert type(key[1]) is tuple  # a tuple, not a torch.Size
    assert all(type(size) is int for size in key[1])
    assert type(key[2]) is str
    assert type(key[3]) is str
    assert key == ("Tensor", (2, 3), "torch.int64", "cpu")


def test_scalar_tensors_use_the_shape_form_not_their_value() -> None:
    assert fingerprint(torch.tensor(1.5)) == ("Tensor", (), "torch.float32", "cpu")
    assert fingerprint(torch.tensor(1.5)) == fingerprint(torch.tensor(-7.0))
    assert fingerprint(torch.tensor(3)) == ("Tensor", (), "torch.int64", "cpu")


def test_registered_handler_wins_over_tensor_identity_hash() -> None:
    first = torch.zeros(4)
    second = torch.zeros(4)
    # Whatever hash() does for tensors (identity, or RuntimeError in some versions), the
    # handler is consulted first, so two distinct tensors of one shape share a key.
    assert fingerprint(first) == fingerprint(second)
    assert is_hashable(fingerprint(first))


class RaisesOnHash(torch.Tensor):
    def __hash__(self) -> int:
        raise RuntimeError("Tensor of more than one element is not hashable")


def test_tensor_whose_hash_raises_runtime_error_still_gets_its_key() -> None:
    tensor = torch.zeros(2, 2).as_subclass(RaisesOnHash)
    assert not is_hashable(tensor)
    assert fingerprint(tensor) == ("Tensor", (2, 2), "torch.float32", "cpu")


def test_parameter_and_tensors_inside_containers() -> None:
    parameter = torch.nn.Parameter(torch.zeros(3))
    assert fingerprint(parameter) == ("Tensor", (3,), "torch.float32", "cpu")
    key = fingerprint([torch.zeros(1), {"w": torch.zeros(2, dtype=torch.int8)}])
    assert key == (
        "list",
        (
            ("Tensor", (1,), "torch.float32", "cpu"),
            ("dict", (("w", ("Tensor", (2,), "torch.int8", "cpu")),)),
        ),
    )


def test_tensor_without_a_regular_shape_gets_none() -> None:
    class Irregular:
        dtype = torch.float32
        device = torch.device("cpu")

        @property
        def shape(self) -> tuple[int, ...]:
            raise RuntimeError("nested tensors have no regular shape")

    assert tensor_fingerprint(Irregular()) == ("Tensor", None, "torch.float32", "cpu")
