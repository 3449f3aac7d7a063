"""pandas: DataFrame, Series, Index, MultiIndex, Categorical and extension arrays."""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Any

import pytest

pytest.importorskip("numpy")
pytest.importorskip("pandas")

import numpy as np
import pandas as pd

from tokengate.hashing import HandlerRegistry, make_hashable
from tokengate.numeric import (
    categorical_fingerprint,
    dataframe_fingerprint,
    extension_array_fingerprint,
    index_fingerprint,
    multiindex_fingerprint,
    register_handlers,
    series_fingerprint,
)

REGISTRY = HandlerRegistry()
register_handlers(REGISTRY)


def fingerprint(obj: object) -> Hashable:
    return make_hashable(obj, registry=REGISTRY)


def assert_plain(value: object) -> None:
    """Every leaf is a builtin scalar or None; every container is an exact tuple."""
    if type(value) is tuple:
        for item in value:
            assert_plain(item)
        return
    assert value is None or type(value) in {int, float, complex, str, bytes, bool}, value


def mixed_frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": np.arange(rows, dtype=np.int64),
            "f": np.linspace(0.0, 1.0, rows),
            "s": [f"row{n}" for n in range(rows)],
            "n": pd.array([None if n % 2 else n for n in range(rows)], dtype="Int64"),
            "c": pd.Categorical(["a" if n % 2 else "b" for n in range(rows)]),
        }
    )


def test_dataframe_is_keyed_by_shape_and_column_dtypes() -> None:
    frame = mixed_frame(4)
    dtypes = tuple(str(dtype) for dtype in frame.dtypes)
    assert fingerprint(frame) == ("DataFrame", (4, 5), dtypes)
    assert dtypes[0] == "int64"
    assert dtypes[3] == "Int64"
    assert dtypes[4] == "category"
    assert_plain(fingerprint(frame))


def test_dataframe_contents_and_labels_do_not_matter_but_shape_and_dtypes_do() -> None:
    frame = mixed_frame(4)
    other = mixed_frame(4).rename(columns=str.upper)
    other["I"] = other["I"] * 100
    assert fingerprint(frame) == fingerprint(other)
    assert fingerprint(frame) != fingerprint(mixed_frame(5))
    assert fingerprint(frame) != fingerprint(frame.astype({"i": "float64"}))
    assert fingerprint(frame) != fingerprint(frame[["f", "i", "s", "n", "c"]])


def test_empty_and_wide_frames() -> None:
    assert fingerprint(pd.DataFrame()) == ("DataFrame", (0, 0), ())
    wide = pd.DataFrame(np.zeros((2, 300)))
    key: Any = fingerprint(wide)
    assert key[1] == (2, 300)
    assert key[2] == ("float64",) * 300


def test_dataframe_falls_back_to_public_dtypes_without_a_block_manager() -> None:
    class Facade:
        shape = (2, 2)
        dtypes = (np.dtype("int64"), np.dtype("float32"))

    assert dataframe_fingerprint(Facade()) == ("DataFrame", (2, 2), ("int64", "float32"))


class SubFrame(pd.DataFrame):
    @property
    def _constructor(self) -> type[SubFrame]:
        return SubFrame


class SubSeries(pd.Series):
    @property
    def _constructor(self) -> type[SubSeries]:
        return SubSeries


def test_subclasses_get_their_family_fingerprint() -> None:
    frame = SubFrame({"a": [1, 2], "b": [0.5, 1.5]})
    assert type(frame) is SubFrame
    assert fingerprint(frame) == ("DataFrame", (2, 2), ("int64", "float64"))
    series = SubSeries([1.0, 2.0], name="x")
    assert fingerprint(series) == ("Series", 2, "float64", "x")


