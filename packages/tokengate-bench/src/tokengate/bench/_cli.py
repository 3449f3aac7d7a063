"""``tokengate bench`` and ``tokengate demo``: the subcommands tokengate-bench contributes to
the ``tokengate`` command (entry-point group ``tokengate.commands``).

``tokengate bench`` runs the maximum-concurrency workload (and, with ``--baseline``, the same
waves on a pool and in a one-thread loop), ``--io`` the blocking-IO workload, ``--latency`` the
open-loop latency workload; ``tokengate demo`` runs the cache-storm, conductor and endurance
demos, each verifying what it shows. Every command exits non-zero when a verification fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tokengate.core.cli import Output

if TYPE_CHECKING:
    from ._demos import DemoResult
    from ._stats import Target

__all__ = ("bench_main", "demo_main")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Waves of the benchmark that ``demo all`` runs (``make demo``).
DEMO_WAVES = 12
#: No-op tokens per round when the no-op micro-benchmark runs with ``--baseline``.
DEFAULT_NOOP_TOKENS = 20_000


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


def _waves(text: str) -> int:
    value = _positive_int(text)
    if value > 15:
        raise argparse.ArgumentTypeError(f"the workload has 15 waves, not {value}")
    return value


def _output_parent() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--plain", action="store_true", help="plain text even on a terminal with rich installed"
    )
    output.add_argument("--quiet", action="store_true", help="print nothing (exit status only)")
    return output


def build_bench_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tokengate bench``."""
    bench = argparse.ArgumentParser(
        prog="tokengate bench",
        parents=[_output_parent()],
        description=(
            "Waves of 4, 8, ..., 65,536 calls of four operations, submitted then gathered. "
            "--baseline runs the same waves on ThreadPoolExecutor + asyncio.wrap_future and in "
            "a one-thread loop, alternating wave by wave, and prints the ratios against the "
            "targets."
        ),
    )
    bench.add_argument(
        "--waves", type=_waves, default=None, metavar="N", help="run the first N waves (1-15)"
    )
    bench.add_argument(
        "--baseline",
        action="store_true",
        help="also run ThreadPoolExecutor and the one-thread loop (and the no-op micro)",
    )
    bench.add_argument("--json", metavar="PATH", help="write every figure to a JSON file")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG of rate and latency per wave")
    bench.add_argument(
        "--noop",
        type=_non_negative_int,
        metavar="N",
        default=None,
        help=(
            "no-op micro-benchmark with N tokens per round (alone unless --waves or "
            f"--baseline is given; --baseline runs it with {DEFAULT_NOOP_TOKENS:,}; 0: skip)"
        ),
    )
    bench.add_argument(
        "--rounds",
        type=_positive_int,
        default=5,
        metavar="N",
        help="rounds of the no-op micro (median; default 5)",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="also run each side alone in a fresh process and compare peak memory",
    )
    bench.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=256,
        metavar="N",
        help="warm-up calls per side (default 256)",
    )
    bench.add_argument(
        "--only",
        choices=("tokengate", "threadpool", "processpool", "loop"),
        help=argparse.SUPPRESS,
    )
    bench.add_argument(
        "--executor",
        choices=("thread", "process", "auto", "dask"),
        default="thread",
        help=(
            "where TokenGate runs the bodies (default thread). process/auto: the pool baseline "
            "is a ProcessPoolExecutor; dask: the seed workload on a 2-worker LocalCluster "
            "against one client.submit per call and hand-batched tasks of 64 calls"
        ),
    )
    bench.add_argument(
        "--io",
        action="store_true",
        help=(
            "the blocking-IO workload: calls that sleep, alone and mixed with the seed's CPU "
            "bodies, against anyio.to_thread.run_sync and loop.run_in_executor(None)"
        ),
    )
    bench.add_argument(
        "--io-calls", type=_positive_int, default=2000, metavar="N", help="calls per IO round"
    )
    bench.add_argument(
        "--latency",
        action="store_true",
        help=(
            "open-loop latency: ~100 us calls arriving at 200, 1,000 and 3,000/s, awaited from "
            "an event loop, against ThreadPoolExecutor + wrap_future and anyio"
        ),
    )
    bench.add_argument(
        "--latency-seconds",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds of arrivals per side and rate (default 2)",
    )

    return bench


