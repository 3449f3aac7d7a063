"""The ``tokengate`` command line.

The core contributes ``tokengate plugins`` (the installed plugins and their hooks). Other
distributions contribute subcommands through the entry-point group ``tokengate.commands``:
each entry point names a function ``main(argv: list[str]) -> int`` whose docstring's first
line is its help. tokengate-bench contributes ``bench`` and ``demo``; tokengate-dashboard
contributes ``dashboard``. A well-known subcommand whose distribution is missing says what
to install.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable

from ._output import Output, rich_available

__all__ = ("COMMAND_GROUP", "Output", "main", "rich_available")

#: Entry-point group of contributed subcommands.
COMMAND_GROUP = "tokengate.commands"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Subcommands that other TokenGate distributions contribute, and how to get each.
KNOWN_COMMANDS = {
    "bench": "tokengate-bench",
    "demo": "tokengate-bench",
    "dashboard": "tokengate-dashboard",
}

_log = logging.getLogger("tokengate.plugins")

Command = Callable[[list[str]], int]


def _version() -> str:
    try:
        return importlib.metadata.version("tokengate-core")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def contributed_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """The subcommands installed distributions contribute (name → entry point), not loaded."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=COMMAND_GROUP):
        if ep.name != "plugins":  # the core's own command cannot be replaced
            found.setdefault(ep.name, ep)
    return found


def _summary(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"(from {dist.name})" if dist is not None else ""


def build_parser(
    commands: dict[str, importlib.metadata.EntryPoint] | None = None,
) -> argparse.ArgumentParser:
    """The argument parser of ``tokengate`` (exposed for the docs and the tests)."""
    if commands is None:
        commands = contributed_commands()
    parser = argparse.ArgumentParser(
        prog="tokengate",
        description=(
            "TokenGate's command line: 'plugins' lists the installed plugins; installed "
            "distributions add more commands (tokengate-bench: bench, demo; "
            "tokengate-dashboard: dashboard)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tokengate {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument(
        "--plain", action="store_true", help="plain text even on a terminal with rich installed"
    )
    plugins.add_argument("--quiet", action="store_true", help="print nothing (exit status only)")
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    for name, ep in sorted(commands.items()):
        sub.add_parser(name, help=f"see 'tokengate {name} --help' {_summary(ep)}", add_help=False)
    for name, dist in sorted(KNOWN_COMMANDS.items()):
        if name not in commands:
            sub.add_parser(name, help=f"needs {dist} (not installed)", add_help=False)
    return parser


def install_hint(distribution: str) -> str:
    """How to install a TokenGate distribution: from the package index once published, from a
    checkout of the repository today."""
    return (
        f"install {distribution}: from a checkout of the TokenGate repository, "
        f"'pip install ./packages/{distribution}' (or 'make wheels' and install the wheel); "
        f"once it is published, 'pip install {distribution}'"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the ``tokengate`` command line; returns the exit status (0 ok, 1 a verification
    failed, 2 a usage error)."""
    rest = list(sys.argv[1:] if argv is None else argv)
    commands = contributed_commands()
    if rest and rest[0] in commands:
        try:
            command: Command = commands[rest[0]].load()
        except Exception as exc:
            sys.stderr.write(f"tokengate {rest[0]}: the command failed to load: {exc!r}\n")
            return EXIT_USAGE
        return command(rest[1:])
    if rest and rest[0] in KNOWN_COMMANDS:
        sys.stderr.write(
            f"tokengate {rest[0]} is contributed by {KNOWN_COMMANDS[rest[0]]}, which is not "
            f"installed; {install_hint(KNOWN_COMMANDS[rest[0]])}\n"
        )
        return EXIT_USAGE
    parser = build_parser(commands)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # --help, --version and usage errors
        code = exc.code
        return code if isinstance(code, int) else EXIT_USAGE
    out = Output(plain=args.plain, quiet=args.quiet)
    try:
        return _cmd_plugins(args, out)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        _silence_stdout()
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _cmd_plugins(args: argparse.Namespace, out: Output) -> int:
    from tokengate.core import plugin_manager

    host = plugin_manager()
    infos = host.plugins()
    errors = host.load_errors
    if args.json:
        sys.stdout.write(
            json.dumps(
                {
                    "plugins": [
                        {"name": i.name, "distribution": i.distribution, "hooks": list(i.hooks)}
                        for i in infos
                    ],
                    "errors": list(errors),
                },
                indent=2,
            )
            + "\n"
        )
        return EXIT_FAILED if errors else EXIT_OK
    out.table(
        f"{len(infos)} plugin(s)",
        ("plugin", "distribution", "hooks"),
        [[i.name, i.distribution or "(registered by hand)", ", ".join(i.hooks)] for i in infos],
        left=3,
    )
    for error in errors:
        out.verdict(False, error)
    return EXIT_FAILED if errors else EXIT_OK
