"""A synthetic workload for ``tokengate dashboard --demo``: a mix of CPU-bound, blocking,
failing, slow, sticky and (with the conductor installed) lead/child operations, submitted in
small batches so that every panel has something to show."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tokengate.core import OperationsCoordinator, TaskToken, plugin_manager, task_token_guard

__all__ = ("DemoWorkload",)

_log = logging.getLogger("tokengate.dashboard")


def _primes_below(n: int) -> int:
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


@task_token_guard("resize_thumbnail", tags={"weight": "light"})
def resize_thumbnail(n: int) -> int:
    """CPU-bound and short."""
    return _primes_below(n)


@task_token_guard("fetch_page", tags={"weight": "light"})
def fetch_page(delay: float) -> float:
    """Blocking IO stand-in: sleeps."""
    time.sleep(delay)
    return delay


@task_token_guard("build_report", tags={"weight": "medium"})
def build_report(size: int) -> int:
    """Sorts random numbers."""
    rng = random.Random(size)
    return sorted(rng.randint(0, 100_000) for _ in range(size))[size // 2]


@task_token_guard("checksum_archive", tags={"weight": "heavy"})
def checksum_archive(seed: str, rounds: int) -> str:
    """A SHA-256 chain."""
    value = seed.encode()
    for _ in range(rounds):
        value = hashlib.sha256(value).digest()
    return value.hex()


@task_token_guard("charge_card", tags={"weight": "light"})
def charge_card(amount: int) -> int:
    """Fails now and then, so that the error panel has entries."""
    time.sleep(0.002)
    if amount % 13 == 0:
        raise ValueError(f"card declined for amount {amount}")
    return amount


@task_token_guard("user_profile", tags={"sticky_anchor": "user"})
def user_profile(user_id: int) -> str:
    """Same user id, same core domain while one is in flight (sticky pins)."""
    time.sleep(0.02)
    return f"user-{user_id}"


@task_token_guard("nightly_export", tags={"weight": "medium"})
def nightly_export(seconds: float) -> float:
    """Slow: stays in flight long enough to be killed from the page."""
    time.sleep(seconds)
    return seconds


def _lead_operation() -> Callable[[int], TaskToken[Any]] | None:
    """A conductor lead that spawns children, if the conductor plugin is installed."""
    if not plugin_manager().has_plugin("conductor"):
        return None

    @task_token_guard("ingest_batch", tags={"external_calls": ["fetch_page", "build_report"]})
    def ingest_batch(batch: int) -> int:
        # the children join the lead's domain and keep it open until they end; the lead does
        # not wait for them, so it never holds a worker while they queue behind it
        for _ in range(3):
            fetch_page(0.01)
        build_report(300 + batch % 100)
        return batch

    return ingest_batch


class DemoWorkload:
    """Submits batches of mixed calls to ``coordinator`` from a background thread.

    ``max_in_flight`` bounds the tokens not yet finished: a batch waits while more are in
    flight; ``slow_seconds`` is the range of the slow operation's duration. :meth:`stop` ends
    the thread (the tokens already submitted finish on their own).
    """

    def __init__(
        self,
        coordinator: OperationsCoordinator,
        *,
        period: float = 0.25,
        max_in_flight: int = 2000,
        seed: int = 0,
        slow_seconds: tuple[float, float] = (5.0, 15.0),
    ) -> None:
        self._coordinator = coordinator
        self._period = period
        self._max_in_flight = max_in_flight
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lead = _lead_operation()
        self._slow = slow_seconds
        self.submitted = 0

    def start(self) -> DemoWorkload:
        """Start submitting; returns self."""
        self._thread = threading.Thread(
            target=self._run, name="tokengate-dashboard-demo", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop submitting and wait for the submitting thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        rng = self._rng
        i = 0
        while not self._stop.is_set():
            if self._coordinator.stats().in_flight < self._max_in_flight:
                try:
                    for _ in range(rng.randint(40, 120)):
                        self._one(i, rng)
                        i += 1
                except Exception:  # the coordinator stopped under us: end quietly
                    _log.debug("demo workload stopped submitting", exc_info=True)
                    return
            self._stop.wait(self._period)

    def _one(self, i: int, rng: random.Random) -> None:
        kind = i % 10
        if kind in (0, 1):
            resize_thumbnail(60 + i % 40)
        elif kind == 2:
            fetch_page(rng.uniform(0.005, 0.03))
        elif kind == 3:
            build_report(300 + i % 300)
        elif kind == 4:
            checksum_archive(f"archive-{i}", 100 + i % 80)
        elif kind in (5, 6):
            charge_card(i)
        elif kind == 7:
            user_profile(rng.randint(1, 12))
        elif kind == 8 and self._lead is not None and i % 30 == 8:
            self._lead(i)
        elif i % 200 == 9:
            nightly_export(rng.uniform(*self._slow))
        else:
            resize_thumbnail(40 + i % 20)
        self.submitted += 1
