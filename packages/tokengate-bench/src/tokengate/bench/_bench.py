"""``tokengate bench``: the maximum-concurrency workload and the no-op micro-benchmark.

Three sides run the same waves of the same bodies in one process, alternating wave by wave so
that drift (a noisy neighbour, frequency scaling) hits every side alike:

* ``tokengate`` — the decorated operations on an ``OperationsCoordinator`` (default config),
  each wave submitted and then ``asyncio.gather``-ed;
* ``threadpool`` — ``concurrent.futures.ThreadPoolExecutor`` (default size) with
  ``asyncio.wrap_future`` and ``asyncio.gather``;
* ``loop`` — a plain loop over the bodies in the event loop's thread.

With ``--executor process`` (or ``auto``) the TokenGate side runs every operation on that
executor and the pool side is a ``concurrent.futures.ProcessPoolExecutor`` (one process per
usable CPU) with ``submit`` + ``asyncio.wrap_future``: ``processpool``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken

from . import _workload
from ._stats import SideSummary, Target, WaveResult, summarize
from ._workload import Call

__all__ = (
    "SIDES",
    "BenchOptions",
    "BenchReport",
    "MemoryResult",
    "NoopResult",
    "run_bench",
    "run_noop",
)

TOKENGATE = "tokengate"
THREADPOOL = "threadpool"
PROCESSPOOL = "processpool"
LOOP = "loop"
SIDES = (TOKENGATE, THREADPOOL, LOOP)
#: Executors ``--executor`` accepts for the waves (``dask`` has its own runner).
WAVE_EXECUTORS = ("thread", "process", "auto")
SIDE_TITLES = {
    TOKENGATE: "TokenGate",
    THREADPOOL: "ThreadPoolExecutor",
    PROCESSPOOL: "ProcessPoolExecutor",
    LOOP: "one-thread loop",
}

#: The targets: threads against the pool and the one-thread loop (the GIL ceiling), CPU per
#: token against the loop's; processes against the process pool and the loop (N CPUs allow
#: about N times the loop).
TARGET_VS_THREADPOOL = 2.0
TARGET_VS_LOOP = 0.9
TARGET_CPU_VS_LOOP = 1.1
TARGET_PROCESS_VS_POOL = 3.0
TARGET_PROCESS_VS_LOOP = 1.5
TARGET_AUTO_VS_LOOP = 1.4
TARGET_NOOP = 3.0
#: No-op process tokens: at most this many µs each, amortised over a burst.
TARGET_NOOP_PROCESS_US = 20.0
TARGET_MEMORY = 0.8

_perf = time.perf_counter
_cpu = time.process_time


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run.

    Attributes:
        waves: how many of the 15 waves (the first ``waves``).
        baseline: also run the ``threadpool`` and ``loop`` sides.
        only: run this one side alone (used for the memory measurement).
        warmup: calls per side before the first wave.
        pause: seconds between waves.
        wave_timeout: seconds a wave may take before its missing calls count as failed.
        executor: where TokenGate runs the bodies (``thread``, ``process`` or ``auto``); with
            ``process``/``auto`` the pool baseline is a ``ProcessPoolExecutor``.
    """

    waves: int = _workload.FULL_WAVES
    baseline: bool = False
    only: str | None = None
    warmup: int = _workload.WARMUP_TOKENS
    pause: float = _workload.WAVE_PAUSE
    wave_timeout: float = 600.0
    executor: str = "thread"

    def __post_init__(self) -> None:
        if self.executor not in WAVE_EXECUTORS:
            raise ValueError(
                f"executor {self.executor!r} cannot run the waves; choose one of "
                f"{', '.join(WAVE_EXECUTORS)}"
            )

    @property
    def pool(self) -> str:
        """The pool baseline of this run: ``threadpool`` or ``processpool``."""
        return THREADPOOL if self.executor == "thread" else PROCESSPOOL

    @property
    def sides(self) -> tuple[str, ...]:
        """The sides this run measures."""
        if self.only is not None:
            return (self.only,)
        return (TOKENGATE, self.pool, LOOP) if self.baseline else (TOKENGATE,)


