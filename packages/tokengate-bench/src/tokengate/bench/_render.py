"""Terminal output: rich when it is installed and stdout is a terminal, plain text otherwise.

The generic writer (:class:`tokengate.core.cli.Output`) comes from the core; this module adds the
benchmark's progress display and tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tokengate.core.cli import Output

from ._bench import SIDE_TITLES, BenchReport, NoopResult, WaveListener, machine_cpus
from ._stats import SideSummary, Target, WaveResult

__all__ = ("render_bench", "render_noop", "render_targets", "wave_listener")


def wave_listener(out: Output) -> WaveListener:
    """A listener that shows the benchmark's progress (a bar per wave, or plain lines)."""
    if out.quiet:
        return WaveListener()
    if out.console is not None:
        return _RichProgress(out.console)
    return _PlainProgress(out)


def rate(value: float) -> str:
    """A rate with thousands separators."""
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Milliseconds with a precision that suits their size."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float) -> str:
    """A ratio such as ``1.23x``."""
    return f"{value:.2f}x"


class _PlainProgress(WaveListener):
    def __init__(self, out: Output) -> None:
        self.out = out
        self.total = 0

    def begin(self, sizes: Sequence[int], sides: Sequence[str]) -> None:
        self.total = len(sizes)
        names = ", ".join(SIDE_TITLES[s] for s in sides)
        self.out.line(
            f"{len(sizes)} waves, {sum(sizes):,} tokens per side ({names}); warming up ..."
        )

    def side_done(self, result: WaveResult) -> None:
        self.out.line(
            f"wave {result.wave:2d}/{self.total} {result.tokens:6d} tokens "
            f"{SIDE_TITLES[result.side]:<18} end-to-end {rate(result.end_to_end_rate):>8}/s  "
            f"p50 {ms(result.latency_p50_ms):>7} ms  p99 {ms(result.latency_p99_ms):>7} ms"
            + (f"  FAILED {result.failed}" if result.failed else "")
        )


