"""The Dask benchmark: the seed workload through TokenGate on Dask, against plain Dask.

Three sides run the same calls (the seed workload's bodies, round-robin by index) on the same
cluster, alternating, in one process:

* ``tokengate`` — the decorated operations on an ``OperationsCoordinator`` whose executor is
  a :class:`~tokengate.dask.DaskExecutor`: every call its own token;
* ``per_call`` — one ``client.submit`` per call, then ``client.gather``;
* ``hand_batched`` — the calls cut by hand into tasks of ``chunk`` calls (64), one
  ``client.submit`` per task.

Each side's figure is its best round (calls per second, submission to last result); the
ratios are TokenGate's rate over each baseline's, of the best rounds and of the median
rounds. ``per_call`` runs fewer calls (it is about
two orders of magnitude slower); its rate is per call all the same.

Run it with ``python -m tokengate.dask._bench`` (a two-worker ``LocalCluster``, or
``--scheduler tcp://host:port``); ``run()`` is the function ``tokengate bench --executor dask``
calls.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import distributed

from ._errors import DaskExecutorError
from ._executor import DaskExecutor

__all__ = ("DaskBenchResult", "main", "run", "run_chunk")

_log = logging.getLogger("tokengate.dask")
_perf = time.perf_counter

SIDES = ("tokengate", "per_call", "hand_batched")


@dataclass(frozen=True)
class DaskBenchResult:
    """What :func:`run` measured.

    Attributes:
        calls: calls per round of the ``tokengate`` and ``hand_batched`` sides.
        per_call_calls: calls per round of the ``per_call`` side.
        chunk: calls per task of the ``hand_batched`` side.
        rounds: measured rounds per side (after one warm-up round each).
        workers: the cluster's worker addresses.
        cores: the coordinator's core domains.
        rates: best calls per second of each side.
        all_rates: every round's calls per second, per side.
        vs_per_call: ``rates["tokengate"] / rates["per_call"]``.
        vs_hand_batched: ``rates["tokengate"] / rates["hand_batched"]``.
    """

    calls: int
    per_call_calls: int
    chunk: int
    rounds: int
    workers: tuple[str, ...]
    cores: int
    rates: dict[str, float]
    all_rates: dict[str, list[float]] = field(default_factory=dict)

    @property
    def vs_per_call(self) -> float:
        """TokenGate's rate over one ``client.submit`` per call."""
        return self.rates["tokengate"] / self.rates["per_call"]

    @property
    def vs_hand_batched(self) -> float:
        """TokenGate's rate over hand-batched tasks."""
        return self.rates["tokengate"] / self.rates["hand_batched"]

    @property
    def medians(self) -> dict[str, float]:
        """The median round of each side (calls per second)."""
        return {side: statistics.median(values) for side, values in self.all_rates.items()}

    @property
    def median_vs_per_call(self) -> float:
        """The ratio of the median rounds, TokenGate over one ``client.submit`` per call."""
        medians = self.medians
        return medians["tokengate"] / medians["per_call"]

    @property
    def median_vs_hand_batched(self) -> float:
        """The ratio of the median rounds, TokenGate over hand-batched tasks."""
        medians = self.medians
        return medians["tokengate"] / medians["hand_batched"]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ratios included."""
        data = asdict(self)
        data["workers"] = list(self.workers)
        data["vs_per_call"] = self.vs_per_call
        data["vs_hand_batched"] = self.vs_hand_batched
        data["medians"] = self.medians
        data["median_vs_per_call"] = self.median_vs_per_call
        data["median_vs_hand_batched"] = self.median_vs_hand_batched
        return data


def _workload() -> ModuleType:
    for name in ("tokengate.bench._workload",):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise DaskExecutorError(
        "the seed workload is not installed: install tokengate-bench (it holds the workload's "
        "bodies) to run the Dask benchmark"
    )


def run_chunk(chunk: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """The task of the ``hand_batched`` side: run each ``(body, args)`` and return the results."""
    return [body(*args) for body, args in chunk]


def _tokengate_round(
    workload: ModuleType, calls: list[Any], executor: DaskExecutor, cores: int
) -> float:
    from tokengate.core import OperationsCoordinator

    coordinator = OperationsCoordinator(executor=executor, cores=cores, stop_timeout=120)
    with coordinator:
        began = _perf()
        tokens = [call.operation.submit(*call.args) for call in calls]
        for token in tokens:
            token.get(600)
        took = _perf() - began
    return len(calls) / took


def _per_call_round(client: Any, calls: list[Any]) -> float:
    began = _perf()
    futures = [client.submit(call.operation.body, *call.args, pure=False) for call in calls]
    client.gather(futures)
    took = _perf() - began
    return len(calls) / took


def _hand_batched_round(client: Any, calls: list[Any], chunk: int) -> float:
    began = _perf()
    pairs = [(call.operation.body, call.args) for call in calls]
    futures = [
        client.submit(run_chunk, pairs[start : start + chunk], pure=False)
        for start in range(0, len(pairs), chunk)
    ]
    client.gather(futures)
    took = _perf() - began
    return len(calls) / took


def run(
    client: distributed.Client | str | None = None,
    *,
    calls: int = 4096,
    per_call_calls: int | None = None,
    chunk: int = 64,
    rounds: int = 3,
    cores: int | None = None,
    **executor_settings: Any,
) -> DaskBenchResult:
    """Measure the three sides on the cluster of ``client``, alternating their order.

    Args:
        client: a client, a scheduler address or None (the default client).
        calls: calls per round of the ``tokengate`` and ``hand_batched`` sides.
        per_call_calls: calls per round of the ``per_call`` side (default: ``calls // 8``,
            at least 64).
        chunk: calls per task of the ``hand_batched`` side.
        rounds: measured rounds per side, after one warm-up round each.
        cores: the coordinator's core domains (default: one per worker).
        **executor_settings: passed to :class:`~tokengate.dask.DaskExecutor`.

    Raises:
        DaskExecutorError: no client, or the seed workload is not installed.
        ValueError: a count is below 1.
    """
    if calls < 1 or chunk < 1 or rounds < 1:
        raise ValueError("calls, chunk and rounds must be at least 1")
    workload = _workload()
    executor = DaskExecutor(client, **executor_settings)
    dask_client: Any = executor.client
    domains = cores or executor.worker_count
    small = per_call_calls or max(64, calls // 8)
    every = workload.calls_for_wave(calls)
    few = workload.calls_for_wave(small)
    measures: dict[str, Callable[[], float]] = {
        "tokengate": lambda: _tokengate_round(workload, every, executor, domains),
        "per_call": lambda: _per_call_round(dask_client, few),
        "hand_batched": lambda: _hand_batched_round(dask_client, every, chunk),
    }
    for side in SIDES:  # warm-up: imports and first tasks on every worker
        measures[side]()
    all_rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in range(rounds):
        order = SIDES[index % 3 :] + SIDES[: index % 3]
        for side in order:
            rate = measures[side]()
            all_rates[side].append(rate)
            _log.info("dask bench round %d: %s %.0f calls/s", index + 1, side, rate)
    return DaskBenchResult(
        calls=calls,
        per_call_calls=small,
        chunk=chunk,
        rounds=rounds,
        workers=executor.workers,
        cores=domains,
        rates={side: max(values) for side, values in all_rates.items()},
        all_rates=all_rates,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tokengate.dask._bench``: run :func:`run` and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m tokengate.dask._bench")
    parser.add_argument("--scheduler", help="scheduler address (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster workers")
    parser.add_argument("--calls", type=int, default=4096)
    parser.add_argument("--per-call-calls", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=None)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    options = parser.parse_args(argv)
    settings: dict[str, Any] = {}
    if options.max_batch is not None:
        settings["max_batch"] = options.max_batch
    cluster: distributed.LocalCluster | None = None
    if options.scheduler is None:
        cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=options.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
        address = cluster.scheduler_address
    else:
        address = options.scheduler
    try:
        with distributed.Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            result = run(
                client,
                calls=options.calls,
                per_call_calls=options.per_call_calls,
                rounds=options.rounds,
                cores=options.cores,
                **settings,
            )
    finally:
        if cluster is not None:
            cluster.close()
    print(f"workers: {len(result.workers)}, cores: {result.cores}, calls: {result.calls}")
    for side in SIDES:
        rounds = ", ".join(f"{r:.0f}" for r in result.all_rates[side])
        print(f"{side:>13}: {result.rates[side]:9.0f} calls/s (rounds: {rounds})")
    print(
        f"TokenGate on Dask vs one client.submit per call: {result.vs_per_call:.1f}x "
        f"(median rounds: {result.median_vs_per_call:.1f}x)"
    )
    print(
        f"TokenGate on Dask vs hand-batched tasks of {result.chunk}: "
        f"{result.vs_hand_batched:.2f}x (median rounds: {result.median_vs_hand_batched:.2f}x)"
    )
    if options.json_path:
        with open(options.json_path, "w", encoding="utf-8") as handle:
            json.dump(result.as_dict(), handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
