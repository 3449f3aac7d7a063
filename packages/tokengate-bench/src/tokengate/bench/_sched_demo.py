"""``tokengate demo scheduler``: what a domain's scheduler does for three jobs a task router
gets, each beside ``ThreadPoolExecutor(4)`` (the usual hand-rolled answer):

* **head-of-line** — one long call and many short ones on a two-core coordinator: no short
  call waits behind the long one while a worker that may run it idles;
* **leads waiting for children** — conductor leads that call children on their own core and
  wait for them inside the body (``get``): the wait hands the worker's slot back, so every
  lead completes (a fixed pool as small as the leads deadlocks until its timeouts);
* **blocking IO** — calls that sleep (a stand-in for a database or HTTP call) run many at once
  instead of four at a time.

Each verdict names what held and the evidence; the times are measured, never assumed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard

from ._demos import DemoResult, conductor_available

__all__ = ("run_scheduler",)

_perf = time.perf_counter


def _sleep_body(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class _Gauge:
    """How many bodies run at once (the peak)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


_GAUGE = _Gauge()


def _gauged_sleep_body(seconds: float) -> float:
    with _GAUGE:
        time.sleep(seconds)
    return seconds


def _child_body(n: int) -> int:
    time.sleep(0.01)
    return n * n


@dataclass(frozen=True, slots=True)
class _Ops:
    sleep: Callable[..., TaskToken[float]]
    gauged: Callable[..., TaskToken[float]]
    lead: Callable[..., TaskToken[int]] | None
    child: Callable[..., TaskToken[int]] | None


def _lead_body(n: int, children: int, wait: float) -> int:
    ops = _operations()
    assert ops.child is not None
    kids = [ops.child(n * 10 + i) for i in range(children)]
    return sum(kid.get(timeout=wait) for kid in kids)


@functools.cache
def _operations() -> _Ops:
    free = {"hash_policy": "none"}
    sleep = task_token_guard("demo_sched_sleep", tags=free)(_sleep_body)
    gauged = task_token_guard("demo_sched_io", tags=free)(_gauged_sleep_body)
    lead = child = None
    if conductor_available():
        lead = task_token_guard(
            "demo_sched_lead",
            tags={"weight": "medium", "external_calls": ["demo_sched_child"], **free},
        )(_lead_body)
        child = task_token_guard("demo_sched_child", tags={"weight": "medium", **free})(_child_body)
    return _Ops(sleep, gauged, lead, child)


def _head_of_line(result: DemoResult, long: float, short: float, count: int) -> list[str]:
    ops = _operations()
    with OperationsCoordinator(cores=2, workers_per_core=4):
        began = _perf()
        slow = ops.sleep(long)
        quick = [ops.sleep(short) for _ in range(count)]
        ends: list[float] = []
        for token in quick:
            token.get(timeout=long + 30)
            ends.append(_perf() - began)
        tg_last = max(ends)
        slow.get(timeout=long + 30)
    with ThreadPoolExecutor(4) as pool:
        began = _perf()
        pool_slow = pool.submit(_sleep_body, long)
        pool_quick = [pool.submit(_sleep_body, short) for _ in range(count)]
        pool_ends: list[float] = []
        for future in pool_quick:
            future.result(timeout=long + 30)
            pool_ends.append(_perf() - began)
        pool_slow.result(timeout=long + 30)
    bound = max(0.2, 4 * short)
    result.figures["head_of_line"] = {
        "long_s": long,
        "short_s": short,
        "short_calls": count,
        "tokengate_last_short_s": round(tg_last, 4),
        "threadpool_last_short_s": round(max(pool_ends), 4),
    }
    result.check(
        f"head-of-line: every short call done within {bound:g} s beside a {long:g} s call",
        tg_last <= bound,
        f"last short call after {tg_last:.3f} s (ThreadPoolExecutor(4): {max(pool_ends):.3f} s)",
    )
    return [
        f"{count} x {short:g} s beside one {long:g} s call: last short call done",
        f"{tg_last:.3f} s",
        f"{max(pool_ends):.3f} s",
    ]


