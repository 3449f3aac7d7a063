"""Soak runs (``make soak``, not part of ``make test``): volume without losses or leaks.

* The full SPEC §8 bench workload — a 256-token warm-up, then 15 waves doubling from 4 to
  65,536 tokens (131,068 tokens) of the four seed operations, each wave submitted and then
  gathered with ``asyncio.gather`` — ends with every token ``COMPLETED`` with the right
  result, and empty registries.
* 1,000,000 no-op tokens in waves of 10,000 (submitted, gathered, dropped): none lost, and the
  resident memory after 1,000,000 tokens stays within ``RSS_GROWTH_LIMIT`` of the memory
  after 100,000.

Why that bound: everything a coordinator keeps per token is bounded (10,000 execution
records by default, per-operation metrics, the sticky and token tables drain to empty), and
it is full after the first 100,000 tokens. Between 100,000 and 1,000,000 tokens nothing may
grow; 24 MB leaves room for allocator noise, while a leak of a single small int (28 bytes)
per token would already exceed it over those 900,000 tokens.

Figures are printed in pytest's summary; set ``TOKENGATE_SOAK_REPORT=path.json`` to save them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.reliability_checks import SOAK_FIGURES, assert_quiescent
from tokengate.bench._workload import (
    OPERATIONS,
    WARMUP_TOKENS,
    WAVE_PAUSE,
    Call,
    calls_for_wave,
    wave_sizes,
)
from tokengate.core import OperationsCoordinator, TaskToken, TokenState, task_token_guard

MB = 1024 * 1024
#: Tokens of the full bench workload (15 waves, 4 → 65,536).
BENCH_TOKENS = 131_068
NOOP_TOKENS = 1_000_000
NOOP_WAVE = 10_000
#: Allowed resident-memory growth between 100,000 and 1,000,000 no-op tokens.
RSS_GROWTH_LIMIT = 24 * MB
#: Every 97th result is recomputed with the undecorated body and compared.
CHECK_EVERY = 97

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc (Linux)"
)


def resident_bytes() -> int:
    """The resident set size of this process now (after a full garbage collection)."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def live_tokens() -> int:
    """How many ``TaskToken`` objects are still alive in this process."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, TaskToken))


def peak_resident_bytes() -> int:
    """The peak resident set size of this process so far (``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _wave(calls: list[Call]) -> tuple[list[TaskToken[Any]], list[Any]]:
    tokens = [call.operation.submit(*call.args) for call in calls]
    results = await asyncio.gather(*tokens, return_exceptions=True)
    return tokens, results


async def _bench_workload() -> dict[str, int]:
    counts = {"submitted": 0, "completed": 0, "failed": 0, "lost": 0, "checked": 0}
    warm_tokens, _ = await _wave(calls_for_wave(WARMUP_TOKENS))
    assert all(t.state is TokenState.COMPLETED for t in warm_tokens)
    for size in wave_sizes():
        calls = calls_for_wave(size)
        tokens, results = await _wave(calls)
        counts["submitted"] += len(tokens)
        for index, (call, token, result) in enumerate(zip(calls, tokens, results, strict=True)):
            if not token.done():
                counts["lost"] += 1
            elif token.state is TokenState.COMPLETED:
                counts["completed"] += 1
                if index % CHECK_EVERY == 0:
                    assert result == call.operation.body(*call.args), token
                    counts["checked"] += 1
            else:
                counts["failed"] += 1
        del tokens, results, calls
        await asyncio.sleep(WAVE_PAUSE)  # the workload's pause between waves (SPEC §8)
    return counts


def test_full_bench_workload_loses_no_token() -> None:
    assert [op.name for op in OPERATIONS] == [
        "cpu_crunch",
        "string_transform",
        "data_sort",
        "hash_chain",
    ]
    assert sum(wave_sizes()) == BENCH_TOKENS
    before = resident_bytes()
    coordinator = OperationsCoordinator().start()
    started = time.perf_counter()
    try:
        counts = asyncio.run(_bench_workload())
        assert_quiescent(coordinator)
    finally:
        coordinator.stop(timeout=60)
    elapsed = time.perf_counter() - started
    assert_quiescent(coordinator)
    stats = coordinator.stats()
    SOAK_FIGURES["bench: tokens submitted (after 256 warm-up)"] = counts["submitted"]
    SOAK_FIGURES["bench: completed"] = counts["completed"]
    SOAK_FIGURES["bench: failed"] = counts["failed"]
    SOAK_FIGURES["bench: lost"] = counts["lost"]
    SOAK_FIGURES["bench: results recomputed and compared"] = counts["checked"]
    SOAK_FIGURES["bench: wall time incl. wave pauses (s)"] = round(elapsed, 1)
    retained = live_tokens()
    SOAK_FIGURES["bench: tokens still alive after the run"] = retained
    SOAK_FIGURES["bench: RSS before (MB)"] = round(before / MB, 1)
    SOAK_FIGURES["bench: RSS after (MB)"] = round(resident_bytes() / MB, 1)
    SOAK_FIGURES["bench: peak RSS of the process so far (MB)"] = round(
        peak_resident_bytes() / MB, 1
    )
    assert counts["submitted"] == BENCH_TOKENS
    assert counts["lost"] == 0
    assert counts["failed"] == 0
    assert counts["completed"] == BENCH_TOKENS
    assert stats.by_state["completed"] == BENCH_TOKENS + WARMUP_TOKENS
    assert stats.in_flight == 0
    assert retained == 0, f"{retained} tokens are still referenced after the run"


@task_token_guard("reliability.soak.noop", tags={"weight": "light", "hash_policy": "none"})
def soak_noop() -> None:
    """Does nothing: the soak measures what scheduling leaves behind."""


async def _noop_waves(waves: int) -> tuple[int, int]:
    completed = lost = 0
    for _ in range(waves):
        tokens = [soak_noop() for _ in range(NOOP_WAVE)]
        await asyncio.gather(*tokens)
        for token in tokens:
            if not token.done():
                lost += 1
            elif token.state is TokenState.COMPLETED:
                completed += 1
        del tokens
    return completed, lost


def test_million_noop_tokens_memory_stays_bounded() -> None:
    coordinator = OperationsCoordinator().start()
    started = time.perf_counter()
    try:
        first_waves = 100_000 // NOOP_WAVE
        completed, lost = asyncio.run(_noop_waves(first_waves))
        assert_quiescent(coordinator)
        after_100k = resident_bytes()
        more, more_lost = asyncio.run(_noop_waves(NOOP_TOKENS // NOOP_WAVE - first_waves))
        completed += more
        lost += more_lost
        assert_quiescent(coordinator)
        after_1m = resident_bytes()
    finally:
        coordinator.stop(timeout=60)
    elapsed = time.perf_counter() - started
    assert_quiescent(coordinator)
    growth = after_1m - after_100k
    SOAK_FIGURES["noop: tokens"] = completed + lost
    SOAK_FIGURES["noop: completed"] = completed
    SOAK_FIGURES["noop: lost"] = lost
    SOAK_FIGURES["noop: wall time (s)"] = round(elapsed, 1)
    SOAK_FIGURES["noop: RSS after 100,000 tokens (MB)"] = round(after_100k / MB, 1)
    SOAK_FIGURES["noop: RSS after 1,000,000 tokens (MB)"] = round(after_1m / MB, 1)
    SOAK_FIGURES["noop: RSS growth 100k -> 1M (MB)"] = round(growth / MB, 2)
    SOAK_FIGURES["noop: RSS growth per token 100k -> 1M (bytes)"] = round(
        growth / (NOOP_TOKENS - 100_000), 2
    )
    retained = live_tokens()
    SOAK_FIGURES["noop: tokens still alive after the run"] = retained
    assert retained == 0
    assert lost == 0
    assert completed == NOOP_TOKENS
    assert coordinator.stats().by_state["completed"] == NOOP_TOKENS
    assert growth < RSS_GROWTH_LIMIT, (
        f"resident memory grew by {growth / MB:.1f} MB between 100,000 and 1,000,000 tokens"
    )
