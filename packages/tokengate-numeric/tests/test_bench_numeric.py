"""Micro-benchmarks (pytest-benchmark): the fingerprint cost of numeric arguments.

They report, they never assert wall-clock times. Run with ``--benchmark-enable``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import pytest

from tokengate.hashing import HandlerRegistry, make_hashable, safe_args_key
from tokengate.numeric import register_handlers

REGISTRY = HandlerRegistry()
register_handlers(REGISTRY)


def _ndarray() -> object:
    np = pytest.importorskip("numpy")
    return np.zeros((256, 256))


def _dataframe() -> object:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(
        {
            "i": np.arange(1000),
            "f": np.linspace(0.0, 1.0, 1000),
            "s": [str(n) for n in range(1000)],
            "n": pd.array(range(1000), dtype="Int64"),
        }
    )


def _wide_dataframe() -> object:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(np.zeros((10, 200)))


def _tensor() -> object:
    torch = pytest.importorskip("torch")
    return torch.zeros(64, 64)


def _image() -> object:
    image = pytest.importorskip("PIL.Image")
    return image.new("RGB", (640, 480))


BUILDERS: dict[str, Callable[[], object]] = {
    "ndarray": _ndarray,
    "dataframe": _dataframe,
    "dataframe_200_columns": _wide_dataframe,
    "tensor": _tensor,
    "pil_image": _image,
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bench_make_hashable(benchmark: Any, name: str) -> None:
    value = BUILDERS[name]()

    def run() -> Hashable:
        return make_hashable(value, registry=REGISTRY)

    result = benchmark(run)
    assert isinstance(result, tuple)
    hash(result)


@pytest.mark.parametrize("name", ["ndarray", "dataframe", "tensor"])
def test_bench_call_key_with_numeric_argument(benchmark: Any, name: str) -> None:
    args = (BUILDERS[name](), 3, "mode")

    def run() -> tuple[Hashable, ...]:
        return safe_args_key(args, registry=REGISTRY)

    result = benchmark(run)
    assert len(result) == 3
    assert result[1:] == (3, "mode")
