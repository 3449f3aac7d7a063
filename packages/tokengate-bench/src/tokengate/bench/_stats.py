"""Figures of the benchmark: one wave of one side, a side's summary, ratios against targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "SideSummary",
    "Target",
    "WaveResult",
    "percentile",
    "summarize",
)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class WaveResult:
    """One wave of one side.

    Attributes:
        side: ``tokengate``, ``threadpool`` or ``loop``.
        wave: the wave number, from 1.
        tokens: calls in the wave.
        ok: calls that returned.
        failed: calls that raised, or that had not completed when the wave timed out.
        submit_s: seconds spent submitting (0 for the loop, which has no submission).
        gather_s: seconds from the end of submission to the last completion (for the loop:
            the whole loop). This is the wave's *elapsed* time.
        task_s: Σ of the body durations of the wave's calls.
        latencies: per-call latency in seconds, submission → completion, sorted.
        first_error: ``repr`` of the first failure, if any.
        cpu_s: CPU time of the whole process (every thread) during submission + gather.
    """

    side: str
    wave: int
    tokens: int
    ok: int
    failed: int
    submit_s: float
    gather_s: float
    task_s: float
    latencies: Sequence[float] = field(repr=False)
    first_error: str | None = None
    cpu_s: float = 0.0

    @property
    def elapsed_s(self) -> float:
        """The wave's elapsed time: the gather span (submission excluded)."""
        return self.gather_s

    @property
    def rate(self) -> float:
        """tokens / elapsed."""
        return _rate(self.tokens, self.elapsed_s)

    @property
    def ms_per_token(self) -> float:
        """elapsed / tokens in milliseconds: inverse throughput, not latency."""
        return self.elapsed_s * 1000.0 / self.tokens if self.tokens else 0.0

    @property
    def end_to_end_s(self) -> float:
        """submission + gather."""
        return self.submit_s + self.gather_s

    @property
    def end_to_end_rate(self) -> float:
        """tokens / (submission + gather)."""
        return _rate(self.tokens, self.end_to_end_s)

    @property
    def latency_p50_ms(self) -> float:
        """Median per-call latency (submission → completion), milliseconds."""
        return percentile(self.latencies, 50) * 1000.0

    @property
    def latency_p99_ms(self) -> float:
        """99th percentile per-call latency (submission → completion), milliseconds."""
        return percentile(self.latencies, 99) * 1000.0

    @property
    def cpu_us_per_token(self) -> float:
        """Process CPU time per call, microseconds (robust to a noisy, shared machine)."""
        return self.cpu_s * 1e6 / self.tokens if self.tokens else 0.0

    @property
    def overlap(self) -> float:
        """Σ body durations / elapsed."""
        return self.task_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every figure of the wave, JSON-ready."""
        return {
            "wave": self.wave,
            "tokens": self.tokens,
            "ok": self.ok,
            "failed": self.failed,
            "submit_s": self.submit_s,
            "gather_s": self.gather_s,
            "elapsed_s": self.elapsed_s,
            "tokens_per_s": self.rate,
            "ms_per_token": self.ms_per_token,
            "end_to_end_s": self.end_to_end_s,
            "end_to_end_tokens_per_s": self.end_to_end_rate,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "task_s": self.task_s,
            "overlap": self.overlap,
            "cpu_s": self.cpu_s,
            "cpu_us_per_token": self.cpu_us_per_token,
            "first_error": self.first_error,
        }


@dataclass(frozen=True, slots=True)
class SideSummary:
    """The summary figures of one side.

    Attributes:
        side: the side's name.
        waves: its waves, in order.
        warmup_s: seconds of its warm-up (submission + gather of 256 calls).
        pause_s: seconds it slept between waves.
    """

    side: str
    waves: tuple[WaveResult, ...]
    warmup_s: float
    pause_s: float

    @property
    def tokens(self) -> int:
        """Σ tokens."""
        return sum(w.tokens for w in self.waves)

    @property
    def ok(self) -> int:
        """Σ ok."""
        return sum(w.ok for w in self.waves)

    @property
    def failed(self) -> int:
        """Σ failed."""
        return sum(w.failed for w in self.waves)

    @property
    def submit_s(self) -> float:
        """Σ submission time."""
        return sum(w.submit_s for w in self.waves)

    @property
    def active_s(self) -> float:
        """Σ wave elapsed (gather spans)."""
        return sum(w.elapsed_s for w in self.waves)

    @property
    def wall_s(self) -> float:
        """What this side alone took: warm-up + Σ(submission + gather) + its pauses."""
        return self.warmup_s + self.submit_s + self.active_s + self.pause_s

    @property
    def sustained(self) -> float:
        """total tokens / active time."""
        return _rate(self.tokens, self.active_s)

    @property
    def peak(self) -> float:
        """The best wave rate."""
        return max((w.rate for w in self.waves), default=0.0)

    @property
    def peak_wave(self) -> int:
        """The wave number of the best wave rate."""
        best = max(self.waves, key=lambda w: w.rate, default=None)
        return best.wave if best is not None else 0

    @property
    def token_weighted_mean(self) -> float:
        """Σ(rate · tokens) / total tokens."""
        total = self.tokens
        return sum(w.rate * w.tokens for w in self.waves) / total if total else 0.0

    @property
    def arithmetic_mean(self) -> float:
        """Mean of the wave rates."""
        return statistics.fmean(w.rate for w in self.waves) if self.waves else 0.0

    @property
    def cpu_s(self) -> float:
        """Σ process CPU time of the waves."""
        return sum(w.cpu_s for w in self.waves)

    @property
    def cpu_us_per_token(self) -> float:
        """Process CPU time per call over all waves, microseconds."""
        total = self.tokens
        return self.cpu_s * 1e6 / total if total else 0.0

    @property
    def end_to_end(self) -> float:
        """total tokens / Σ(submission + gather): the honest figure."""
        return _rate(self.tokens, self.submit_s + self.active_s)

    def latency_ms(self, pct: float) -> float:
        """Percentile of every call's latency across all waves, milliseconds."""
        merged = sorted(_chain(w.latencies for w in self.waves))
        return percentile(merged, pct) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        """Every figure of the side: its waves and its summary, JSON-ready."""
        return {
            "waves": [w.as_dict() for w in self.waves],
            "summary": {
                "waves": len(self.waves),
                "tokens": self.tokens,
                "ok": self.ok,
                "failed": self.failed,
                "warmup_s": self.warmup_s,
                "pause_s": self.pause_s,
                "wall_s": self.wall_s,
                "submit_s": self.submit_s,
                "active_s": self.active_s,
                "sustained_tokens_per_s": self.sustained,
                "peak_tokens_per_s": self.peak,
                "peak_wave": self.peak_wave,
                "token_weighted_mean_tokens_per_s": self.token_weighted_mean,
                "arithmetic_mean_tokens_per_s": self.arithmetic_mean,
                "end_to_end_tokens_per_s": self.end_to_end,
                "cpu_s": self.cpu_s,
                "cpu_us_per_token": self.cpu_us_per_token,
                "latency_p50_ms": self.latency_ms(50),
                "latency_p99_ms": self.latency_ms(99),
            },
        }


