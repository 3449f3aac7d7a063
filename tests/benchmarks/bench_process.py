"""Process domains, measured (reports only; asserts nothing).

1. No-op burst: 10,000 process-domain tokens submitted at once and awaited with
   ``asyncio.gather``; microseconds per token, amortised (median of the repeats).
2. Seed workload (four operations round-robin, the first ``--waves`` waves) on the process
   executor end to end, against the one-thread loop over the same bodies and against
   ``ProcessPoolExecutor(2)`` with ``submit`` + ``asyncio.wrap_future``; the three sides
   alternate wave by wave in this one process. End to end = tokens / Σ(submit + gather).
3. CPU-heavy bodies (a pure-Python loop of several milliseconds), half HEAVY (core 1) and
   half MEDIUM (core 2) on a 2-core coordinator: process domains against thread domains.
4. A 100 MB numpy array sent to a worker process and back: the process pool (protocol-5
   out-of-band buffers, received straight into place) against ``ProcessPoolExecutor`` (the
   array copied into and out of pickles): time and the parent's peak of extra memory.
5. Cost per token (``--only cost``): CPU time and context switches per token in the
   coordinator's process (all its threads) and in its worker processes, over a burst of
   no-op tokens and over a wave of the seed workload, with the loop's CPU per token for the
   seed bodies. CPU time barely moves when other jobs share the machine: the figure to
   compare between runs. Linux only (``/proc``).
6. The machine's ceiling (``--only ceiling``): the seed bodies in one plain process, then in
   two plain processes at once; what two did together per second against one alone is the
   most any process executor can reach here against the one-thread loop.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_process.py [--waves 12] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np

from tokengate.bench import _workload as workload
from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard
from tokengate.core._procpool import Call, Outcome, ProcPool, function_ref

FREE = {"hash_policy": "none"}
#: Longest wait for a round of calls (a safety net; a round takes well under a second).
WAIT_S = 120.0


def noop() -> None:
    """The empty body."""


def echo(value: object) -> object:
    """``value`` back."""
    return value


def crunch(n: int) -> int:
    """A pure-Python CPU loop (holds the GIL all along)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


noop_process = task_token_guard(
    "bench_noop_process", tags={**FREE, "executor": "process", "weight": "medium"}
)(noop)
crunch_heavy_process = task_token_guard(
    "bench_crunch_heavy_process", tags={**FREE, "executor": "process", "weight": "heavy"}
)(crunch)
crunch_medium_process = task_token_guard(
    "bench_crunch_medium_process", tags={**FREE, "executor": "process", "weight": "medium"}
)(crunch)
crunch_heavy_thread = task_token_guard(
    "bench_crunch_heavy_thread", tags={**FREE, "weight": "heavy"}
)(crunch)
crunch_medium_thread = task_token_guard(
    "bench_crunch_medium_thread", tags={**FREE, "weight": "medium"}
)(crunch)

#: The seed workload's operations on the process executor (same bodies, same weights).
SEED_PROCESS = tuple(
    task_token_guard(f"bench_{op.name}_process", tags={"weight": op.weight, "executor": "process"})(
        op.body
    )
    for op in workload.OPERATIONS
)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


# --------------------------------------------------------------------------- 1. no-op burst
async def _gather(tokens: list[TaskToken[Any]]) -> list[Any]:
    return await asyncio.gather(*tokens)


def measure_noop_burst(count: int, repeats: int, settings: dict[str, Any]) -> float:
    """Median µs per no-op process token in a burst of ``count`` awaited with gather."""
    samples = []
    with OperationsCoordinator(**settings):
        asyncio.run(_gather([noop_process() for _ in range(64)]))  # start the processes
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            asyncio.run(_gather([noop_process() for _ in range(count)]))
            samples.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(samples)


# --------------------------------------------------------------------------- 2. seed workload
def _wave_calls(size: int) -> list[workload.Call]:
    return workload.calls_for_wave(size)


async def _tokengate_wave(calls: list[workload.Call]) -> float:
    start = time.perf_counter()
    index = {op.name: i for i, op in enumerate(workload.OPERATIONS)}
    tokens = [SEED_PROCESS[index[c.operation.name]](*c.args) for c in calls]
    await asyncio.gather(*tokens)
    return time.perf_counter() - start