class _RichProgress(WaveListener):
    """A progress bar per wave (one step per side); refreshed only between timed spans."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            auto_refresh=False,
        )
        self.task: Any = None
        self.total = 0
        self.sides: Sequence[str] = ()

    def begin(self, sizes: Sequence[int], sides: Sequence[str]) -> None:
        self.total = len(sizes)
        self.sides = sides
        self.progress.start()
        self.progress.console.print(
            f"{len(sizes)} waves, {sum(sizes):,} tokens per side "
            f"({', '.join(SIDE_TITLES[s] for s in sides)}); warming up ..."
        )
        self.progress.refresh()

    def wave_started(self, wave: int, size: int) -> None:
        self.task = self.progress.add_task(
            f"wave {wave:2d}/{self.total} {size:6,d} tokens", total=len(self.sides), note=""
        )
        self.progress.refresh()

    def side_done(self, result: WaveResult) -> None:
        if self.task is None:
            return
        note = (
            f"{SIDE_TITLES[result.side]} {rate(result.end_to_end_rate)}/s "
            f"p50 {ms(result.latency_p50_ms)} ms"
        )
        if result.failed:
            note += f" FAILED {result.failed}"
        self.progress.update(self.task, advance=1, note=note)
        self.progress.refresh()

    def end(self) -> None:
        self.progress.refresh()
        self.progress.stop()


def _wave_rows(side: SideSummary) -> list[list[str]]:
    return [
        [
            str(w.wave),
            f"{w.tokens:,}",
            f"{w.ok:,}",
            f"{w.failed:,}",
            ms(w.submit_s * 1000),
            ms(w.elapsed_s * 1000),
            rate(w.rate),
            f"{w.ms_per_token:.3f}",
            rate(w.end_to_end_rate),
            ms(w.latency_p50_ms),
            ms(w.latency_p99_ms),
            f"{w.overlap:.2f}",
        ]
        for w in side.waves
    ]


WAVE_COLUMNS = (
    "wave",
    "tokens",
    "ok",
    "fail",
    "submit ms",
    "elapsed ms",
    "tok/s",
    "ms/tok",
    "e2e tok/s",
    "p50 ms",
    "p99 ms",
    "overlap",
)


#: Columns left out on terminals narrower than 120 characters.
_WIDE_ONLY = frozenset({"ok", "ms/tok", "tok/s"})


def render_targets(out: Output, targets: Sequence[Target]) -> None:
    """The target ratios with PASS/MISS labels (a MISS is reported, not a failure)."""
    if not targets:
        return
    rows = [[t.name, ratio(t.value), t.bound, t.label] for t in targets]
    out.table(
        "targets (a MISS is reported, not a failure)",
        ("ratio", "measured", "target", ""),
        rows,
    )


def render_noop(out: Output, noop: NoopResult) -> None:
    """The no-op micro-benchmark."""
    out.table(
        f"No-op micro-benchmark: {noop.tokens:,} tokens x {noop.rounds} rounds (median)",
        ("side", "tokens/s", "rounds"),
        [
            [
                "TokenGate",
                rate(noop.tokengate),
                " ".join(rate(r) for r in noop.tokengate_rates),
            ],
            [
                noop.pool_title,
                rate(noop.threadpool),
                " ".join(rate(r) for r in noop.threadpool_rates),
            ],
        ],
    )


def render_bench(out: Output, report: BenchReport) -> None:
    """The per-wave tables, the summary side by side, the ratios and the verdict."""
    narrow = out.width < 120
    keep = [i for i, c in enumerate(WAVE_COLUMNS) if not narrow or c not in _WIDE_ONLY]
    for name, side in report.sides.items():
        rows = [[row[i] for i in keep] for row in _wave_rows(side)]
        out.table(f"{SIDE_TITLES[name]}: per wave", [WAVE_COLUMNS[i] for i in keep], rows)
    sides = list(report.sides.items())
    if sides:
        tg = report.sides.get("tokengate")
        columns: list[str] = ["figure"]
        for name, _ in sides:
            columns.append(_HEADERS[name])
            if tg is not None and name != "tokengate":
                columns.append(f"TG/{_SHORT[name]}")
        rows = []
        for label, kind, get in _FIGURES:
            row = [label]
            for name, side in sides:
                value = get(side)
                row.append(_fmt(kind, value))
                if tg is not None and name != "tokengate":
                    mine = get(tg)
                    row.append(ratio(mine / value) if kind in {"r", "ms", "us"} and value else "")
            rows.append(row)
        out.table("Summary", columns, rows)
        for note in _LEGEND:
            out.line(note, style="dim")
    if report.noop is not None:
        render_noop(out, report.noop)
    if report.memory is not None:
        mem = report.memory
        out.table(
            "Peak memory (each side alone in a fresh process)",
            ("side", "start MiB", "peak MiB", "growth MiB", "over loop MiB", "retained blocks"),
            [
                [
                    SIDE_TITLES[name],
                    f"{mem.start_rss_mb[name]:.1f}",
                    f"{mem.peak_rss_mb[name]:.1f}",
                    f"{mem.growth_mb(name):.1f}",
                    _optional_mb(mem.overhead_mb(name)),
                    f"{mem.retained_blocks.get(name, 0):,}",
                ]
                for name in mem.peak_rss_mb
            ],
        )
        out.line(
            "growth = peak - start (after the warm-up); over loop = growth - the loop's growth "
            "(the loop holds only each wave's results); retained blocks = "
            "sys.getallocatedblocks() after the run minus before it",
            style="dim",
        )
    render_targets(out, report.targets())
    load = report.load_average
    if load.get("start", -1.0) >= 0:
        out.line(
            f"machine: {machine_cpus()} CPUs, load average {load['start']:.2f} at the start, "
            f"{load.get('end', -1.0):.2f} at the end (other processes share these CPUs)",
            style="dim",
        )
    if report.ok:
        out.verdict(True, f"bench: every call succeeded ({report.wall_s:.1f} s)")
    else:
        for problem in report.problems[:20]:
            out.line(f"  {problem}", style="red")
        out.verdict(False, f"bench: {len(report.problems)} problem(s)")


_SHORT = {"threadpool": "TPE", "processpool": "PPE", "loop": "loop"}
_HEADERS = {
    "tokengate": "TokenGate",
    "threadpool": "ThreadPool",
    "processpool": "ProcessPool",
    "loop": "loop",
}

_FIGURES: tuple[tuple[str, str, Callable[[SideSummary], float]], ...] = (
    ("tokens", "n", lambda s: s.tokens),
    ("ok", "n", lambda s: s.ok),
    ("failed", "n", lambda s: s.failed),
    ("wall s", "s", lambda s: s.wall_s),
    ("submission s", "s", lambda s: s.submit_s),
    ("active s", "s", lambda s: s.active_s),
    ("sustained tok/s", "r", lambda s: s.sustained),
    ("peak tok/s", "r", lambda s: s.peak),
    ("token-weighted tok/s", "r", lambda s: s.token_weighted_mean),
    ("arithmetic mean tok/s", "r", lambda s: s.arithmetic_mean),
    ("END TO END tok/s", "r", lambda s: s.end_to_end),
    ("CPU us/token", "us", lambda s: s.cpu_us_per_token),
    ("latency p50 ms", "ms", lambda s: s.latency_ms(50)),
    ("latency p99 ms", "ms", lambda s: s.latency_ms(99)),
)

_LEGEND = (
    "wall = warm-up + submission + active + pauses; active = sum of wave elapsed",
    "(gather spans); sustained = tokens / active; peak = best wave rate;",
    "token-weighted = sum(rate * tokens) / tokens; END TO END = tokens /",
    "(submission + active), the honest figure; latency = submission -> completion",
    "of each call; CPU us/token = process CPU (all threads) / tokens, robust to a",
    "noisy machine; TG/x = TokenGate / x (for latency and CPU, lower is better).",
)


def _optional_mb(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _fmt(kind: str, value: float) -> str:
    if kind == "n":
        return f"{int(value):,}"
    if kind == "s":
        return f"{value:.3f}"
    if kind in {"ms", "us"}:
        return ms(value)
    return rate(value)