def build_demo_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tokengate demo``."""
    output = _output_parent()
    demo = argparse.ArgumentParser(prog="tokengate demo", description="verified demos")
    demos = demo.add_subparsers(dest="demo", metavar="DEMO")
    demos.required = True

    storm = demos.add_parser(
        "cache-storm",
        parents=[output],
        help="sticky routing under a storm of identical and distinct calls",
    )
    _storm_options(storm)
    storm.add_argument("--json", metavar="PATH", help="write the checks and figures to JSON")

    conductor = demos.add_parser(
        "conductor", parents=[output], help="leads spawn children inside conductor domains"
    )
    _conductor_options(conductor)
    conductor.add_argument("--json", metavar="PATH", help="write the checks and figures to JSON")

    scheduler = demos.add_parser(
        "scheduler",
        parents=[output],
        help="head-of-line, leads waiting for their children, blocking IO (beside a pool)",
    )
    scheduler.add_argument("--json", metavar="PATH", help="write the checks and figures to JSON")

    endurance = demos.add_parser(
        "endurance", parents=[output], help="IDLE / NORMAL / SURGE phases of random batches"
    )
    _endurance_options(endurance, default_duration=30.0)
    endurance.add_argument("--json", metavar="PATH", help="write the checks and figures to JSON")

    every = demos.add_parser(
        "all",
        parents=[output],
        help=f"the {DEMO_WAVES}-wave bench with baseline, then every demo (make demo)",
    )
    every.add_argument(
        "--waves",
        type=_waves,
        default=DEMO_WAVES,
        metavar="N",
        help="waves of the bench (default 12)",
    )
    every.add_argument(
        "--noop",
        type=_non_negative_int,
        default=DEFAULT_NOOP_TOKENS,
        metavar="N",
        help="no-op tokens per round (0: skip)",
    )
    _storm_options(every)
    _conductor_options(every, prefix=True)
    _endurance_options(every, default_duration=6.0)
    every.add_argument("--json", metavar="PATH", help="write every result to one JSON file")

    return demo


def _storm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=_positive_int, default=8, help="anchored keys")
    parser.add_argument(
        "--burst", type=_non_negative_int, default=50, help="identical calls per key"
    )
    parser.add_argument(
        "--distinct",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="calls with distinct keys (default 8 per key)",
    )
    parser.add_argument(
        "--cores", type=_positive_int, default=4, help="core domains of the demo coordinators"
    )


def _conductor_options(parser: argparse.ArgumentParser, *, prefix: bool = False) -> None:
    parser.add_argument("--leads", type=_positive_int, default=8, help="lead tokens")
    parser.add_argument("--children", type=_non_negative_int, default=4, help="children per lead")
    parser.add_argument(
        "--grandchildren", type=_non_negative_int, default=1, help="grandchildren per child"
    )
    if not prefix:
        parser.add_argument(
            "--cores", type=_positive_int, default=4, help="core domains of the coordinator"
        )


def _endurance_options(parser: argparse.ArgumentParser, *, default_duration: float) -> None:
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=default_duration,
        help=f"seconds of load (default {default_duration:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random batches")
    parser.add_argument(
        "--batch-scale",
        type=_positive_float,
        default=1.0,
        help="multiply every batch size (IDLE 1-16, NORMAL 32-160, SURGE 400-1500)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=20_000,
        help="tokens not yet gathered before a new batch waits",
    )


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, bench: bool) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors
        code = exc.code
        return code if isinstance(code, int) else EXIT_USAGE
    out = Output(plain=args.plain, quiet=args.quiet)
    try:
        return _cmd_bench(args, out) if bench else _cmd_demo(args, out)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        _silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("tokengate: interrupted\n")
        return 130


def bench_main(argv: list[str] | None = None) -> int:
    """the maximum-concurrency, blocking-IO and latency benchmarks, with baselines

    Returns 0 when every call succeeded, 1 when one failed, 2 for a usage error (including
    ``--plot`` without matplotlib). A missed speed target is reported as MISS but is not a
    failure: benchmarks are measured on shared, noisy machines.
    """
    return _run(build_bench_parser(), argv, bench=True)


def demo_main(argv: list[str] | None = None) -> int:
    """verified demos: cache-storm, conductor, endurance, all

    Returns 0 when every verification held, 1 when one failed, 2 for a usage error.
    """
    return _run(build_demo_parser(), argv, bench=False)


def _silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _cmd_bench(args: argparse.Namespace, out: Output) -> int:
    from ._bench import BenchOptions, run_bench
    from ._plot import PlotUnavailableError, check_plot_available, write_plot
    from ._render import render_bench, wave_listener

    if args.plot:
        try:
            check_plot_available()
        except PlotUnavailableError as exc:
            sys.stderr.write(f"tokengate bench: {exc}\n")
            return EXIT_USAGE
    special = args.io or args.latency or args.executor == "dask"
    if special:
        return _cmd_special(args, out)
    noop_only = args.noop is not None and args.waves is None and not args.baseline
    if noop_only:
        return _cmd_noop(args, out)
    noop = args.noop if args.noop is not None else (DEFAULT_NOOP_TOKENS if args.baseline else 0)
    if args.only is not None:
        noop = 0
    options = BenchOptions(
        waves=args.waves or 15,
        baseline=args.baseline,
        only=args.only,
        warmup=args.warmup,
        executor=args.executor,
    )
    report = run_bench(
        options,
        wave_listener(out),
        noop_tokens=noop,
        noop_rounds=args.rounds,
        memory=args.memory and args.only is None,
    )
    render_bench(out, report)
    if args.json:
        path = report.write_json(args.json)
        out.line(f"figures written to {path}")
    if args.plot:
        path = write_plot(report, args.plot)
        out.line(f"plot written to {path}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_special(args: argparse.Namespace, out: Output) -> int:
    """``--io``, ``--latency`` and ``--executor dask``: each its own workload and baselines."""
    from ._render import render_targets

    payload: dict[str, object] = {}
    targets: list[Target] = []
    try:
        _run_special(args, out, payload, targets)
    except ImportError as exc:
        from tokengate.core.cli import install_hint

        sys.stderr.write(f"tokengate bench: {exc}; {install_hint('tokengate-dask')}\n")
        return EXIT_USAGE
    except Exception as exc:  # a call failed: the workload stops there
        out.verdict(False, f"the workload failed: {exc!r}")
        return EXIT_FAILED
    render_targets(out, targets)
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload["targets"] = [t.as_dict() for t in targets]
        target.write_text(json.dumps(payload, indent=2, default=str))
        out.line(f"figures written to {target}")
    out.verdict(True, "every call succeeded")
    return EXIT_OK


def _run_special(
    args: argparse.Namespace, out: Output, payload: dict[str, object], targets: list[Target]
) -> None:
    from ._special import run_dask, run_io, run_latency

    if args.io:
        for mixed in (False, True):
            result, rows, found = run_io(calls=args.io_calls, mixed=mixed)
            title = "blocking IO, mixed with CPU bodies" if mixed else "blocking IO"
            out.table(title, ("side", "rounds (s)", "calls/s"), rows)
            targets.extend(found)
            payload["io_mixed" if mixed else "io"] = result
    if args.latency:
        result, rows, found = run_latency(duration=args.latency_seconds)
        out.table("open-loop latency", ("rate/s", "side", "achieved/s", "p50 ms", "p99 ms"), rows)
        targets.extend(found)
        payload["latency"] = result
    if args.executor == "dask":
        result, rows, found = run_dask()
        out.table(
            "seed workload on Dask (2-worker LocalCluster)", ("side", "calls/s (median)"), rows
        )
        targets.extend(found)
        payload["dask"] = result


def _cmd_noop(args: argparse.Namespace, out: Output) -> int:
    from ._bench import run_noop
    from ._render import render_noop, render_targets

    result = run_noop(args.noop, args.rounds, executor=args.executor) if args.noop else None
    if result is None:
        out.line("nothing to run: --noop 0")
        return EXIT_OK
    render_noop(out, result)
    render_targets(out, [result.target])
    ok = result.failed == 0
    out.verdict(ok, f"no-op: {result.failed} failed calls")
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(
                {
                    "noop": result.as_dict(),
                    "targets": [result.target.as_dict()],
                    "verdict": {"ok": ok, "failed_tokens": result.failed},
                },
                indent=2,
            )
        )
        out.line(f"figures written to {target}")
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from ._demos import run_cache_storm, run_conductor, run_endurance

    results: list[DemoResult] = []
    if args.demo == "all":
        return _cmd_demo_all(args, out)
    if args.demo == "cache-storm":
        out.heading("demo cache-storm")
        results.append(
            run_cache_storm(
                keys=args.keys, burst=args.burst, distinct=args.distinct, cores=args.cores
            )
        )
    elif args.demo == "scheduler":
        from ._sched_demo import run_scheduler

        out.heading("demo scheduler")
        results.append(run_scheduler())
    elif args.demo == "conductor":
        out.heading("demo conductor")
        results.append(
            run_conductor(
                leads=args.leads,
                children=args.children,
                grandchildren=args.grandchildren,
                cores=args.cores,
            )
        )
    else:
        out.heading(f"demo endurance ({args.duration:g} s)")
        results.append(
            run_endurance(
                duration=args.duration,
                seed=args.seed,
                batch_scale=args.batch_scale,
                max_in_flight=args.max_in_flight,
            )
        )
    for result in results:
        _render_demo(out, result)
    if args.json:
        results[0].write_json(args.json)
        out.line(f"figures written to {args.json}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _render_demo(out: Output, result: DemoResult) -> None:
    for title, columns, rows in result.tables:
        out.table(title, columns, rows)
    for note in result.notes:
        out.line(note)
    for check in result.checks:
        out.verdict(check.ok, f"{check.name}: {check.detail}" if check.detail else check.name)
    out.verdict(result.ok, f"demo {result.name}")


def _cmd_demo_all(args: argparse.Namespace, out: Output) -> int:
    from ._bench import BenchOptions, run_bench
    from ._demos import run_cache_storm, run_conductor, run_endurance
    from ._render import render_bench, wave_listener

    verdicts: list[tuple[str, bool]] = []
    payload: dict[str, object] = {}

    out.heading(f"bench: {args.waves} waves with baseline")
    report = run_bench(
        BenchOptions(waves=args.waves, baseline=True),
        wave_listener(out),
        noop_tokens=args.noop,
    )
    render_bench(out, report)
    verdicts.append(("bench (zero failed tokens)", report.ok))
    payload["bench"] = report.as_dict()

    from ._sched_demo import run_scheduler

    demos: list[tuple[str, str, Callable[[], DemoResult]]] = [
        ("scheduler", "demo scheduler", run_scheduler),
        (
            "cache-storm",
            "demo cache-storm",
            lambda: run_cache_storm(
                keys=args.keys, burst=args.burst, distinct=args.distinct, cores=args.cores
            ),
        ),
        (
            "conductor",
            "demo conductor",
            lambda: run_conductor(
                leads=args.leads,
                children=args.children,
                grandchildren=args.grandchildren,
                cores=args.cores,
            ),
        ),
        (
            "endurance",
            f"demo endurance ({args.duration:g} s)",
            lambda: run_endurance(
                duration=args.duration,
                seed=args.seed,
                batch_scale=args.batch_scale,
                max_in_flight=args.max_in_flight,
            ),
        ),
    ]
    for key, heading, run in demos:
        out.heading(heading)
        result = run()
        _render_demo(out, result)
        verdicts.append((f"demo {key}", result.ok))
        payload[key] = result.as_dict()

    out.heading("summary")
    for name, ok in verdicts:
        out.verdict(ok, name)
    ok = all(v for _, v in verdicts)
    payload["ok"] = ok
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(payload, indent=2))
        out.line(f"figures written to {target}")
    out.verdict(ok, "every verification held" if ok else "some verification failed")
    return EXIT_OK if ok else EXIT_FAILED