def _loop_wave(calls: list[workload.Call]) -> float:
    start = time.perf_counter()
    for c in calls:
        c.operation.body(*c.args)
    return time.perf_counter() - start


async def _pool_wave(pool: ProcessPoolExecutor, calls: list[workload.Call]) -> float:
    start = time.perf_counter()
    futures = [asyncio.wrap_future(pool.submit(c.operation.body, *c.args)) for c in calls]
    await asyncio.gather(*futures)
    return time.perf_counter() - start


def measure_seed(waves: int, settings: dict[str, Any]) -> dict[str, float]:
    """End-to-end tokens/s of the three sides over the first ``waves`` waves, alternating."""
    sizes = workload.wave_sizes(waves)
    totals = {"tokengate": 0.0, "loop": 0.0, "pool": 0.0}
    with (
        OperationsCoordinator(**settings),
        ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool,
    ):
        warm = _wave_calls(workload.WARMUP_TOKENS)
        asyncio.run(_tokengate_wave(warm))
        asyncio.run(_pool_wave(pool, warm))
        _loop_wave(warm)
        for n, size in enumerate(sizes):
            calls = _wave_calls(size)
            order = ["tokengate", "loop", "pool"]
            order = order[n % 3 :] + order[: n % 3]
            for side in order:
                gc.collect()
                if side == "tokengate":
                    totals[side] += asyncio.run(_tokengate_wave(calls))
                elif side == "loop":
                    totals[side] += _loop_wave(calls)
                else:
                    totals[side] += asyncio.run(_pool_wave(pool, calls))
                time.sleep(workload.WAVE_PAUSE)
    tokens = sum(sizes)
    return {side: tokens / elapsed for side, elapsed in totals.items()}


# --------------------------------------------------------------------------- 3. CPU-heavy
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
    """Median tokens/s of CPU-heavy bodies: process domains and thread domains (2 cores),
    and, as a control of the parallelism the machine offers right now, the same bodies on
    ``ProcessPoolExecutor(2)`` (``map``)."""
    process_times: list[float] = []
    thread_times: list[float] = []
    pool_times: list[float] = []
    with (
        OperationsCoordinator(cores=2, workers_per_core=4),
        ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool,
    ):
        crunch_heavy_process(1).get()  # start both worker processes before timing
        crunch_medium_process(1).get()
        list(pool.map(crunch, [1, 1]))
        for _ in range(repeats):
            thread_times.append(_run_wave(crunch_heavy_thread, crunch_medium_thread, n, count))
            process_times.append(_run_wave(crunch_heavy_process, crunch_medium_process, n, count))
            start = time.perf_counter()
            list(pool.map(crunch, [n] * count))
            pool_times.append(time.perf_counter() - start)
    return {
        "threads tokens/s": count / statistics.median(thread_times),
        "processes tokens/s": count / statistics.median(process_times),
        "ProcessPoolExecutor(2) map tokens/s": count / statistics.median(pool_times),
    }


# --------------------------------------------------------------------------- 4. big arrays
def _pool_round_trip(
    pool: ProcPool, done: list[Outcome], event: threading.Event, array: Any
) -> Any:
    event.clear()
    done.clear()
    pool.submit([Call(function_ref(echo, "echo"), (array,), {})])
    event.wait(120)
    return done[0][2]


