"""The executor of docs/writing-an-executor.md, written only from that page, runs the seed
workload's four bodies with sticky and conductor locality intact, and passes the backend
conformance suite."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import string
import sys
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tokengate.conductor import conductor_snapshot, get_active_seed
from tokengate.core import (
    OperationsCoordinator,
    TaskToken,
    conformance,
    plugin_manager,
    task_token_guard,
)

PAGE = Path(__file__).resolve().parents[3] / "docs" / "writing-an-executor.md"
WAIT = 30.0
_LEET = str.maketrans({"A": "4", "E": "3", "I": "1"})


def _example_module() -> types.ModuleType:
    """Run the page's complete example as a module and return it (its plugin unregistered)."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## The complete example", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    module = types.ModuleType("docs_pool_executor")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, str(PAGE), "exec"), module.__dict__)
    finally:
        if plugin_manager().has_plugin("docs-pool-executor"):
            plugin_manager().unregister(name="docs-pool-executor")
    return module


@pytest.fixture(scope="module")
def example() -> Iterator[types.ModuleType]:
    module = _example_module()
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="example-pool")
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- the seed workload's bodies
def cpu_crunch(n: int) -> int:
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


def string_transform(seed: int) -> str:
    letters = random.Random(seed).choices(string.ascii_letters, k=300)
    return "".join(reversed(letters)).upper().translate(_LEET)


def data_sort(size: int) -> list[int]:
    rng = random.Random(size)
    return sorted([rng.randint(0, 100_000) for _ in range(size)])


def hash_chain(seed: str, iterations: int) -> str:
    value = seed.encode()
    for _ in range(iterations):
        value = hashlib.sha256(value).digest()
    return value.hex()


BODIES: tuple[tuple[str, str, Callable[..., Any], Callable[[int], tuple[Any, ...]]], ...] = (
    ("cpu_crunch", "light", cpu_crunch, lambda i: (60 + i % 25,)),
    ("string_transform", "light", string_transform, lambda i: (31 * i,)),
    ("data_sort", "medium", data_sort, lambda i: (400 + i % 300,)),
    ("hash_chain", "heavy", hash_chain, lambda i: (f"wave_seed_{i}", 120 + i % 80)),
)
OPS = {
    name: task_token_guard(f"example.{name}", tags={"weight": weight})(body)
    for name, weight, body, _ in BODIES
}


def test_the_seed_workload_runs_on_the_example_executor(
    example: types.ModuleType, pool: ThreadPoolExecutor
) -> None:
    threads: set[str] = set()

    @task_token_guard("example.where", tags={"hash_policy": "none"})
    def where() -> str:
        return threading.current_thread().name

    async def waves() -> list[Any]:
        results: list[Any] = []
        for size in (4, 8, 16, 32, 64, 128, 256):
            tokens = [OPS[BODIES[i % 4][0]](*BODIES[i % 4][3](i)) for i in range(size)]
            results.extend(await asyncio.gather(*tokens))
            threads.add(await where())
        return results

    factory = example.PoolExecutor(pool, workers=4)
    with OperationsCoordinator(cores=3, executor=factory) as coordinator:
        results = asyncio.run(waves())
        stats = coordinator.stats()
    expected = [
        BODIES[i % 4][2](*BODIES[i % 4][3](i))
        for size in (4, 8, 16, 32, 64, 128, 256)
        for i in range(size)
    ]
    assert results == expected
    assert threads
    assert all(name.startswith("example-pool") for name in threads)
    assert stats.in_flight == 0
    assert dict(coordinator.sticky_snapshot()) == {}


def test_sticky_keys_stay_on_one_core(example: types.ModuleType, pool: ThreadPoolExecutor) -> None:
    release = threading.Event()

    @task_token_guard("example.sticky", tags={"weight": "light"})
    def keyed(key: str) -> str:
        release.wait(WAIT)  # every token of a key stays in flight: its pin holds
        return key

    factory = example.PoolExecutor(pool, workers=4)
    with OperationsCoordinator(cores=4, executor=factory) as coordinator:
        try:
            tokens = [keyed(key) for _ in range(20) for key in ("a", "b", "c", "d", "e")]
            cores: dict[str, set[int | None]] = {}
            for token in tokens:
                cores.setdefault(token.args[0], set()).add(token.core_id)
            assert all(len(found) == 1 for found in cores.values()), cores  # I1
            assert len(coordinator.sticky_snapshot()) == 5
        finally:
            release.set()
        assert [t.get(WAIT) for t in tokens] == [t.args[0] for t in tokens]
        assert dict(coordinator.sticky_snapshot()) == {}


def test_conductor_domains_keep_their_children_on_the_lead_core(
    example: types.ModuleType, pool: ThreadPoolExecutor
) -> None:
    @task_token_guard(
        "example.lead", tags={"external_calls": ["example.data_sort", "example.hash_chain"]}
    )
    def lead(i: int) -> tuple[str | None, list[TaskToken[Any]]]:
        children = [OPS["data_sort"](400 + i), OPS["hash_chain"](f"lead_{i}", 10)]
        return get_active_seed(), children

    factory = example.PoolExecutor(pool, workers=4)
    with OperationsCoordinator(cores=4, executor=factory) as coordinator:
        leads = [lead(i) for i in range(16)]
        for token in leads:
            seed, children = token.get(WAIT)
            assert seed is not None
            assert seed == token.conductor_seed
            for child in children:
                child.get(WAIT)
                assert child.conductor_seed == seed
                assert child.core_id == token.core_id
        assert len({t.conductor_seed for t in leads}) == 16
        assert dict(conductor_snapshot(coordinator)) == {}


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__)
def test_the_example_executor_passes_the_conformance_suite(
    example: types.ModuleType, pool: ThreadPoolExecutor, check: Callable[..., None]
) -> None:
    factory = example.PoolExecutor(pool, workers=4)

    def make(**settings: Any) -> OperationsCoordinator:
        return OperationsCoordinator(executor=factory, stop_timeout=30, **settings)

    check(make, concurrency=4)