def test_series_key_has_length_dtype_and_plain_name() -> None:
    assert fingerprint(pd.Series([1, 2, 3], name="price")) == ("Series", 3, "int64", "price")
    assert fingerprint(pd.Series([1, 2, 3])) == ("Series", 3, "int64", None)
    assert fingerprint(pd.Series([1.0], name="a")) != fingerprint(pd.Series([1.0], name="b"))
    assert fingerprint(pd.Series([9, 9, 9], name="p")) == fingerprint(
        pd.Series([1, 2, 3], name="p")
    )


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (np.int64(3), 3),
        (np.float64(2.5), 2.5),
        (np.str_("col"), "col"),
        (("a", np.int32(1)), ("a", 1)),
        (Colour.RED, 1),
        (pd.Timestamp("2020-01-02"), ("pandas.Timestamp", "2020-01-02 00:00:00")),
    ],
)
def test_series_names_are_made_plain(name: Hashable, expected: object) -> None:
    key: Any = fingerprint(pd.Series([1], name=name))
    assert key[3] == expected
    assert_plain(key)


def test_index_family_covers_every_index_type() -> None:
    assert fingerprint(pd.Index([1, 2, 3], name="n")) == ("Index", 3, "int64", "n")
    assert fingerprint(pd.RangeIndex(5)) == ("Index", 5, "int64", None)
    dates = pd.date_range("2020-01-01", periods=3)
    assert fingerprint(dates) == ("Index", 3, str(dates.dtype), None)
    categories = pd.CategoricalIndex(["a", "b"])
    assert fingerprint(categories) == ("Index", 2, "category", None)
    assert_plain(fingerprint(dates))


def test_multiindex_key_has_level_dtypes_and_names() -> None:
    index = pd.MultiIndex.from_tuples([(2020, "a"), (2021, "b"), (2021, "c")], names=["year", None])
    level_dtypes = tuple(str(level.dtype) for level in index.levels)
    assert fingerprint(index) == ("MultiIndex", 3, level_dtypes, ("year", None))
    assert_plain(fingerprint(index))


def test_categorical_key_has_categories_dtype_count_and_order() -> None:
    values = pd.Categorical(["a", "b", "a", "c"])
    key: Any = fingerprint(values)
    assert key[0] == "Categorical"
    assert key[1] == 4
    assert key[3] == 3
    assert key[4] is False
    ordered = pd.Categorical([1, 2], categories=[1, 2, 3], ordered=True)
    assert fingerprint(ordered) == ("Categorical", 2, "int64", 3, True)
    assert_plain(key)


@pytest.mark.parametrize(
    ("build", "dtype"),
    [
        (lambda: pd.array([1, None], dtype="Int64"), "Int64"),
        (lambda: pd.array([1.5, None], dtype="Float64"), "Float64"),
        (lambda: pd.array([True, None], dtype="boolean"), "boolean"),
        (lambda: pd.array(["a", None], dtype="string"), "string"),
        (lambda: pd.arrays.SparseArray([0, 0, 1]), "Sparse[int64, 0]"),
        (lambda: pd.arrays.IntervalArray.from_breaks([0, 1, 2]), "interval[int64, right]"),
    ],
)
def test_extension_arrays_are_keyed_by_shape_and_dtype(build: Any, dtype: str) -> None:
    array = build()
    assert fingerprint(array) == ("ExtensionArray", (len(array),), dtype)


def test_datetime_extension_array() -> None:
    array = pd.array(pd.date_range("2020-01-01", periods=2))
    assert fingerprint(array) == ("ExtensionArray", (2,), str(array.dtype))


def test_handlers_can_be_called_directly() -> None:
    assert series_fingerprint(pd.Series([1], name="a")) == ("Series", 1, "int64", "a")
    assert index_fingerprint(pd.Index([1.0])) == ("Index", 1, "float64", None)
    assert multiindex_fingerprint(pd.MultiIndex.from_tuples([(1, 2)]))[0] == "MultiIndex"  # type: ignore[index]
    assert categorical_fingerprint(pd.Categorical([1]))[0] == "Categorical"  # type: ignore[index]
    assert extension_array_fingerprint(pd.array([1], dtype="Int64")) == (
        "ExtensionArray",
        (1,),
        "Int64",
    )
    assert dataframe_fingerprint(pd.DataFrame({"a": [1]})) == ("DataFrame", (1, 1), ("int64",))
