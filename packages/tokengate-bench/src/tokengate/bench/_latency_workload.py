"""The open-loop latency workload (``tokengate bench --latency``).

Requests arrive at a fixed rate (200, 1,000 and 3,000 per second by default), each offloading
a ~100 µs CPU-bound body from an event loop and awaiting it — the web-service case. Arrivals
follow the clock, not the completions (open loop): a request that is late does not delay
the next arrival. A request's latency runs from its submission to the moment its awaiting
task resumes with the result. Sides, alternating in one process (the order rotates per rate):

* ``tokengate`` — a default :class:`~tokengate.core.OperationsCoordinator`, ``await token``;
* ``pool`` — ``concurrent.futures.ThreadPoolExecutor`` + ``asyncio.wrap_future``;
* ``anyio`` — ``anyio.to_thread.run_sync`` with its default limiter.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from tokengate.core import OperationsCoordinator, task_token_guard

__all__ = (
    "LATENCY_SIDES",
    "LatencyPoint",
    "LatencyResult",
    "calibrate_body",
    "latency_body",
    "run_latency_workload",
)

#: The sides, in the order of the first rate.
LATENCY_SIDES = ("tokengate", "pool", "anyio")


def latency_body(loops: int) -> int:
    """A CPU-bound body: ``loops`` additions (calibrated to ~100 µs)."""
    total = 0
    for i in range(loops):
        total += i
    return total


latency_call = task_token_guard("bench.latency_call", tags={"hash_policy": "none"})(latency_body)


def calibrate_body(target: float = 100e-6) -> int:
    """The ``loops`` that make :func:`latency_body` take about ``target`` seconds here."""
    loops = 1000
    while True:
        start = time.perf_counter()
        for _ in range(20):
            latency_body(loops)
        took = (time.perf_counter() - start) / 20
        if took > 0:
            return max(1, round(loops * target / took))
        loops *= 10  # pragma: no cover - a clock too coarse to see 1,000 additions


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """One side at one arrival rate.

    Attributes:
        side: ``tokengate``, ``pool`` or ``anyio``.
        rate: requests per second asked for.
        achieved: requests per second actually submitted.
        requests: requests measured.
        p50_ms: median latency, milliseconds.
        p99_ms: 99th-percentile latency, milliseconds.
    """

    side: str
    rate: float
    achieved: float
    requests: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Every side at every rate, measured in one process.

    Attributes:
        body_seconds: what one body takes alone (calibrated).
        duration: seconds of arrivals per side and rate.
        points: one per (rate, side).
        ratios: per rate, TokenGate's p50 and p99 over the pool's (below 1: TokenGate is
            faster), keys ``"<rate>/p50"`` and ``"<rate>/p99"``.
    """

    body_seconds: float
    duration: float
    points: tuple[LatencyPoint, ...]
    ratios: Mapping[str, float]

    def point(self, side: str, rate: float) -> LatencyPoint:
        """The point of ``side`` at ``rate``.

        Raises:
            KeyError: that side or rate was not measured.
        """
        for point in self.points:
            if point.side == side and point.rate == rate:
                return point
        raise KeyError(f"no point for side {side!r} at rate {rate!r}")


Submit = Callable[[int], Awaitable[Any]]


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def _open_loop(submit: Submit, loops: int, rate: float, duration: float) -> list[float]:
    """Submit at ``rate`` for ``duration`` seconds; each request's latency in seconds."""
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    perf = time.perf_counter

    async def request() -> None:
        start = perf()
        await submit(loops)
        latencies.append(perf() - start)

    interval = 1.0 / rate
    total = max(1, round(rate * duration))
    begin = perf()
    sent = 0
    while sent < total:
        due = min(total, int((perf() - begin) / interval) + 1)
        while sent < due:
            task = asyncio.ensure_future(request())
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(max(0.0, begin + sent * interval - perf()))
    if pending:
        await asyncio.gather(*pending)
    return latencies


def run_latency_workload(
    *,
    rates: Sequence[float] = (200.0, 1000.0, 3000.0),
    duration: float = 2.0,
    body_seconds: float = 100e-6,
    sides: Sequence[str] = LATENCY_SIDES,
    coordinator: Mapping[str, Any] | None = None,
) -> LatencyResult:
    """Run the open-loop latency workload and return p50/p99 per side and rate.

    Args:
        rates: arrival rates, requests per second.
        duration: seconds of arrivals per side and rate.
        body_seconds: what one body should take (calibrated on this machine).
        sides: which of :data:`LATENCY_SIDES` to run (``tokengate`` always runs).
        coordinator: settings of the coordinator (default: the default configuration).

    Raises:
        ValueError: a rate or the duration is not positive, or a side is unknown.
    """
    if not rates or any(rate <= 0 for rate in rates) or duration <= 0 or body_seconds <= 0:
        raise ValueError(
            f"rates, duration and body_seconds must be positive, got rates={list(rates)}, "
            f"duration={duration}, body_seconds={body_seconds}"
        )
    unknown = [name for name in sides if name not in LATENCY_SIDES]
    if unknown:
        raise ValueError(f"unknown side(s) {unknown}; choose from {', '.join(LATENCY_SIDES)}")
    chosen = ["tokengate", *[name for name in sides if name != "tokengate"]]
    loops = calibrate_body(body_seconds)
    points: list[LatencyPoint] = []
    pool = ThreadPoolExecutor(thread_name_prefix="bench-latency-pool")
    try:
        with OperationsCoordinator(**dict(coordinator or {})):

            async def via_tokengate(n: int) -> Any:
                return await latency_call(n)

            async def via_pool(n: int) -> Any:
                return await asyncio.wrap_future(pool.submit(latency_body, n))

            async def via_anyio(n: int) -> Any:
                return await anyio.to_thread.run_sync(latency_body, n)

            submitters: dict[str, Submit] = {
                "tokengate": via_tokengate,
                "pool": via_pool,
                "anyio": via_anyio,
            }

            async def main() -> None:
                top = max(rates)
                for name in chosen:  # warm-up at the top rate: threads, measurement, caches
                    await _open_loop(submitters[name], loops, top, 0.3)
                for index, rate in enumerate(rates):
                    shift = index % len(chosen)
                    for name in chosen[shift:] + chosen[:shift]:
                        begin = time.perf_counter()
                        latencies = await _open_loop(submitters[name], loops, rate, duration)
                        span = time.perf_counter() - begin
                        points.append(
                            LatencyPoint(
                                side=name,
                                rate=rate,
                                achieved=len(latencies) / span if span > 0 else 0.0,
                                requests=len(latencies),
                                p50_ms=statistics.median(latencies) * 1e3,
                                p99_ms=_percentile(latencies, 0.99) * 1e3,
                            )
                        )
                        await asyncio.sleep(0.05)

            asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    ratios: dict[str, float] = {}
    result = LatencyResult(body_seconds, duration, tuple(points), ratios)
    if "pool" in chosen:
        for rate in rates:
            ours = result.point("tokengate", rate)
            theirs = result.point("pool", rate)
            ratios[f"{rate:g}/p50"] = ours.p50_ms / theirs.p50_ms
            ratios[f"{rate:g}/p99"] = ours.p99_ms / theirs.p99_ms
    return result
