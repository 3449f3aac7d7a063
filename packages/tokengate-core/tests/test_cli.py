"""``tokengate`` in the core: the plugins command, contributed subcommands, the output writer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from tokengate.core.cli import Output, build_parser, main


def test_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "tokengate.core.builtin" in text
    assert "tokengate_classify_weight" in text
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    builtin = {p["name"]: p for p in data["plugins"]}["tokengate.core.builtin"]
    assert builtin["distribution"] == "tokengate-core"
    assert "tokengate_routing_policy" in builtin["hooks"]
    assert data["errors"] == []


def test_plugins_lists_a_plugin_registered_by_hand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tokengate.core import hookimpl, plugin_manager

    class Marker:
        @hookimpl
        def tokengate_register_hash_handlers(self, registry: object) -> None:
            """Registers nothing."""

    host = plugin_manager()
    host.register(Marker(), name="cli-test-marker")
    try:
        assert main(["plugins", "--json"]) == 0
    finally:
        host.unregister(name="cli-test-marker")
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert plugins["cli-test-marker"]["hooks"] == ["tokengate_register_hash_handlers"]
    assert plugins["cli-test-marker"]["distribution"] == ""


def test_python_m_tokengate_core_plugins() -> None:
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-m", "tokengate.core", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "tokengate.core.builtin" in done.stdout


# ---------------------------------------------------------------------- output
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_when_not_a_terminal() -> None:
    stream = io.StringIO()
    out = Output(stream=stream)
    assert not out.rich
    out.table("T", ("a", "b"), [["x", "1"]])
    assert stream.getvalue().splitlines() == ["T", "a  b", "-  -", "x  1"]


def test_rich_on_a_terminal_and_plain_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    out = Output(stream=terminal)
    assert out.rich
    out.table("Title", ("col",), [["cell"]])
    assert "cell" in terminal.getvalue()
    assert not Output(stream=_Terminal(), plain=True).rich
    from tokengate.core.cli import _output

    monkeypatch.setattr(_output, "rich_available", lambda: False)
    assert not Output(stream=_Terminal()).rich


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------- contributed commands
def test_contributed_commands_come_from_entry_points() -> None:
    from tokengate.core.cli import contributed_commands

    commands = contributed_commands()
    assert {"bench", "demo", "dashboard"} <= set(commands)
    assert commands["bench"].value == "tokengate.bench._cli:bench_main"
    help_text = build_parser(commands).format_help()
    assert "plugins" in help_text
    assert "bench" in help_text


def test_a_missing_distribution_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokengate.core import cli

    monkeypatch.setattr(cli, "contributed_commands", dict)
    assert main(["bench", "--waves", "1"]) == 2
    err = capsys.readouterr().err
    assert "tokengate-bench, which is not installed" in err
    assert "pip install ./packages/tokengate-bench" in err
    assert "needs tokengate-dashboard (not installed)" in build_parser({}).format_help()


def test_a_contributed_command_runs_with_the_rest_of_the_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "conductor", "--leads", "2", "--children", "1", "--plain"]) == 0
    assert "[PASS] demo conductor" in capsys.readouterr().out
