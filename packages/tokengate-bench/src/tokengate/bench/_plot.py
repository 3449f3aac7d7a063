"""``--plot``: a PNG of throughput and latency per wave (matplotlib, an optional extra)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ._bench import SIDE_TITLES, BenchReport

__all__ = ("PlotUnavailableError", "check_plot_available", "write_plot")

_COLORS = {
    "tokengate": "#1f77b4",
    "threadpool": "#d62728",
    "processpool": "#ff7f0e",
    "loop": "#7f7f7f",
}


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def check_plot_available() -> None:
    """Fail early, before a long run, when matplotlib is missing.

    Raises:
        PlotUnavailableError: with the command that installs it.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed; install it with "
            "'pip install tokengate-core[plot]' (or 'pip install matplotlib'), or drop --plot"
        )


def write_plot(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Draw end-to-end throughput and p50/p99 latency per wave for every side; save a PNG.

    Raises:
        PlotUnavailableError: matplotlib is not installed.
    """
    check_plot_available()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    rate_ax, latency_ax = figure.subplots(1, 2)
    for name, side in report.sides.items():
        sizes = [w.tokens for w in side.waves]
        color = _COLORS.get(name)
        title = SIDE_TITLES[name]
        rate_ax.plot(sizes, [w.end_to_end_rate for w in side.waves], "o-", color=color, label=title)
        latency_ax.plot(
            sizes, [w.latency_p50_ms for w in side.waves], "o-", color=color, label=f"{title} p50"
        )
        latency_ax.plot(
            sizes,
            [w.latency_p99_ms for w in side.waves],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{title} p99",
        )
    rate_ax.set_xscale("log", base=2)
    rate_ax.set_xlabel("tokens in the wave")
    rate_ax.set_ylabel("tokens / s (end to end: submission + gather)")
    rate_ax.set_title("Throughput per wave")
    rate_ax.grid(True, which="both", alpha=0.3)
    rate_ax.set_ylim(bottom=0)
    rate_ax.legend()
    latency_ax.set_xscale("log", base=2)
    latency_ax.set_yscale("log")
    latency_ax.set_xlabel("tokens in the wave")
    latency_ax.set_ylabel("ms, submission → completion")
    latency_ax.set_title("Per-token latency per wave")
    latency_ax.grid(True, which="both", alpha=0.3)
    latency_ax.legend(fontsize="small")
    figure.suptitle(
        f"tokengate bench: {sum(w.tokens for w in next(iter(report.sides.values())).waves):,} "
        f"tokens per side, {report.cores} cores x {report.workers_per_core} workers"
        if report.sides
        else "tokengate bench"
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    return target
