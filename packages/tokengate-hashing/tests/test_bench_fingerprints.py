"""Micro-benchmarks (pytest-benchmark): they report, they never assert wall-clock times."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import pytest

from tokengate.hashing import make_hashable, safe_args_key

CASES: dict[str, object] = {
    "int": 5,
    "short_str": "abc",
    "small_tuple": (1, "a", 2.5),
    "small_dict": {"a": 1, "b": [2, 3], "c": "x"},
    "list_100_ints": list(range(100)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bench_make_hashable(benchmark: Any, name: str) -> None:
    value = CASES[name]
    result: Hashable = benchmark(make_hashable, value)
    hash(result)


@pytest.mark.parametrize("name", list(CASES))
def test_bench_safe_args_key(benchmark: Any, name: str) -> None:
    args = (CASES[name],)
    function: Callable[[tuple[object, ...]], tuple[Hashable, ...]] = safe_args_key
    result = benchmark(function, args)
    assert len(result) == 1