@dataclass(frozen=True, slots=True)
class NoopResult:
    """The no-op micro-benchmark: medians of several alternating rounds.

    Attributes:
        tokens: no-op calls per round.
        rounds: rounds per side.
        tokengate_rates: calls/s of each TokenGate round.
        threadpool_rates: calls/s of each round of the pool baseline (a
            ``ThreadPoolExecutor``; a ``ProcessPoolExecutor`` for the process executor).
        failed: calls that did not return None.
        executor: where TokenGate ran the no-op bodies (``process``: in worker processes).
    """

    tokens: int
    rounds: int
    tokengate_rates: tuple[float, ...]
    threadpool_rates: tuple[float, ...]
    failed: int
    executor: str = "thread"

    @property
    def pool_title(self) -> str:
        """The pool baseline's name."""
        return SIDE_TITLES[PROCESSPOOL if self.executor == "process" else THREADPOOL]

    @property
    def us_per_token(self) -> float:
        """Median µs per TokenGate token, amortised over a burst."""
        return 1e6 / self.tokengate if self.tokengate else 0.0

    @property
    def tokengate(self) -> float:
        """Median calls/s of TokenGate."""
        return statistics.median(self.tokengate_rates) if self.tokengate_rates else 0.0

    @property
    def threadpool(self) -> float:
        """Median calls/s of the ThreadPoolExecutor."""
        return statistics.median(self.threadpool_rates) if self.threadpool_rates else 0.0

    @property
    def target(self) -> Target:
        """TokenGate / ThreadPoolExecutor against its target (>= 3x); for process tokens the
        budget of 20 µs per token over the measured µs per token (>= 1x)."""
        if self.executor == "process":
            us = self.us_per_token
            return Target(
                f"no-op process tokens: {TARGET_NOOP_PROCESS_US:.0f} us / {us:.1f} us per token "
                f"(bursts of {self.tokens:,})",
                TARGET_NOOP_PROCESS_US / us if us else 0.0,
                1.0,
            )
        ratio = self.tokengate / self.threadpool if self.threadpool else 0.0
        return Target("no-op tokens: TokenGate / ThreadPoolExecutor", ratio, TARGET_NOOP)

    def as_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready."""
        return {
            "tokens": self.tokens,
            "rounds": self.rounds,
            "failed": self.failed,
            "executor": self.executor,
            "pool": self.pool_title,
            "tokengate_us_per_token": self.us_per_token,
            "tokengate_tokens_per_s": self.tokengate,
            "threadpool_tokens_per_s": self.threadpool,
            "tokengate_rounds": list(self.tokengate_rates),
            "threadpool_rounds": list(self.threadpool_rates),
            "ratio": self.target.value,
        }


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Peak memory of each side, each run alone in a fresh subprocess.

    Attributes:
        peak_rss_mb: side → peak resident set size of its process (MiB).
        start_rss_mb: side → resident set size before its first wave (MiB).
        retained_blocks: side → memory blocks still allocated after the run and a full
            collection, minus those before it (``sys.getallocatedblocks``).
        errors: sides whose subprocess failed, with what it said.
    """

    peak_rss_mb: dict[str, float]
    start_rss_mb: dict[str, float]
    retained_blocks: dict[str, int]
    errors: list[str] = field(default_factory=list)

    def growth_mb(self, side: str) -> float:
        """Peak minus start: what the waves themselves needed."""
        return self.peak_rss_mb[side] - self.start_rss_mb[side]

    def overhead_mb(self, side: str) -> float | None:
        """Growth beyond the one-thread loop's, which holds only the results of a wave: what
        scheduling the calls cost (None without the loop side)."""
        if LOOP not in self.peak_rss_mb:
            return None
        return self.growth_mb(side) - self.growth_mb(LOOP)

    @property
    def target(self) -> Target | None:
        """TokenGate's peak growth / the ThreadPoolExecutor's against its target (<= 0.8x)."""
        if TOKENGATE not in self.peak_rss_mb or THREADPOOL not in self.peak_rss_mb:
            return None
        base = self.growth_mb(THREADPOOL)
        ratio = self.growth_mb(TOKENGATE) / base if base > 0 else 0.0
        return Target(
            "peak memory growth: TokenGate / ThreadPoolExecutor",
            ratio,
            TARGET_MEMORY,
            higher_is_better=False,
        )

    def as_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready."""
        return {
            "peak_rss_mb": self.peak_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "growth_mb": {side: self.growth_mb(side) for side in self.peak_rss_mb},
            "overhead_over_loop_mb": {side: self.overhead_mb(side) for side in self.peak_rss_mb},
            "retained_blocks": self.retained_blocks,
            "errors": self.errors,
        }


@dataclass(slots=True)
class BenchReport:
    """Everything one ``tokengate bench`` run measured.

    Attributes:
        options: what was run.
        sides: side → its summary (waves included).
        wall_s: real wall time of the whole run.
        cores: core domains of the coordinator.
        workers_per_core: workers per core domain.
        threadpool_workers: threads of the ThreadPoolExecutor.
        noop: the no-op micro-benchmark, when it ran.
        memory: per-side peak memory, when it was measured.
        problems: what failed (empty when the run is sound).
        rss: resident memory of this process (MiB) at the start and end, and its peak.
        load_average: the machine's 1-minute load average at the start and the end (other
            processes compete for the same CPUs: read every figure with it).
    """

    options: BenchOptions
    sides: dict[str, SideSummary] = field(default_factory=dict)
    wall_s: float = 0.0
    cores: int = 0
    workers_per_core: int = 0
    threadpool_workers: int = 0
    noop: NoopResult | None = None
    memory: MemoryResult | None = None
    problems: list[str] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no call failed or was lost and nothing else went wrong."""
        return not self.problems

    def targets(self) -> list[Target]:
        """The target ratios this run can compute."""
        out: list[Target] = []
        executor = self.options.executor
        pool_name = self.options.pool
        tg = self.sides.get(TOKENGATE)
        pool = self.sides.get(pool_name)
        loop = self.sides.get(LOOP)
        vs_pool = TARGET_VS_THREADPOOL if executor == "thread" else TARGET_PROCESS_VS_POOL
        vs_loop = {
            "thread": TARGET_VS_LOOP,
            "process": TARGET_PROCESS_VS_LOOP,
            "auto": TARGET_AUTO_VS_LOOP,
        }[executor]
        if tg is not None and pool is not None and pool.end_to_end:
            out.append(
                Target(
                    f"end to end: TokenGate ({executor}) / {SIDE_TITLES[pool_name]}",
                    tg.end_to_end / pool.end_to_end,
                    vs_pool,
                )
            )
        if tg is not None and loop is not None and loop.end_to_end:
            out.append(
                Target(
                    f"end to end: TokenGate ({executor}) / one-thread loop",
                    tg.end_to_end / loop.end_to_end,
                    vs_loop,
                )
            )
        if executor == "thread" and tg is not None and loop is not None and loop.cpu_us_per_token:
            out.append(
                Target(
                    "CPU per token: TokenGate / one-thread loop",
                    tg.cpu_us_per_token / loop.cpu_us_per_token,
                    TARGET_CPU_VS_LOOP,
                    higher_is_better=False,
                )
            )
        if self.noop is not None:
            out.append(self.noop.target)
        if self.memory is not None and self.memory.target is not None:
            out.append(self.memory.target)
        return out

    def ratios(self) -> dict[str, float]:
        """TokenGate / each baseline for the main figures (informational)."""
        tg = self.sides.get(TOKENGATE)
        out: dict[str, float] = {}
        if tg is None:
            return out
        for name in (self.options.pool, LOOP):
            other = self.sides.get(name)
            if other is None:
                continue
            for figure, mine, theirs in (
                ("end_to_end", tg.end_to_end, other.end_to_end),
                ("sustained", tg.sustained, other.sustained),
                ("peak", tg.peak, other.peak),
                ("latency_p50", tg.latency_ms(50), other.latency_ms(50)),
                ("latency_p99", tg.latency_ms(99), other.latency_ms(99)),
                ("cpu_per_token", tg.cpu_us_per_token, other.cpu_us_per_token),
            ):
                out[f"{figure}_vs_{name}"] = mine / theirs if theirs else 0.0
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every figure of the run, JSON-ready."""
        return {
            "meta": {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "cpus": machine_cpus(),
                "timestamp": time.time(),
                "wall_s": self.wall_s,
                "load_average": self.load_average,
            },
            "config": {
                "waves": self.options.waves,
                "wave_sizes": _workload.wave_sizes(self.options.waves),
                "warmup_tokens": self.options.warmup,
                "pause_s": self.options.pause,
                "sides": list(self.options.sides),
                "cores": self.cores,
                "workers_per_core": self.workers_per_core,
                "threadpool_workers": self.threadpool_workers,
            },
            "sides": {name: side.as_dict() for name, side in self.sides.items()},
            "ratios": self.ratios(),
            "targets": [t.as_dict() for t in self.targets()],
            "noop": self.noop.as_dict() if self.noop is not None else None,
            "memory": self.memory.as_dict() if self.memory is not None else None,
            "rss": self.rss,
            "verdict": {
                "ok": self.ok,
                "failed_tokens": sum(s.failed for s in self.sides.values())
                + (self.noop.failed if self.noop is not None else 0),
                "problems": list(self.problems),
            },
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`as_dict` to ``path``; returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.as_dict(), indent=2))
        return target


# ---------------------------------------------------------------------- one wave per side
async def _settle(awaitables: Sequence[Any], timeout: float) -> tuple[list[Any] | None, float]:
    """Gather with a safety timeout; returns (results or None on timeout, end stamp)."""
    gathered = asyncio.gather(*awaitables, return_exceptions=True)
    try:
        results = await asyncio.wait_for(asyncio.shield(gathered), timeout)
    except TimeoutError:
        gathered.cancel()
        return None, _perf()
    return results, _perf()


def _sorted_array(values: Iterable[float]) -> array[float]:
    """Sorted latencies in one flat buffer (no float object per call is kept)."""
    return array("d", sorted(values))


def _count(results: Sequence[Any] | None, size: int) -> tuple[int, str | None]:
    if results is None:
        return size, f"the wave did not finish within its timeout ({size} calls counted lost)"
    failed = 0
    first: str | None = None
    for result in results:
        if isinstance(result, BaseException):
            failed += 1
            if first is None:
                first = repr(result)
    return failed, first


async def tokengate_wave(calls: Sequence[Call], wave: int, timeout: float) -> WaveResult:
    """Submit every call as a token, then gather them."""
    cpu = _cpu()
    start = _perf()
    tokens: list[TaskToken[Any]] = [call.operation.submit(*call.args) for call in calls]
    submitted = _perf()
    results, end = await _settle(tokens, timeout)
    cpu = _cpu() - cpu
    failed, first = _count(results, len(calls))
    latencies = _sorted_array(
        t.finished_at - t.created_at if t.finished_at is not None else end - t.created_at
        for t in tokens
    )
    task_s = 0.0
    for t in tokens:
        duration = t.duration
        if duration is not None:
            task_s += duration
    return WaveResult(
        TOKENGATE,
        wave,
        len(calls),
        len(calls) - failed,
        failed,
        submitted - start,
        end - submitted,
        task_s,
        latencies,
        first,
        cpu,
    )


def _timed(body: Callable[..., Any], args: tuple[Any, ...], stamps: list[float], j: int) -> Any:
    """Run a body on a pool thread, stamping its start and end (the baseline's bookkeeping)."""
    stamps[2 * j] = _perf()
    try:
        return body(*args)
    finally:
        stamps[2 * j + 1] = _perf()


async def threadpool_wave(
    pool: ThreadPoolExecutor, calls: Sequence[Call], wave: int, timeout: float
) -> WaveResult:
    """Submit every call to the pool, wrap each future for asyncio, then gather them."""
    loop = asyncio.get_running_loop()
    size = len(calls)
    stamps = [0.0] * (2 * size)
    submitted_at = [0.0] * size
    wrap = asyncio.wrap_future
    submit = pool.submit
    cpu = _cpu()
    start = _perf()
    futures = []
    for j, call in enumerate(calls):
        submitted_at[j] = _perf()
        futures.append(wrap(submit(_timed, call.operation.body, call.args, stamps, j), loop=loop))
    submitted = _perf()
    results, end = await _settle(futures, timeout)
    cpu = _cpu() - cpu
    failed, first = _count(results, size)
    latencies = _sorted_array((stamps[2 * j + 1] or end) - submitted_at[j] for j in range(size))
    task_s = sum(stamps[2 * j + 1] - stamps[2 * j] for j in range(size) if stamps[2 * j + 1])
    return WaveResult(
        THREADPOOL,
        wave,
        size,
        size - failed,
        failed,
        submitted - start,
        end - submitted,
        task_s,
        latencies,
        first,
        cpu,
    )


async def processpool_wave(
    pool: ProcessPoolExecutor, calls: Sequence[Call], wave: int, timeout: float
) -> WaveResult:
    """Submit every call to the process pool, wrap each future for asyncio, then gather.

    The bodies go by reference (no bookkeeping wrapper crosses to the processes); each call's
    end is stamped when its future completes in this process, its duration is not known.
    """
    loop = asyncio.get_running_loop()
    size = len(calls)
    ends = [0.0] * size
    submitted_at = [0.0] * size
    wrap = asyncio.wrap_future
    submit = pool.submit
    cpu = _cpu()
    start = _perf()
    futures = []
    for j, call in enumerate(calls):
        submitted_at[j] = _perf()
        future = submit(call.operation.body, *call.args)
        future.add_done_callback(_stamper(ends, j))
        futures.append(wrap(future, loop=loop))
    submitted = _perf()
    results, end = await _settle(futures, timeout)
    cpu = _cpu() - cpu
    failed, first = _count(results, size)
    latencies = _sorted_array((ends[j] or end) - submitted_at[j] for j in range(size))
    return WaveResult(
        PROCESSPOOL,
        wave,
        size,
        size - failed,
        failed,
        submitted - start,
        end - submitted,
        0.0,
        latencies,
        first,
        cpu,
    )


def _stamper(ends: list[float], j: int) -> Callable[[Future[Any]], None]:
    def stamp(_future: Future[Any]) -> None:
        ends[j] = _perf()

    return stamp


def loop_wave(calls: Sequence[Call], wave: int) -> WaveResult:
    """Run every body in this thread, one after the other."""
    size = len(calls)
    ends = [0.0] * size
    task_s = 0.0
    failed = 0
    first: str | None = None
    # The results are kept until the wave ends, as gather keeps them on the other sides.
    results: list[Any] = []
    keep = results.append
    cpu = _cpu()
    start = _perf()
    for j, call in enumerate(calls):
        began = _perf()
        try:
            keep(call.operation.body(*call.args))
        except Exception as exc:
            keep(exc)
            failed += 1
            if first is None:
                first = repr(exc)
        finished = ends[j] = _perf()
        task_s += finished - began
    end = _perf()
    cpu = _cpu() - cpu
    del results
    # The loop has no submission: every call is issued when the wave starts.
    latencies = _sorted_array(stamp - start for stamp in ends)
    return WaveResult(
        LOOP, wave, size, size - failed, failed, 0.0, end - start, task_s, latencies, first, cpu
    )


# ---------------------------------------------------------------------- the run
class WaveListener:
    """Receives progress while the benchmark runs (the renderer implements it)."""

    def begin(self, sizes: Sequence[int], sides: Sequence[str]) -> None:
        """Before the warm-up."""

    def wave_started(self, wave: int, size: int) -> None:
        """Before the first side of a wave."""

    def side_done(self, result: WaveResult) -> None:
        """After one side of a wave (outside every timed span)."""

    def end(self) -> None:
        """After the last wave."""


class _Sides:
    """The three ways of running a wave, with what each needs."""

    def __init__(self, coordinator: OperationsCoordinator | None, pool: Executor | None) -> None:
        self.coordinator = coordinator
        self.pool = pool

    async def run(self, side: str, calls: Sequence[Call], wave: int, timeout: float) -> WaveResult:
        if side == TOKENGATE:
            return await tokengate_wave(calls, wave, timeout)
        if side == THREADPOOL:
            assert isinstance(self.pool, ThreadPoolExecutor)
            return await threadpool_wave(self.pool, calls, wave, timeout)
        if side == PROCESSPOOL:
            assert isinstance(self.pool, ProcessPoolExecutor)
            return await processpool_wave(self.pool, calls, wave, timeout)
        return loop_wave(calls, wave)


async def _bench_async(options: BenchOptions, report: BenchReport, listener: WaveListener) -> None:
    sides = options.sides
    sizes = _workload.wave_sizes(options.waves)
    coordinator = OperationsCoordinator(executor=options.executor) if TOKENGATE in sides else None
    pool: Executor | None = None
    if THREADPOOL in sides:
        pool = ThreadPoolExecutor()
    elif PROCESSPOOL in sides:
        pool = ProcessPoolExecutor(machine_cpus())
    if coordinator is not None:
        report.cores = coordinator.cores
        report.workers_per_core = coordinator.workers_per_core
        coordinator.start()
    if pool is not None:
        report.threadpool_workers = getattr(pool, "_max_workers", 0)
    runner = _Sides(coordinator, pool)
    waves: dict[str, list[WaveResult]] = {side: [] for side in sides}
    warmup_s: dict[str, float] = {}
    listener.begin(sizes, sides)
    try:
        warm_calls = _workload.calls_for_wave(options.warmup)
        for side in sides:
            began = _perf()
            warm = await runner.run(side, warm_calls, 0, options.wave_timeout)
            warmup_s[side] = _perf() - began
            if warm.failed:
                report.problems.append(
                    f"{SIDE_TITLES[side]}: {warm.failed} warm-up calls failed "
                    f"(first: {warm.first_error})"
                )
        gc.collect()
        report.rss["start_mb"] = _rss_mb()
        for index, size in enumerate(sizes, start=1):
            calls = _workload.calls_for_wave(size)
            listener.wave_started(index, size)
            shift = (index - 1) % len(sides)
            for side in sides[shift:] + sides[:shift]:
                gc.collect()
                await asyncio.sleep(options.pause)
                result = await runner.run(side, calls, index, options.wave_timeout)
                waves[side].append(result)
                listener.side_done(result)
                if result.failed:
                    report.problems.append(
                        f"{SIDE_TITLES[side]} wave {index}: {result.failed} of {result.tokens} "
                        f"calls failed (first: {result.first_error})"
                    )
            del calls
    finally:
        listener.end()
        if coordinator is not None:
            coordinator.stop()
            leftovers = coordinator.stats().in_flight
            if leftovers:
                report.problems.append(f"TokenGate: {leftovers} tokens still in flight at stop")
        if pool is not None:
            pool.shutdown(wait=True)
    pause_s = options.pause * len(sizes)
    for side in sides:
        report.sides[side] = summarize(side, waves[side], warmup_s.get(side, 0.0), pause_s)
    gc.collect()
    report.rss["peak_mb"] = _peak_rss_mb()
    report.rss["end_mb"] = _rss_mb()


def run_bench(
    options: BenchOptions,
    listener: WaveListener | None = None,
    *,
    noop_tokens: int = 0,
    noop_rounds: int = 5,
    memory: bool = False,
) -> BenchReport:
    """Run the benchmark (and, if asked, the no-op micro-benchmark and the memory runs)."""
    report = BenchReport(options)
    report.load_average["start"] = _load_average()
    began = _perf()
    blocks_before = _blocks()
    asyncio.run(_bench_async(options, report, listener or WaveListener()))
    if options.only is not None:
        report.rss["retained_blocks"] = float(_blocks() - blocks_before)
    if noop_tokens > 0:
        report.noop = run_noop(noop_tokens, noop_rounds, executor=options.executor)
        if report.noop.failed:
            report.problems.append(f"no-op benchmark: {report.noop.failed} calls failed")
    if memory:
        report.memory = measure_memory(options)
        report.problems.extend(report.memory.errors)
    report.wall_s = _perf() - began
    report.load_average["end"] = _load_average()
    return report


def _load_average() -> float:
    """The 1-minute load average (-1.0 where unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return -1.0


def machine_cpus() -> int:
    """CPUs this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------------- the no-op micro
async def _noop_tokengate(count: int) -> tuple[float, int]:
    noop = _workload.noop
    start = _perf()
    tokens = [noop() for _ in range(count)]
    results = await asyncio.gather(*tokens, return_exceptions=True)
    elapsed = _perf() - start
    return count / elapsed, sum(1 for r in results if r is not None)


async def _noop_pool(pool: Executor, count: int) -> tuple[float, int]:
    """The peer baseline: ``submit`` + ``asyncio.wrap_future`` on a thread or process pool."""
    loop = asyncio.get_running_loop()
    body = _workload.noop_body
    wrap = asyncio.wrap_future
    submit = pool.submit
    start = _perf()
    futures = [wrap(submit(body), loop=loop) for _ in range(count)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    elapsed = _perf() - start
    return count / elapsed, sum(1 for r in results if r is not None)


async def _noop_async(count: int, rounds: int, executor: str) -> NoopResult:
    tg_rates: list[float] = []
    pool_rates: list[float] = []
    failed = 0
    processes = executor == "process"
    pool: Executor = ProcessPoolExecutor(machine_cpus()) if processes else ThreadPoolExecutor()

    async def baseline(size: int) -> tuple[float, int]:
        return await _noop_pool(pool, size)

    with pool:
        coordinator = OperationsCoordinator(
            executor="process" if processes else "thread" if executor == "dask" else executor
        ).start()
        try:
            await _noop_tokengate(min(count, 1000))  # starts the worker processes too
            await baseline(min(count, 1000))
            for index in range(rounds):
                tokengate_first = index % 2 == 0
                for is_tokengate in (tokengate_first, not tokengate_first):
                    gc.collect()
                    if is_tokengate:
                        rate, bad = await _noop_tokengate(count)
                        tg_rates.append(rate)
                    else:
                        rate, bad = await baseline(count)
                        pool_rates.append(rate)
                    failed += bad
        finally:
            coordinator.stop()
    return NoopResult(count, rounds, tuple(tg_rates), tuple(pool_rates), failed, executor)


def run_noop(count: int, rounds: int = 5, executor: str = "thread") -> NoopResult:
    """``count`` no-op tokens awaited with ``gather`` against the same on a
    ``ThreadPoolExecutor`` with ``wrap_future``; ``rounds`` alternating rounds per side.

    With ``executor="process"`` the tokens run in the coordinator's worker processes and the
    baseline is ``ProcessPoolExecutor`` (one process per CPU) with ``submit`` +
    ``wrap_future``; the target is then at most 20 µs per token.
    """
    return asyncio.run(_noop_async(count, rounds, executor))


# ---------------------------------------------------------------------- memory
def _rss_mb() -> float:
    """Current resident set size in MiB (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (0.0 where unknown).

    Linux's ``VmHWM`` belongs to the current address space; ``ru_maxrss`` would also count
    the parent's high-water mark inherited through fork and exec.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def measure_memory(options: BenchOptions) -> MemoryResult:
    """Run each side alone in a fresh interpreter and read its peak memory."""
    peak: dict[str, float] = {}
    start: dict[str, float] = {}
    retained: dict[str, int] = {}
    errors: list[str] = []
    sides = SIDES if options.baseline else (TOKENGATE,)
    with tempfile.TemporaryDirectory(prefix="tokengate-bench-") as tmp:
        for side in sides:
            out = Path(tmp) / f"{side}.json"
            command = [
                sys.executable,
                "-m",
                "tokengate.core",
                "bench",
                "--waves",
                str(options.waves),
                "--only",
                side,
                "--warmup",
                str(options.warmup),
                "--quiet",
                "--json",
                str(out),
            ]
            done = subprocess.run(
                command, check=False, capture_output=True, text=True, timeout=3600
            )
            if done.returncode != 0 or not out.exists():
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                errors.append(
                    f"memory run of {SIDE_TITLES[side]} exited {done.returncode}: "
                    + " | ".join(tail)
                )
                if not out.exists():
                    continue
            data = json.loads(out.read_text())
            peak[side] = float(data["rss"].get("peak_mb", 0.0))
            start[side] = float(data["rss"].get("start_mb", 0.0))
            retained[side] = int(data["rss"].get("retained_blocks", 0))
    return MemoryResult(peak, start, retained, errors)