def _leads(result: DemoResult, leads: int, children: int, wait: float) -> list[str] | None:
    ops = _operations()
    if ops.lead is None:
        result.check(
            "leads waiting for children: the conductor plugin is installed",
            False,
            "install it: pip install tokengate-conductor",
        )
        return None
    with OperationsCoordinator(cores=1, workers_per_core=2):
        began = _perf()
        tokens = [ops.lead(n, children, wait) for n in range(leads)]
        outcomes = [t.exception(timeout=wait * 4 + 30) for t in tokens]
        elapsed = _perf() - began
    failed = [t.token_id for t, exc in zip(tokens, outcomes, strict=True) if exc is not None]
    # the same shape on a pool of as many threads as the domain has: each lead occupies one
    # and waits for children queued behind the others
    with ThreadPoolExecutor(2) as pool:

        def pool_lead(n: int) -> int:
            kids = [pool.submit(_child_body, n * 10 + i) for i in range(children)]
            return sum(kid.result(timeout=wait) for kid in kids)

        began = _perf()
        futures = [pool.submit(pool_lead, n) for n in range(leads)]
        pool_failed = 0
        for future in futures:
            try:
                future.result(timeout=wait * leads + 30)
            except (FuturesTimeout, TimeoutError):
                pool_failed += 1
        pool_elapsed = _perf() - began
    result.figures["leads_waiting"] = {
        "leads": leads,
        "children": children,
        "tokengate_failed": len(failed),
        "tokengate_s": round(elapsed, 3),
        "threadpool_timed_out": pool_failed,
        "threadpool_s": round(pool_elapsed, 3),
    }
    result.check(
        f"leads waiting for children: {leads} leads x {children} children on 1 core, "
        "2 workers, every lead completes",
        not failed,
        f"{leads - len(failed)}/{leads} completed in {elapsed:.2f} s"
        + (f"; failed: {', '.join(failed[:4])}" if failed else "")
        + f" (ThreadPoolExecutor(2): {pool_failed} of {leads} timed out)",
    )
    return [
        f"{leads} leads x {children} children, get() inside the body: leads completed",
        f"{leads - len(failed)}/{leads}",
        f"{leads - pool_failed}/{leads}",
    ]


def _blocking_io(result: DemoResult, calls: int, seconds: float) -> list[str]:
    ops = _operations()
    _GAUGE.peak = 0
    with OperationsCoordinator():
        began = _perf()
        tokens: list[TaskToken[Any]] = [ops.gauged(seconds) for _ in range(calls)]
        for token in tokens:
            token.get(timeout=seconds * calls + 30)
        elapsed = _perf() - began
    peak = _GAUGE.peak
    with ThreadPoolExecutor(4) as pool:
        began = _perf()
        for future in [pool.submit(_sleep_body, seconds) for _ in range(calls)]:
            future.result(timeout=seconds * calls + 30)
        pool_elapsed = _perf() - began
    result.figures["blocking_io"] = {
        "calls": calls,
        "sleep_s": seconds,
        "tokengate_s": round(elapsed, 3),
        "tokengate_peak_concurrency": peak,
        "threadpool4_s": round(pool_elapsed, 3),
    }
    result.check(
        f"blocking IO: {calls} sleeping calls run more than 4 at once",
        peak > 4,
        f"at most {peak} at once, {elapsed:.2f} s (ThreadPoolExecutor(4): {pool_elapsed:.2f} s)",
    )
    return [
        f"{calls} x sleep({seconds:g}): elapsed",
        f"{elapsed:.2f} s ({peak} at once)",
        f"{pool_elapsed:.2f} s",
    ]


def run_scheduler(
    *,
    long: float = 2.0,
    short: float = 0.05,
    short_calls: int = 11,
    leads: int = 8,
    children: int = 3,
    wait: float = 1.0,
    io_calls: int = 40,
    io_seconds: float = 0.1,
) -> DemoResult:
    """Head-of-line, leads waiting for their children and blocking IO on the default
    coordinator, each beside ``ThreadPoolExecutor``."""
    result = DemoResult("scheduler")
    rows = [_head_of_line(result, long, short, short_calls)]
    lead_row = _leads(result, leads, children, wait)
    if lead_row is not None:
        rows.append(lead_row)
    rows.append(_blocking_io(result, io_calls, io_seconds))
    result.tables.append(("The domain scheduler", ("job", "TokenGate", "ThreadPoolExecutor"), rows))
    return result