def measure_array(megabytes: int, repeats: int) -> dict[str, float]:
    """Round trip of a ``megabytes`` MB float64 array: seconds and the parent's peak of extra
    traced memory, for the process pool and for ``ProcessPoolExecutor``."""
    array = np.random.default_rng(1).random(megabytes * 2**20 // 8)
    done: list[Outcome] = []
    event = threading.Event()

    def collect(outcomes: list[Outcome]) -> None:
        done.extend(outcomes)
        event.set()

    pool = ProcPool("bench-array", collect)
    results: dict[str, list[float]] = {
        "pool s": [],
        "pool peak MB": [],
        "ppe s": [],
        "ppe peak MB": [],
    }
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ppe:
            _pool_round_trip(pool, done, event, np.zeros(8))
            ppe.submit(echo, np.zeros(8)).result()
            for _ in range(repeats):
                for side in ("pool", "ppe"):
                    gc.collect()
                    tracemalloc.start()
                    start = time.perf_counter()
                    if side == "pool":
                        back = _pool_round_trip(pool, done, event, array)
                    else:
                        back = ppe.submit(echo, array).result()
                    elapsed = time.perf_counter() - start
                    _, peak = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
                    assert np.array_equal(back, array)
                    del back
                    results[f"{side} s"].append(elapsed)
                    results[f"{side} peak MB"].append(peak / 2**20)
    finally:
        pool.shutdown(10)
    return {name: statistics.median(values) for name, values in results.items()}


# --------------------------------------------------------------------------- 5. cost per token
def _threads_of(pid: int) -> tuple[float, int]:
    """CPU seconds and context switches (voluntary + not) of every thread of ``pid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = 0.0
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        switches += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return cpu, switches


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _snapshot() -> tuple[float, int, float, int]:
    # This process's CPU time from the clock (nanoseconds); /proc counts whole clock ticks
    # (10 ms), too coarse for a wave of a few hundred milliseconds. Worker processes are
    # only readable through /proc: their figure carries that rounding.
    parent = _threads_of(os.getpid())
    workers = [_threads_of(pid) for pid in _children()]
    return (
        time.process_time(),
        parent[1],
        sum(cpu for cpu, _ in workers),
        sum(switches for _, switches in workers),
    )


def _cost(run: Callable[[], None], count: int, repeats: int) -> dict[str, float]:
    samples: list[tuple[float, ...]] = []
    for _ in range(repeats):
        gc.collect()
        before = _snapshot()
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
        after = _snapshot()
        delta = [(a - b) / count for a, b in zip(after, before, strict=True)]
        samples.append((wall / count * 1e6, delta[0] * 1e6, delta[1], delta[2] * 1e6, delta[3]))
    keys = ("wall us", "parent cpu us", "parent switches", "worker cpu us", "worker switches")
    return {key: statistics.median(s[i] for s in samples) for i, key in enumerate(keys)}


def _pool_cost(count: int, repeats: int) -> dict[str, float]:
    """The engine alone: ``count`` no-op calls submitted one by one to a process pool (no
    tokens, no event loop), per call: wall time and this process's CPU time."""
    done = threading.Event()
    seen = [0, count]

    def collect(outcomes: list[Outcome]) -> None:
        seen[0] += len(outcomes)
        if seen[0] >= seen[1]:
            done.set()

    pool = ProcPool("bench-cost", collect)
    fn = function_ref(noop, "noop")
    walls: list[float] = []
    cpus: list[float] = []
    try:
        for round_ in range(repeats + 1):  # the first round starts the process
            calls = [Call(fn, (), {}) for _ in range(count)]
            seen[0] = 0
            done.clear()
            gc.collect()
            cpu = time.process_time()
            start = time.perf_counter()
            for call in calls:
                pool.submit((call,))
            done.wait(WAIT_S)
            if round_:
                walls.append((time.perf_counter() - start) / count * 1e6)
                cpus.append((time.process_time() - cpu) / count * 1e6)
    finally:
        pool.shutdown(5.0)
    return {"wall us": statistics.median(walls), "parent cpu us": statistics.median(cpus)}


def measure_cost(burst: int, wave: int, repeats: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Per token: wall time, CPU and context switches of the coordinator's process and of its
    worker processes (medians), for a no-op burst and for a seed wave; and the loop's CPU."""
    calls = _wave_calls(wave)
    index = {op.name: i for i, op in enumerate(workload.OPERATIONS)}
    seed_ops = [SEED_PROCESS[index[c.operation.name]] for c in calls]

    def noop_burst() -> None:
        asyncio.run(_gather([noop_process() for _ in range(burst)]))

    def seed_wave() -> None:
        asyncio.run(_gather([op(*c.args) for op, c in zip(seed_ops, calls, strict=True)]))

    out: dict[str, Any] = {"pool": _pool_cost(burst, repeats)}
    with OperationsCoordinator(**settings):
        noop_burst()  # starts the worker processes and measures the bodies
        seed_wave()
        seed_wave()  # a domain with a backlog has grown its processes by now
        out["noop"] = _cost(noop_burst, burst, repeats)
        out["seed"] = _cost(seed_wave, wave, repeats)
    loop_cpu = []
    for _ in range(repeats):
        start = time.process_time()
        _loop_wave(calls)
        loop_cpu.append((time.process_time() - start) / wave * 1e6)
    out["loop cpu us"] = statistics.median(loop_cpu)
    return out


# --------------------------------------------------------------------------- 6. the ceiling
def _bodies_alone(wave: int, reps: int, barrier: Any, out: Any) -> None:
    """In a plain process: run the seed bodies ``reps`` times once every process of the round
    is ready; report (CPU µs per call, start, end) on the shared monotonic clock."""
    calls = _wave_calls(wave)
    for call in calls[:64]:  # warm up
        call.operation.body(*call.args)
    barrier.wait(WAIT_S)
    start, cpu = time.monotonic(), time.thread_time()
    for _ in range(reps):
        for call in calls:
            call.operation.body(*call.args)
    cpu = time.thread_time() - cpu
    out.put((cpu / (reps * len(calls)) * 1e6, start, time.monotonic()))


def measure_ceiling(wave: int, reps: int, rounds: int) -> dict[str, float]:
    """What two CPUs give the seed bodies with no coordination at all: the same work in one
    plain process, then in two at once (each its own copy, started together), alternating
    ``rounds`` times. The speed-up is what two processes did together per second against one
    alone: the most any process executor can reach here, before its own costs."""
    context = get_context("spawn")
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for count in (1, 2):
            queue = context.Queue()
            barrier = context.Barrier(count)
            procs = [
                context.Process(target=_bodies_alone, args=(wave, reps, barrier, queue))
                for _ in range(count)
            ]
            for proc in procs:
                proc.start()
            reports = [queue.get(timeout=WAIT_S) for _ in procs]
            for proc in procs:
                proc.join(WAIT_S)
            elapsed = max(end for _, _, end in reports) - min(start for _, start, _ in reports)
            rates[count].append(count * reps * wave / elapsed)
            cpus[count].extend(cpu for cpu, _, _ in reports)
    rate_one = statistics.median(rates[1])
    rate_two = statistics.median(rates[2])
    return {
        "one process calls/s": rate_one,
        "two processes calls/s": rate_two,
        "speed-up": rate_two / rate_one,
        "cpu us per call alone": statistics.median(cpus[1]),
        "cpu us per call two at once": statistics.median(cpus[2]),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--burst", type=int, default=10_000, help="no-op tokens per burst")
    parser.add_argument("--repeats", type=int, default=5, help="samples per figure (median)")
    parser.add_argument("--waves", type=int, default=12, help="seed workload waves (1..15)")
    parser.add_argument("--cores", type=int, default=2, help="core domains of the coordinator")
    parser.add_argument(
        "--processes-per-core",
        type=int,
        default=None,
        help="worker processes per core domain (default: elastic)",
    )
    parser.add_argument("--body-ms", type=float, default=8.0, help="CPU body length (>= 5)")
    parser.add_argument("--tokens", type=int, default=80, help="CPU-heavy tokens per sample")
    parser.add_argument("--array-mb", type=int, default=100, help="array size for section 4")
    parser.add_argument("--cost-wave", type=int, default=4096, help="seed wave for section 5")
    parser.add_argument(
        "--only",
        choices=("burst", "seed", "cpu", "array", "cost", "ceiling"),
        help="run one section only",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the measurements, print medians and ratios, and return them."""
    args = _parse(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"cores": args.cores, "processes_per_core": args.processes_per_core}
    print(f"bench_process: {cpus} CPUs, spawn start method, {_load()}; coordinator {settings}")
    out: dict[str, Any] = {}
    if args.only in (None, "burst"):
        per_token = measure_noop_burst(args.burst, args.repeats, settings)
        out["noop_us"] = per_token
        print(f"\n1. no-op burst of {args.burst} process tokens (gather): {per_token:.1f} µs/token")
    if args.only in (None, "seed"):
        seed = measure_seed(args.waves, settings)
        out.update({f"seed {k} tokens/s": v for k, v in seed.items()})
        print(f"\n2. seed workload, {args.waves} waves, end to end ({_load()})")
        for side in ("tokengate", "loop", "pool"):
            print(f"   {side:<10} {seed[side]:9.0f} tokens/s")
        print(
            f"   process executor / loop {seed['tokengate'] / seed['loop']:5.2f}x   "
            f"/ ProcessPoolExecutor(2) {seed['tokengate'] / seed['pool']:5.2f}x"
        )
    if args.only in (None, "cpu"):
        n = calibrate(args.body_ms)
        body_ms = _body_ms(n)
        cpu = measure_cpu_throughput(n, args.tokens, max(3, args.repeats))
        ratio = cpu["processes tokens/s"] / cpu["threads tokens/s"]
        out.update(cpu)
        out["process_vs_thread"] = ratio
        print(f"\n3. CPU-heavy bodies (~{body_ms:.1f} ms each, {args.tokens} tokens, cores=2)")
        control = cpu["ProcessPoolExecutor(2) map tokens/s"] / cpu["threads tokens/s"]
        print(f"   thread domains   {cpu['threads tokens/s']:8.1f} tokens/s")
        print(f"   process domains  {cpu['processes tokens/s']:8.1f} tokens/s")
        print(
            f"   processes/threads {ratio:5.2f}x   (control: ProcessPoolExecutor(2) map / "
            f"threads {control:5.2f}x, the parallelism the machine gave just now)"
        )
    if args.only in (None, "array"):
        arr = measure_array(args.array_mb, max(3, args.repeats // 2))
        out.update({f"array {k}": v for k, v in arr.items()})
        print(f"\n4. {args.array_mb} MB array round trip (median)")
        for label, side in (("process pool", "pool"), ("ProcessPoolExecutor", "ppe")):
            seconds, peak = arr[f"{side} s"], arr[f"{side} peak MB"]
            print(f"   {label:<21} {seconds:6.3f} s   peak extra {peak:7.1f} MB")
    if args.only in (None, "cost") and os.path.isdir("/proc/self/task"):
        cost = measure_cost(args.burst, args.cost_wave, args.repeats, settings)
        out["cost"] = cost
        print(f"\n5. cost per token (median of {args.repeats}; {_load()})")
        print("   run          wall us  parent CPU us  parent switches  worker CPU us  switches")
        for name, label in (("noop", f"no-op x{args.burst}"), ("seed", f"seed x{args.cost_wave}")):
            c = cost[name]
            print(
                f"   {label:<12} {c['wall us']:7.1f}  {c['parent cpu us']:13.1f}  "
                f"{c['parent switches']:15.2f}  {c['worker cpu us']:13.1f}  "
                f"{c['worker switches']:8.2f}"
            )
        print(
            f"   one-thread loop over the seed bodies: {cost['loop cpu us']:.1f} µs CPU per token"
        )
        pool = cost["pool"]
        print(
            f"   the process pool alone (no tokens), {args.burst} no-op calls: "
            f"{pool['wall us']:.1f} µs wall, {pool['parent cpu us']:.1f} µs of CPU here per call"
        )
    if args.only in (None, "ceiling"):
        ceiling = measure_ceiling(args.cost_wave, 3, max(3, args.repeats))
        out["ceiling"] = ceiling
        print(f"\n6. the machine's ceiling for the seed bodies (median of rounds; {_load()})")
        print(
            f"   one plain process  {ceiling['one process calls/s']:8.0f} calls/s   "
            f"{ceiling['cpu us per call alone']:6.1f} µs CPU per call"
        )
        print(
            f"   two at once        {ceiling['two processes calls/s']:8.0f} calls/s   "
            f"{ceiling['cpu us per call two at once']:6.1f} µs CPU per call"
        )
        print(
            f"   two processes / one: {ceiling['speed-up']:.2f}x (the most a process executor "
            "can reach here against the one-thread loop, before its own costs)"
        )
    return out


if __name__ == "__main__":
    main()