def _chain(parts: Iterable[Sequence[float]]) -> list[float]:
    out: list[float] = []
    for part in parts:
        out.extend(part)
    return out


def summarize(
    side: str, waves: Sequence[WaveResult], warmup_s: float, pause_s: float
) -> SideSummary:
    """Build a side's summary from its waves."""
    return SideSummary(side, tuple(waves), warmup_s, pause_s)


@dataclass(frozen=True, slots=True)
class Target:
    """A target ratio and whether it meets its target.

    Attributes:
        name: what is compared.
        value: the measured ratio.
        target: the bound.
        higher_is_better: True for ``value >= target``, False for ``value <= target``.
    """

    name: str
    value: float
    target: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        """Whether the ratio meets its target."""
        if self.higher_is_better:
            return self.value >= self.target
        return self.value <= self.target

    @property
    def label(self) -> str:
        """``PASS`` or ``MISS``."""
        return "PASS" if self.met else "MISS"

    @property
    def bound(self) -> str:
        """The target written as a bound, e.g. ``>= 2.00x``."""
        sign = ">=" if self.higher_is_better else "<="
        return f"{sign} {self.target:.2f}x"

    def as_dict(self) -> dict[str, Any]:
        """The target, JSON-ready."""
        return {
            "name": self.name,
            "ratio": self.value,
            "target": self.target,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
        }
