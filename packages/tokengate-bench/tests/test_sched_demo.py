"""``tokengate demo scheduler`` with small sizes: its checks are made and the ones that do not
depend on timing hold (times are reported by the demo, never asserted here)."""

from __future__ import annotations

from tokengate.bench._cli import demo_main
from tokengate.bench._sched_demo import run_scheduler


def test_scheduler_demo_checks_each_job() -> None:
    result = run_scheduler(
        long=0.4,
        short=0.02,
        short_calls=5,
        leads=4,
        children=2,
        wait=0.5,
        io_calls=12,
        io_seconds=0.05,
    )
    names = [check.name for check in result.checks]
    assert len(names) == 3
    assert names[0].startswith("head-of-line")
    leads, io = result.checks[1], result.checks[2]
    assert leads.ok, leads.detail  # every lead completed: no deadlock, whatever the timing
    assert io.ok, io.detail  # more than 4 sleeping calls ran at once
    assert result.figures["leads_waiting"]["tokengate_failed"] == 0
    assert result.figures["blocking_io"]["tokengate_peak_concurrency"] > 4
    # the pool of two threads deadlocks its leads until their timeouts
    assert result.figures["leads_waiting"]["threadpool_timed_out"] > 0
    assert {"head_of_line", "leads_waiting", "blocking_io"} <= set(result.figures)


def test_scheduler_demo_runs_from_the_command_line(capsys: object) -> None:
    status = demo_main(["scheduler", "--plain"])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "The domain scheduler" in out
    assert "leads waiting for children" in out
    assert status in (0, 1)  # 1 only if the head-of-line time bound was missed on a busy host
