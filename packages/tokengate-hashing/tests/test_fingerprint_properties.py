"""Property tests: plain-data fingerprints are hashable, deterministic, process-independent."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Hashable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokengate.hashing import fast_make_hashable, make_hashable

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
hashable_scalars = scalars
plain_data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashable_scalars, children, max_size=5)
        | st.sets(hashable_scalars, max_size=5)
        | st.frozensets(hashable_scalars, max_size=5)
    ),
    max_leaves=30,
)


def rebuilt(value: Any) -> Any:
    """An equal deep copy with every dict rebuilt in reverse insertion order."""
    if isinstance(value, dict):
        return {key: rebuilt(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [rebuilt(item) for item in value]
    if isinstance(value, tuple):
        return tuple(rebuilt(item) for item in value)
    if isinstance(value, set):
        members = list(value)
        members.reverse()
        return set(members)
    return value


@given(plain_data)
def test_fingerprint_is_hashable_and_deterministic(value: Any) -> None:
    first = make_hashable(value)
    hash(first)
    assert make_hashable(value) == first


@given(plain_data)
def test_equal_inputs_give_equal_fingerprints(value: Any) -> None:
    copy = rebuilt(value)
    assert copy == value
    assert make_hashable(copy) == make_hashable(value)
    assert hash(make_hashable(copy)) == hash(make_hashable(value))


@given(plain_data)
def test_fast_variant_agrees_on_plain_data(value: Any) -> None:
    assert fast_make_hashable(value) == make_hashable(value)


@settings(max_examples=50)
@given(st.dictionaries(scalars, scalars, min_size=1, max_size=8))
def test_dict_fingerprint_ignores_insertion_order(value: dict[Any, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert make_hashable(reordered) == make_hashable(value)


CORPUS_SOURCE = """
corpus = [
    None, True, 3, -2.5, "text", b"bytes",
    [1, "a", None], (1, [2, 3]), {"b": 1, "a": [1, 2]},
    {"x", "y", "z", "w"}, frozenset({"p", "q"}), {1: "a", "b": 2, (1, 2): 3, None: 4},
    [{"k": {"s", "t", "u"}}, {"v": [{"w": ("x", {"y"})}]}],
    {frozenset({"a", "b"}): [1], frozenset({"c"}): {"d": {"e", "f"}}},
    {"set": {"alpha", "beta", "gamma", 1, 2.5, None, b"z"}},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep", {"s", "t"}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]
"""


def _child_fingerprints(seed: str) -> list[Hashable]:
    program = textwrap.dedent(
        f"""
        import pickle, sys
        from tokengate.hashing import make_hashable
        {textwrap.indent(CORPUS_SOURCE, "        ").strip()}
        sys.stdout.buffer.write(pickle.dumps([make_hashable(item) for item in corpus]))
        """
    )
    environment = {**os.environ, "PYTHONHASHSEED": seed}
    completed = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, check=True, env=environment
    )
    result: list[Hashable] = pickle.loads(completed.stdout)
    return result


def test_fingerprints_are_equal_across_processes_with_different_hash_seeds() -> None:
    namespace: dict[str, Any] = {}
    exec(CORPUS_SOURCE, namespace)
    local = [make_hashable(item) for item in namespace["corpus"]]
    first = _child_fingerprints("1")
    second = _child_fingerprints("4242")
    assert first == local
    assert second == local
    # The seeds really differ: string hashes disagree between the two children.
    probe = "import sys; sys.stdout.write(str(hash('tokengate')))"
    hashes = {
        subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            text=True,
        ).stdout
        for seed in ("1", "4242")
    }
    assert len(hashes) == 2
