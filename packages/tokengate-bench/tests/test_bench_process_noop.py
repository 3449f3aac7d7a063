"""``tokengate bench --noop N --executor process``: no-op tokens in worker processes against
``ProcessPoolExecutor`` + ``wrap_future``, and the per-token budget as the target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tokengate.bench._bench import TARGET_NOOP_PROCESS_US
from tokengate.core.cli import main


def test_process_noop_micro_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "noop.json"
    argv = ["bench", "--noop", "600", "--rounds", "3", "--executor", "process"]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ProcessPoolExecutor" in text
    assert "no-op process tokens" in text
    data = json.loads(out.read_text())
    noop = data["noop"]
    assert noop["executor"] == "process"
    assert noop["pool"] == "ProcessPoolExecutor"
    assert noop["failed"] == 0
    assert len(noop["tokengate_rounds"]) == len(noop["threadpool_rounds"]) == 3
    assert noop["tokengate_tokens_per_s"] == sorted(noop["tokengate_rounds"])[1]
    us = noop["tokengate_us_per_token"]
    assert math.isclose(us, 1e6 / noop["tokengate_tokens_per_s"])
    (target,) = data["targets"]
    assert math.isclose(target["ratio"], TARGET_NOOP_PROCESS_US / us)
    assert target["target"] == 1.0
    assert data["verdict"]["ok"] is True
