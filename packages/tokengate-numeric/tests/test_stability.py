"""Fingerprints are plain Python values, equal in every process (whatever PYTHONHASHSEED)."""

from __future__ import annotations

import datetime
import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Hashable
from typing import Any

import pytest

pytest.importorskip("numpy")
pytest.importorskip("pandas")
pytest.importorskip("PIL")

HAS_TORCH = importlib.util.find_spec("torch") is not None

# Built identically here and in the child process.
BUILD = textwrap.dedent(
    """
    import importlib.util
    import warnings

    import numpy as np
    import pandas as pd
    from PIL import Image


    def build(with_torch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            matrix = np.matrix([[1, 2], [3, 4]])
        objects = [
            np.arange(12, dtype=np.float64).reshape(3, 4),
            np.zeros((2,), dtype=[("a", "<i4"), ("b", "<f8")]),
            np.array(["x", None], dtype=object),
            matrix,
            np.float32(1.5),
            np.int64(7),
            np.datetime64("2020-01-01"),
            pd.DataFrame({"i": [1, 2], "s": ["a", "b"], "n": pd.array([1, None], dtype="Int64")}),
            pd.Series([1.5, 2.5], name=("price", np.int64(2))),
            pd.Index(["a", "b"], name="letters"),
            pd.MultiIndex.from_tuples([(2020, "a"), (2021, "b")], names=["year", None]),
            pd.Categorical(["a", "b", "a"], ordered=True),
            pd.array([True, None], dtype="boolean"),
            Image.new("RGB", (6, 4)),
            Image.new("I;16", (1, 9)),
            {"nested": [np.zeros(3, dtype=np.int8), Image.new("L", (2, 2))]},
        ]
        if with_torch:
            import torch

            objects += [
                torch.zeros(2, 3),
                torch.tensor(5, dtype=torch.int64),
                torch.nn.Parameter(torch.ones(4)),
                torch.zeros(2, device="meta", dtype=torch.bfloat16),
            ]
        return objects
    """
)

CHILD = BUILD + textwrap.dedent(
    """
    import sys

    import tokengate.numeric._plugin
    from tokengate.core import plugin_manager
    from tokengate.hashing import make_hashable

    host = plugin_manager()
    if not host.has_plugin("numeric"):
        host.register(tokengate.numeric._plugin, name="numeric")
    for obj in build(sys.argv[1] == "torch"):
        print(repr(make_hashable(obj)))
    """
)


@functools.cache
def fingerprints_here() -> list[Hashable]:
    from tokengate.hashing import HandlerRegistry, make_hashable
    from tokengate.numeric import register_handlers

    registry = HandlerRegistry()
    register_handlers(registry)
    namespace: dict[str, Any] = {}
    exec(BUILD, namespace)
    return [make_hashable(obj, registry=registry) for obj in namespace["build"](HAS_TORCH)]


def assert_plain(value: object) -> None:
    if type(value) is tuple:
        for item in value:
            assert_plain(item)
        return
    # numpy datetime64 scalars become their Python value: a stdlib date or datetime.
    plain = {int, float, str, bytes, bool, datetime.date, datetime.datetime, datetime.timedelta}
    assert value is None or type(value) in plain, repr(value)


def test_every_fingerprint_is_made_of_plain_python_values() -> None:
    for fingerprint in fingerprints_here():
        assert_plain(fingerprint)


def test_fingerprints_are_equal_across_processes() -> None:
    expected = [repr(fingerprint) for fingerprint in fingerprints_here()]
    # A fixed seed in the child, a random one here: str hashes differ between the two.
    env = dict(os.environ, PYTHONHASHSEED="4242")
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, "torch" if HAS_TORCH else "no-torch"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == expected
