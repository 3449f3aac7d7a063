"""The seed workload of ``tokengate bench``: four operations, round-robin by index.

The undecorated bodies are kept beside the decorated operations so that the baselines (the
``ThreadPoolExecutor`` and the one-thread loop) run exactly the same code as TokenGate.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokengate.core import TaskToken, task_token_guard

__all__ = (
    "OPERATIONS",
    "WARMUP_TOKENS",
    "WAVE_PAUSE",
    "Call",
    "Operation",
    "calls_for_wave",
    "cpu_crunch",
    "cpu_crunch_body",
    "data_sort",
    "data_sort_body",
    "hash_chain",
    "hash_chain_body",
    "noop",
    "noop_body",
    "string_transform",
    "string_transform_body",
    "wave_sizes",
)

#: Tokens submitted (and gathered) on each side before the first measured wave.
WARMUP_TOKENS = 256
#: Seconds between two waves.
WAVE_PAUSE = 0.05
#: Number of waves of the full run: 4, 8, ..., 65,536 tokens (131,068 in all).
FULL_WAVES = 15

_LEET = str.maketrans({"A": "4", "E": "3", "I": "1"})


def cpu_crunch_body(n: int) -> int:
    """Sum of the primes below ``n``, by trial division."""
    total = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            total += k
    return total


def string_transform_body(seed: int) -> str:
    """300 random letters from ``random.Random(seed)``, reversed, upper-cased, A→4 E→3 I→1."""
    letters = random.Random(seed).choices(string.ascii_letters, k=300)
    return "".join(reversed(letters)).upper().translate(_LEET)


def data_sort_body(size: int) -> list[int]:
    """``size`` random ints in [0, 100000] from ``random.Random(size)``, sorted."""
    rng = random.Random(size)
    return sorted([rng.randint(0, 100_000) for _ in range(size)])


def hash_chain_body(seed: str, iterations: int) -> str:
    """SHA-256 applied ``iterations`` times to ``seed``; the last digest in hex."""
    value = seed.encode()
    for _ in range(iterations):
        value = hashlib.sha256(value).digest()
    return value.hex()


def noop_body() -> None:
    """Does nothing: the no-op micro-benchmark measures scheduling alone."""


cpu_crunch = task_token_guard("cpu_crunch", tags={"weight": "light"})(cpu_crunch_body)
string_transform = task_token_guard("string_transform", tags={"weight": "light"})(
    string_transform_body
)
data_sort = task_token_guard("data_sort", tags={"weight": "medium"})(data_sort_body)
hash_chain = task_token_guard("hash_chain", tags={"weight": "heavy"})(hash_chain_body)
noop = task_token_guard("noop")(noop_body)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the workload.

    Attributes:
        name: the operation type.
        weight: its weight tag.
        body: the undecorated function (what the baselines run).
        submit: the decorated function (what TokenGate runs).
        arguments: the arguments of call number ``i``.
    """

    name: str
    weight: str
    body: Callable[..., Any]
    submit: Callable[..., TaskToken[Any]]
    arguments: Callable[[int], tuple[Any, ...]]


#: The four operations, in round-robin order.
OPERATIONS: tuple[Operation, ...] = (
    Operation("cpu_crunch", "light", cpu_crunch_body, cpu_crunch, lambda i: (60 + i % 25,)),
    Operation(
        "string_transform", "light", string_transform_body, string_transform, lambda i: (31 * i,)
    ),
    Operation("data_sort", "medium", data_sort_body, data_sort, lambda i: (400 + i % 300,)),
    Operation(
        "hash_chain",
        "heavy",
        hash_chain_body,
        hash_chain,
        lambda i: (f"wave_seed_{i}", 120 + i % 80),
    ),
)


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a wave: the operation and its arguments."""

    operation: Operation
    args: tuple[Any, ...]


def calls_for_wave(size: int, operations: tuple[Operation, ...] | None = None) -> list[Call]:
    """The calls of a wave of ``size`` tokens: operation ``i % 4`` with its arguments for ``i``.

    Built before a wave is timed, so every side runs the same calls and none pays for making
    the arguments.
    """
    ops = OPERATIONS if operations is None else operations
    count = len(ops)
    return [Call(ops[i % count], ops[i % count].arguments(i)) for i in range(size)]


def wave_sizes(waves: int = FULL_WAVES) -> list[int]:
    """Wave sizes ``4 * 2**k`` for the first ``waves`` waves (at most 15)."""
    if not 1 <= waves <= FULL_WAVES:
        raise ValueError(f"waves must be between 1 and {FULL_WAVES}, not {waves}")
    return [4 * 2**k for k in range(waves)]
