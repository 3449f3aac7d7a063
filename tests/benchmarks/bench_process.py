"""Process domains, measured (reports only; asserts nothing).

1. Round-trip overhead of a no-op process-domain token (``token.get()``) against
   ``ProcessPoolExecutor(max_workers=1).submit(...).result()`` in the same process: median
   microseconds per call, sequential (one call at a time) and batched (submit N, then wait).
2. Throughput on CPU-heavy bodies (a pure-Python loop of several milliseconds), half HEAVY
   (core 1) and half MEDIUM (core 2) on a 2-core coordinator: process domains against thread
   domains. SPEC target: at least 1.8x on 2 cores.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_process.py [--calls 400] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard

FREE = {"hash_policy": "none"}


def noop() -> None:
    """The empty body."""


def crunch(n: int) -> int:
    """A pure-Python CPU loop (holds the GIL all along)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


noop_process = task_token_guard(
    "bench_noop_process", tags={**FREE, "process_pool": True, "weight": "heavy"}
)(noop)
crunch_heavy_process = task_token_guard(
    "bench_crunch_heavy_process", tags={**FREE, "process_pool": True, "weight": "heavy"}
)(crunch)
crunch_medium_process = task_token_guard(
    "bench_crunch_medium_process", tags={**FREE, "process_pool": True, "weight": "medium"}
)(crunch)
crunch_heavy_thread = task_token_guard(
    "bench_crunch_heavy_thread", tags={**FREE, "weight": "heavy"}
)(crunch)
crunch_medium_thread = task_token_guard(
    "bench_crunch_medium_thread", tags={**FREE, "weight": "medium"}
)(crunch)


def _per_call_us(elapsed: float, calls: int) -> float:
    return elapsed / calls * 1e6


def _time_sequential_tokens(calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        noop_process().get()
    return _per_call_us(time.perf_counter() - start, calls)


def _time_batched_tokens(calls: int) -> float:
    start = time.perf_counter()
    tokens = [noop_process() for _ in range(calls)]
    for token in tokens:
        token.get()
    return _per_call_us(time.perf_counter() - start, calls)


def _time_sequential_pool(pool: ProcessPoolExecutor, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        pool.submit(noop).result()
    return _per_call_us(time.perf_counter() - start, calls)


def _time_batched_pool(pool: ProcessPoolExecutor, calls: int) -> float:
    start = time.perf_counter()
    futures = [pool.submit(noop) for _ in range(calls)]
    for future in futures:
        future.result()
    return _per_call_us(time.perf_counter() - start, calls)


def measure_round_trips(calls: int, repeats: int) -> dict[str, float]:
    """Median µs per no-op call for each (executor, mode), alternating the two executors."""
    samples: dict[str, list[float]] = {
        "tokengate sequential": [],
        "pool sequential": [],
        "tokengate batched": [],
        "pool batched": [],
    }
    with (
        OperationsCoordinator(cores=2, workers_per_core=4),
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        noop_process().get()  # start the worker processes before timing
        pool.submit(noop).result()
        for _ in range(repeats):
            samples["tokengate sequential"].append(_time_sequential_tokens(calls))
            samples["pool sequential"].append(_time_sequential_pool(pool, calls))
            samples["pool batched"].append(_time_batched_pool(pool, calls))
            samples["tokengate batched"].append(_time_batched_tokens(calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def _body_ms(n: int) -> float:
    """The fastest of five runs of ``crunch(n)``, in ms (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        crunch(n)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def calibrate(target_ms: float) -> int:
    """A loop length for ``crunch`` that takes about ``target_ms`` here."""
    n = 20_000
    while (elapsed_ms := _body_ms(n)) < 2.0:
        n *= 2
    return max(1, int(n * target_ms / elapsed_ms))


def _run_wave(
    heavy: Callable[[int], TaskToken[int]],
    medium: Callable[[int], TaskToken[int]],
    n: int,
    count: int,
) -> float:
    start = time.perf_counter()
    tokens = [(heavy if i % 2 else medium)(n) for i in range(count)]
    for token in tokens:
        token.get()
    return time.perf_counter() - start


def measure_cpu_throughput(n: int, count: int, repeats: int) -> dict[str, float]:
    """Median tokens/s of CPU-heavy bodies, process domains and thread domains (2 cores)."""
    process_times: list[float] = []
    thread_times: list[float] = []
    with OperationsCoordinator(cores=2, workers_per_core=4):
        crunch_heavy_process(1).get()  # start both worker processes before timing
        crunch_medium_process(1).get()
        for _ in range(repeats):
            thread_times.append(_run_wave(crunch_heavy_thread, crunch_medium_thread, n, count))
            process_times.append(_run_wave(crunch_heavy_process, crunch_medium_process, n, count))
    return {
        "threads tokens/s": count / statistics.median(thread_times),
        "processes tokens/s": count / statistics.median(process_times),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=400, help="no-op calls per sample")
    parser.add_argument("--repeats", type=int, default=7, help="samples per figure (median)")
    parser.add_argument("--body-ms", type=float, default=8.0, help="CPU body length (>= 5)")
    parser.add_argument("--tokens", type=int, default=80, help="CPU-heavy tokens per sample")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both measurements, print medians and ratios, and return them."""
    args = _parse(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_process: {cpus} CPUs available, spawn start method, load average {load:.2f} "
        "(other load on the machine lowers the process/thread ratio)"
    )

    trips = measure_round_trips(args.calls, args.repeats)
    print(f"\n1. no-op round trip, median µs per call ({args.calls} calls x {args.repeats})")
    for mode in ("sequential", "batched"):
        ours, theirs = trips[f"tokengate {mode}"], trips[f"pool {mode}"]
        print(
            f"   {mode:<10}  process-domain token {ours:8.1f} µs   "
            f"ProcessPoolExecutor(1) {theirs:8.1f} µs   "
            f"pool/token {theirs / ours:5.2f}x"
        )

    n = calibrate(args.body_ms)
    body_ms = _body_ms(n)
    cpu = measure_cpu_throughput(n, args.tokens, max(3, args.repeats // 2))
    ratio = cpu["processes tokens/s"] / cpu["threads tokens/s"]
    print(
        f"\n2. CPU-heavy bodies (~{body_ms:.1f} ms each, {args.tokens} tokens, half HEAVY / half "
        "MEDIUM, cores=2)"
    )
    print(f"   thread domains   {cpu['threads tokens/s']:8.1f} tokens/s")
    print(f"   process domains  {cpu['processes tokens/s']:8.1f} tokens/s")
    print(f"   processes/threads {ratio:5.2f}x   (SPEC target >= 1.8x on 2 cores)")
    return {**trips, **cpu, "body_ms": body_ms, "process_vs_thread": ratio}


if __name__ == "__main__":
    main()
