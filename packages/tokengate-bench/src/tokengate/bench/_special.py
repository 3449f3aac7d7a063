"""The workloads ``tokengate bench`` runs beside the waves: blocking IO (``--io``), open-loop
latency (``--latency``) and the seed workload on Dask (``--executor dask``).

Each function runs its workload with its baselines in this process and returns the figures as
a JSON-ready dict, table rows and the target ratios.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._stats import Target

__all__ = (
    "TARGET_DASK_VS_HAND_BATCHED",
    "TARGET_DASK_VS_PER_CALL",
    "TARGET_IO_VS_ANYIO",
    "TARGET_IO_VS_RUN_IN_EXECUTOR",
    "run_dask",
    "run_io",
    "run_latency",
)

TARGET_IO_VS_ANYIO = 0.9
TARGET_IO_VS_RUN_IN_EXECUTOR = 1.5
TARGET_DASK_VS_PER_CALL = 20.0
TARGET_DASK_VS_HAND_BATCHED = 1.0

Rows = list[list[str]]


def run_io(*, calls: int, mixed: bool) -> tuple[dict[str, Any], Rows, list[Target]]:
    """The blocking-IO workload (10 ms sleeps), alone or mixed with the seed's CPU bodies."""
    from ._io_workload import run_io_workload

    result = run_io_workload(calls=calls, mixed=mixed)
    rows = [
        [name, ", ".join(f"{s:.3f}" for s in side.seconds), f"{side.throughput:,.0f}"]
        for name, side in result.sides.items()
    ]
    kind = "IO mixed" if mixed else "IO"
    targets = [
        Target(
            f"{kind}: TokenGate / anyio.to_thread.run_sync",
            result.ratios["vs_anyio"],
            TARGET_IO_VS_ANYIO,
        ),
        Target(
            f"{kind}: TokenGate / run_in_executor(None)",
            result.ratios["vs_run_in_executor"],
            TARGET_IO_VS_RUN_IN_EXECUTOR,
        ),
    ]
    return dataclasses.asdict(result), rows, targets


def run_latency(*, duration: float) -> tuple[dict[str, Any], Rows, list[Target]]:
    """Open-loop arrivals at 200, 1,000 and 3,000 calls/s of ~100 µs bodies."""
    from ._latency_workload import run_latency_workload

    result = run_latency_workload(duration=duration)
    rows = [
        [
            f"{point.rate:,.0f}",
            point.side,
            f"{point.achieved:,.0f}",
            f"{point.p50_ms:.3f}",
            f"{point.p99_ms:.3f}",
        ]
        for point in result.points
    ]
    targets = [
        Target(f"latency {key}: TokenGate / ThreadPoolExecutor", value, 1.0, False)
        for key, value in result.ratios.items()
    ]
    return dataclasses.asdict(result), rows, targets


def run_dask(*, workers: int = 2) -> tuple[dict[str, Any], Rows, list[Target]]:
    """The seed workload on a local Dask cluster (worker processes, one thread each).

    Raises:
        ImportError: tokengate-dask (or distributed) is not installed.
    """
    import distributed

    from tokengate.dask._bench import run

    cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    try:
        with distributed.Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            result = run(client)
    finally:
        cluster.close()
    medians = result.medians
    rows = [[side, f"{rate:,.0f}"] for side, rate in medians.items()]
    targets = [
        Target(
            "Dask: TokenGate / one client.submit per call",
            result.median_vs_per_call,
            TARGET_DASK_VS_PER_CALL,
        ),
        Target(
            f"Dask: TokenGate / hand-batched tasks of {result.chunk}",
            result.median_vs_hand_batched,
            TARGET_DASK_VS_HAND_BATCHED,
        ),
    ]
    return result.as_dict(), rows, targets
