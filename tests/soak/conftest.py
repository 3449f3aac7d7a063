"""Set-up of the soak runs (``make soak``): collects their figures for pytest's summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

#: Set this variable to a path to also write the figures there as JSON.
REPORT_ENV = "TOKENGATE_SOAK_REPORT"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the soak figures at the end of the run (and save them when asked to)."""
    from tests.support.reliability_checks import SOAK_FIGURES as figures

    if not figures:
        return
    terminalreporter.section("soak figures")
    for name, value in figures.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        terminalreporter.write_line(f"{name:<48} {shown}")
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        terminalreporter.write_line(f"figures written to {target}")
