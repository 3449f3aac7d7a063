"""The ``tokengate`` command line: every subcommand with tiny sizes, its verification, its JSON,
and runs that must fail (a failing operation, broken stickiness, broken conductor routing)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tokengate.bench import _workload as workload
from tokengate.bench._stats import SideSummary, Target, WaveResult, percentile
from tokengate.core import TaskToken, task_token_guard
from tokengate.core.cli import Output, main

SIDES = ("tokengate", "threadpool", "loop")


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _broken_body(n: int) -> int:
    raise RuntimeError(f"corrupted body ({n})")


broken_crunch = task_token_guard("broken_crunch", tags={"weight": "light"})(_broken_body)


@pytest.fixture
def corrupted(monkeypatch: pytest.MonkeyPatch) -> workload.Operation:
    """Replace the first operation of the workload with one whose body raises."""
    bad = workload.Operation(
        "broken_crunch", "light", _broken_body, broken_crunch, lambda i: (60 + i % 25,)
    )
    monkeypatch.setattr(workload, "OPERATIONS", (bad, *workload.OPERATIONS[1:]))
    return bad


# ---------------------------------------------------------------------- the workload
def test_workload_bodies_compute_what_the_spec_says() -> None:
    assert workload.cpu_crunch_body(10) == 2 + 3 + 5 + 7
    assert workload.cpu_crunch_body(2) == 0
    text = workload.string_transform_body(31)
    assert len(text) == 300
    assert text == workload.string_transform_body(31)
    assert not set(text) & set("AEI")
    assert set(text) <= set("BCDFGHJKLMNOPQRSTUVWXYZ431")
    data = workload.data_sort_body(400)
    assert len(data) == 400
    assert data == sorted(data)
    assert all(0 <= v <= 100_000 for v in data)
    expected = b"wave_seed_0"
    for _ in range(3):
        expected = hashlib.sha256(expected).digest()
    assert workload.hash_chain_body("wave_seed_0", 3) == expected.hex()


def test_waves_and_round_robin_arguments() -> None:
    sizes = workload.wave_sizes()
    assert sizes[0] == 4
    assert sizes[-1] == 65_536
    assert len(sizes) == 15
    assert sum(sizes) == 131_068
    assert workload.wave_sizes(3) == [4, 8, 16]
    with pytest.raises(ValueError, match="between 1 and 15"):
        workload.wave_sizes(16)
    calls = workload.calls_for_wave(8)
    assert [c.operation.name for c in calls[:4]] == [
        "cpu_crunch",
        "string_transform",
        "data_sort",
        "hash_chain",
    ]
    assert calls[0].args == (60,)
    assert calls[4].args == (64,)
    assert calls[1].args == (31,)
    assert calls[5].args == (155,)
    assert calls[2].args == (402,)
    assert calls[6].args == (406,)
    assert calls[3].args == ("wave_seed_3", 123)
    assert {op.weight for op in workload.OPERATIONS} == {"light", "medium", "heavy"}


# ---------------------------------------------------------------------- figures
def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0


def test_summary_formulas() -> None:
    waves = (
        WaveResult("tokengate", 1, 4, 4, 0, 0.1, 0.4, 0.8, [0.1, 0.2, 0.3, 0.4]),
        WaveResult("tokengate", 2, 8, 7, 1, 0.2, 0.2, 0.1, [0.1] * 8),
    )
    side = SideSummary("tokengate", waves, warmup_s=1.0, pause_s=0.1)
    assert waves[0].rate == 10.0
    assert waves[1].rate == 40.0
    assert _close(waves[0].overlap, 2.0)
    assert _close(waves[0].ms_per_token, 100.0)
    assert _close(side.active_s, 0.6)
    assert _close(side.sustained, 12 / 0.6)
    assert side.peak == 40.0
    assert side.peak_wave == 2
    assert _close(side.token_weighted_mean, (10 * 4 + 40 * 8) / 12)
    assert _close(side.arithmetic_mean, 25.0)
    assert _close(side.end_to_end, 12 / 0.9)
    assert _close(side.wall_s, 1.0 + 0.3 + 0.6 + 0.1)
    assert side.ok == 11
    assert side.failed == 1
    assert Target("x", 2.5, 2.0).label == "PASS"
    assert Target("x", 1.5, 2.0).label == "MISS"
    assert Target("m", 0.7, 0.8, higher_is_better=False).met


# ---------------------------------------------------------------------- bench
def test_bench_with_baseline_writes_consistent_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--waves",
            "3",
            "--baseline",
            "--warmup",
            "8",
            "--noop",
            "300",
            "--rounds",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Summary" in text
    assert "END TO END" in text
    assert "targets (a MISS is reported" in text
    assert "[PASS] bench" in text
    data = _read(out)
    assert data["verdict"] == {"ok": True, "failed_tokens": 0, "problems": []}
    assert data["config"]["wave_sizes"] == [4, 8, 16]
    assert set(data["sides"]) == set(SIDES)
    for name in SIDES:
        side = data["sides"][name]
        waves = side["waves"]
        assert [w["tokens"] for w in waves] == [4, 8, 16]
        for wave in waves:
            assert wave["ok"] + wave["failed"] == wave["tokens"]
            assert wave["failed"] == 0
            assert wave["elapsed_s"] == wave["gather_s"] > 0
            assert _close(wave["tokens_per_s"], wave["tokens"] / wave["elapsed_s"])
            assert _close(
                wave["end_to_end_tokens_per_s"],
                wave["tokens"] / (wave["submit_s"] + wave["gather_s"]),
            )
            assert 0 < wave["latency_p50_ms"] <= wave["latency_p99_ms"]
            # a true per-call latency never exceeds the wave's own span
            span_ms = (wave["submit_s"] + wave["gather_s"]) * 1000
            assert wave["latency_p99_ms"] <= span_ms * 1.0001
            assert wave["task_s"] > 0
            assert wave["cpu_s"] >= 0
        summary = side["summary"]
        total = sum(w["tokens"] for w in waves)
        active = sum(w["elapsed_s"] for w in waves)
        submit = sum(w["submit_s"] for w in waves)
        assert summary["tokens"] == total == 28
        assert summary["ok"] == 28
        assert summary["failed"] == 0
        assert _close(summary["active_s"], active)
        assert _close(summary["sustained_tokens_per_s"], total / active)
        assert _close(summary["end_to_end_tokens_per_s"], total / (submit + active))
        assert _close(summary["peak_tokens_per_s"], max(w["tokens_per_s"] for w in waves))
        assert _close(
            summary["token_weighted_mean_tokens_per_s"],
            sum(w["tokens_per_s"] * w["tokens"] for w in waves) / total,
        )
        assert _close(
            summary["arithmetic_mean_tokens_per_s"],
            sum(w["tokens_per_s"] for w in waves) / len(waves),
        )
    assert data["sides"]["loop"]["summary"]["submit_s"] == 0.0
    tg = data["sides"]["tokengate"]["summary"]["end_to_end_tokens_per_s"]
    tpe = data["sides"]["threadpool"]["summary"]["end_to_end_tokens_per_s"]
    loop = data["sides"]["loop"]["summary"]["end_to_end_tokens_per_s"]
    assert _close(data["ratios"]["end_to_end_vs_threadpool"], tg / tpe)
    assert _close(data["ratios"]["end_to_end_vs_loop"], tg / loop)
    targets = {t["name"]: t for t in data["targets"]}
    assert targets["end to end: TokenGate (thread) / ThreadPoolExecutor"]["target"] == 2.0
    assert targets["end to end: TokenGate (thread) / one-thread loop"]["target"] == 0.9
    cpu = targets["CPU per token: TokenGate / one-thread loop"]
    assert cpu["target"] == 1.1
    assert cpu["met"] == (cpu["ratio"] <= 1.1)
    assert targets["no-op tokens: TokenGate / ThreadPoolExecutor"]["target"] == 3.0
    for name, target in targets.items():
        if not name.startswith("CPU"):
            assert target["met"] == (target["ratio"] >= target["target"])
    assert data["noop"]["tokens"] == 300
    assert len(data["noop"]["tokengate_rounds"]) == 2


def test_bench_tokengate_only_by_default(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--waves", "2", "--warmup", "4", "--quiet", "--json", str(out)]) == 0
    data = _read(out)
    assert list(data["sides"]) == ["tokengate"]
    assert data["targets"] == []
    assert data["noop"] is None


def test_noop_micro_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "noop.json"
    assert main(["bench", "--noop", "2000", "--rounds", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "No-op micro-benchmark" in text
    assert "no-op tokens" in text
    data = _read(out)
    noop = data["noop"]
    assert noop["tokens"] == 2000
    assert noop["failed"] == 0
    assert len(noop["tokengate_rounds"]) == len(noop["threadpool_rounds"]) == 3
    assert noop["tokengate_tokens_per_s"] == sorted(noop["tokengate_rounds"])[1]
    assert _close(noop["ratio"], noop["tokengate_tokens_per_s"] / noop["threadpool_tokens_per_s"])
    assert data["verdict"]["ok"] is True


def test_a_failing_operation_makes_the_bench_fail(
    corrupted: workload.Operation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "--waves", "2", "--baseline", "--warmup", "4", "--noop", "0", "--json", str(out)]
    )
    assert code == 1
    assert "[FAIL] bench" in capsys.readouterr().out
    data = _read(out)
    assert data["verdict"]["ok"] is False
    for name in SIDES:
        waves = data["sides"][name]["waves"]
        # operation 0 of waves of 4 and 8 calls: indices 0 and 0, 4
        assert [w["failed"] for w in waves] == [1, 2]
        assert all(w["ok"] + w["failed"] == w["tokens"] for w in waves)
        assert "corrupted body" in waves[0]["first_error"]
    assert data["verdict"]["failed_tokens"] == 3 * 3
    assert any("corrupted body" in p for p in data["verdict"]["problems"])


@pytest.mark.slow
def test_memory_runs_each_side_alone(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--waves",
            "2",
            "--baseline",
            "--memory",
            "--noop",
            "0",
            "--warmup",
            "4",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    data = _read(out)
    memory = data["memory"]
    assert set(memory["peak_rss_mb"]) == set(SIDES)
    for side in SIDES:
        assert memory["peak_rss_mb"][side] >= memory["start_rss_mb"][side] > 0
        assert _close(
            memory["growth_mb"][side],
            memory["peak_rss_mb"][side] - memory["start_rss_mb"][side],
        )
    names = [t["name"] for t in data["targets"]]
    assert "peak memory growth: TokenGate / ThreadPoolExecutor" in names


def test_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "assets" / "bench.png"
    assert main(["bench", "--waves", "2", "--warmup", "4", "--quiet", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "matplotlib" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    png = tmp_path / "bench.png"
    assert main(["bench", "--waves", "1", "--plot", str(png)]) == 2
    assert "pip install tokengate-core[plot]" in capsys.readouterr().err
    assert not png.exists()


@pytest.mark.parametrize(
    "argv",
    [[], ["bench", "--waves", "16"], ["bench", "--waves", "0"], ["demo"], ["demo", "nope"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    assert "--baseline" in capsys.readouterr().out


# ---------------------------------------------------------------------- demos
def test_cache_storm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "storm.json"
    code = main(
        [
            "demo",
            "cache-storm",
            "--keys",
            "3",
            "--burst",
            "5",
            "--distinct",
            "12",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert "[PASS] demo cache-storm" in capsys.readouterr().out
    data = _read(out)
    figures = data["figures"]
    assert data["ok"] is True
    assert all(c["ok"] for c in data["checks"])
    assert figures["identical_calls"] == 15
    assert figures["distinct_calls"] == 12
    assert figures["misses"] == 0
    assert figures["pins_during_storm"] >= 3
    assert figures["pins_after"] == 0
    assert len(figures["distinct_cores"]) >= 2


def test_cache_storm_detects_broken_stickiness(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tokengate.core._sticky import StickyRegistry

    pinning = StickyRegistry.acquire

    def forgetful_acquire(self: StickyRegistry, key: Any, candidate: int) -> int:
        pinning(self, key, candidate)  # the hold is counted (and released) as usual...
        return candidate  # ...but the pin is ignored: identical calls drift with the load

    monkeypatch.setattr(StickyRegistry, "acquire", forgetful_acquire)
    out = tmp_path / "storm.json"
    code = main(
        ["demo", "cache-storm", "--keys", "3", "--burst", "6", "--quiet", "--json", str(out)]
    )
    assert code == 1
    data = _read(out)
    assert data["figures"]["misses"] > 0
    failed = [c["name"] for c in data["checks"] if not c["ok"]]
    assert any("zero misses" in name for name in failed)


def test_conductor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "conductor.json"
    code = main(
        [
            "demo",
            "conductor",
            "--leads",
            "3",
            "--children",
            "2",
            "--grandchildren",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert "[PASS] demo conductor" in capsys.readouterr().out
    data = _read(out)
    figures = data["figures"]
    assert data["ok"] is True
    assert figures["leads"] == 3
    assert figures["unique_seeds"] == 3
    assert figures["children"] == 6
    assert figures["grandchildren"] == 6
    assert figures["core_misses"] == figures["seed_misses"] == figures["body_seed_misses"] == 0
    assert figures["live_domains_at_start"] >= 1
    assert figures["live_domains_after"] == 0


def test_conductor_detects_members_routed_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tokengate.conductor._extensions import MemberExtension

    def free_route(self: MemberExtension, token: TaskToken[Any], candidate: int) -> int | None:
        return None  # the domain's core is ignored: members route like anyone else

    monkeypatch.setattr(MemberExtension, "route", free_route)
    out = tmp_path / "conductor.json"
    code = main(
        ["demo", "conductor", "--leads", "4", "--children", "3", "--quiet", "--json", str(out)]
    )
    assert code == 1
    data = _read(out)
    assert data["figures"]["core_misses"] > 0
    assert data["figures"]["seed_misses"] == 0


def test_endurance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "endurance.json"
    code = main(
        ["demo", "endurance", "--duration", "0.6", "--batch-scale", "0.05", "--json", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "IDLE" in text
    assert "NORMAL" in text
    assert "SURGE" in text
    data = _read(out)
    figures = data["figures"]
    phases = figures["phases"]
    assert set(phases) == {"IDLE", "NORMAL", "SURGE"}
    assert figures["lost"] == 0
    assert figures["failed"] == 0
    assert figures["submitted"] == figures["resolved"] > 0
    assert figures["submitted"] == sum(p["submitted"] for p in phases.values())
    for phase in phases.values():
        assert phase["batches"] >= 1
        assert phase["resolved"] + phase["failed"] == phase["submitted"]
        assert 0 <= phase["latency_p50_ms"] <= phase["latency_p95_ms"]


def test_endurance_fails_on_failed_tokens(corrupted: workload.Operation, tmp_path: Path) -> None:
    out = tmp_path / "endurance.json"
    code = main(
        [
            "demo",
            "endurance",
            "--duration",
            "0.3",
            "--batch-scale",
            "0.05",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 1
    figures = _read(out)["figures"]
    assert figures["failed"] > 0
    assert figures["submitted"] == figures["resolved"] + figures["failed"]
    assert figures["lost"] == 0


def test_demo_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "all.json"
    code = main(
        [
            "demo",
            "all",
            "--waves",
            "2",
            "--noop",
            "200",
            "--keys",
            "2",
            "--burst",
            "3",
            "--leads",
            "2",
            "--children",
            "1",
            "--duration",
            "0.4",
            "--batch-scale",
            "0.05",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "targets (a MISS is reported" in text
    assert "PASS" in text or "MISS" in text
    assert "[PASS] every verification held" in text
    data = _read(out)
    assert data["ok"] is True
    assert data["bench"]["config"]["wave_sizes"] == [4, 8]
    assert set(data["bench"]["sides"]) == set(SIDES)
    for name in ("cache-storm", "conductor", "endurance"):
        assert data[name]["ok"] is True


def test_demo_all_fails_when_the_bench_fails(
    corrupted: workload.Operation, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "demo",
            "all",
            "--waves",
            "1",
            "--noop",
            "0",
            "--keys",
            "1",
            "--burst",
            "1",
            "--leads",
            "1",
            "--children",
            "1",
            "--duration",
            "0.2",
            "--batch-scale",
            "0.05",
        ]
    )
    assert code == 1
    text = capsys.readouterr().out
    assert "[FAIL] bench (zero failed tokens)" in text
    assert "[FAIL] some verification failed" in text


# ---------------------------------------------------------------------- plugins
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_progress_and_tables_on_a_terminal() -> None:
    from tokengate.bench._bench import BenchOptions, run_bench
    from tokengate.bench._render import render_bench, wave_listener

    terminal = _Terminal()
    out = Output(stream=terminal)
    report = run_bench(BenchOptions(waves=2, warmup=4, baseline=True), wave_listener(out))
    render_bench(out, report)
    text = terminal.getvalue()
    assert "wave  2/2" in text
    assert "Summary" in text
    assert "END TO END" in text
    assert report.ok


# ---------------------------------------------------------------------- beside the waves
def test_io_and_latency_workloads_report_their_ratios(tmp_path: Path) -> None:
    target = tmp_path / "special.json"
    argv = ["bench", "--io", "--io-calls", "24", "--latency", "--latency-seconds", "0.2"]
    assert main([*argv, "--quiet", "--json", str(target)]) == 0
    data = _read(target)
    assert data["io"]["calls"] == 24
    assert data["io"]["mixed"] is False
    assert data["io_mixed"]["mixed"] is True
    assert set(data["io"]["sides"]) == {"tokengate", "anyio", "run_in_executor"}
    rates = {point["rate"] for point in data["latency"]["points"]}
    assert rates == {200.0, 1000.0, 3000.0}
    names = [t["name"] for t in data["targets"]]
    assert "IO: TokenGate / anyio.to_thread.run_sync" in names
    assert any(name.startswith("latency 1000") for name in names)


def test_process_executor_waves_use_a_process_pool_baseline(tmp_path: Path) -> None:
    target = tmp_path / "process.json"
    argv = ["bench", "--executor", "process", "--waves", "2", "--warmup", "8", "--baseline"]
    assert main([*argv, "--quiet", "--json", str(target)]) == 0
    data = _read(target)
    assert set(data["sides"]) == {"tokengate", "processpool", "loop"}
    assert all(side["summary"]["failed"] == 0 for side in data["sides"].values())
    names = [t["name"] for t in data["targets"]]
    assert "end to end: TokenGate (process) / ProcessPoolExecutor" in names


def test_an_unknown_executor_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--executor", "ray"]) == 2
    assert "invalid choice: 'ray'" in capsys.readouterr().err
