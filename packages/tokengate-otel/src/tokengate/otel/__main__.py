"""``python -m tokengate.otel``: measure what the instrumentation costs on the seed workload."""

from __future__ import annotations

import argparse
import sys

from ._overhead import measure_overhead


def main(argv: list[str] | None = None) -> int:
    """Run :func:`tokengate.otel.measure_overhead` and print its summary."""
    parser = argparse.ArgumentParser(
        prog="python -m tokengate.otel",
        description="Throughput of the seed workload uninstrumented, with metrics, and with "
        "metrics and traces (real OpenTelemetry SDK), alternating in one process.",
    )
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per side per round")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    parser.add_argument("--cores", type=int, default=None, help="core domains")
    parser.add_argument("--workers-per-core", type=int, default=4, help="workers per domain")
    parser.add_argument(
        "--exact-histograms",
        action="store_true",
        help="record every token in the duration histograms (no sampling)",
    )
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.rounds < 1:
        parser.error("--tokens and --rounds must be at least 1")
    report = measure_overhead(
        args.tokens,
        args.rounds,
        cores=args.cores,
        workers_per_core=args.workers_per_core,
        **({"max_histogram_rate": None} if args.exact_histograms else {}),
    )
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
