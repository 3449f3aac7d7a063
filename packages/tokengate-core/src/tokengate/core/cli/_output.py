"""Terminal output of the ``tokengate`` command and the subcommands plugins contribute: rich
when it is installed and stdout is a terminal, plain text otherwise.

rich is optional (``tokengate-core[cli]``, and a dependency of tokengate-bench); it is imported
only here, lazily.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

__all__ = ("Output", "rich_available")


def rich_available() -> bool:
    """Whether rich can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Output:
    """Where the command line writes: a rich console or a plain text stream.

    Args:
        plain: force plain text even on a terminal with rich installed.
        quiet: write nothing (used by the memory subprocesses).
        stream: the stream (default: ``sys.stdout`` at construction time).
    """

    def __init__(self, *, plain: bool = False, quiet: bool = False, stream: IO[str] | None = None):
        self.stream: IO[str] = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.console: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if not plain and not quiet and isatty is not None and isatty() and rich_available():
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False)

    @property
    def width(self) -> int:
        """Columns available (rich's console width; 200 for plain text)."""
        return int(self.console.width) if self.console is not None else 200

    @property
    def rich(self) -> bool:
        """True when output goes through rich."""
        return self.console is not None

    def line(self, text: str = "", style: str | None = None) -> None:
        """Write one line (``style`` is a rich style, ignored in plain text)."""
        if self.quiet:
            return
        if self.console is not None:
            self.console.print(text, style=style, markup=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def heading(self, text: str) -> None:
        """Write a section heading."""
        if self.quiet:
            return
        if self.console is not None:
            self.console.rule(text)
        else:
            self.line()
            self.line(f"== {text} ==")

    def verdict(self, ok: bool, text: str) -> None:
        """Write a PASS/FAIL line."""
        label = "PASS" if ok else "FAIL"
        self.line(f"[{label}] {text}", style="bold green" if ok else "bold red")

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        left: int = 1,
    ) -> None:
        """Write a table; the first ``left`` columns are left-aligned, the others right."""
        if self.quiet:
            return
        if self.console is not None:
            from rich import box
            from rich.table import Table

            table = Table(
                title=title,
                title_justify="left",
                box=box.SIMPLE_HEAD,
                padding=(0, 1),
                pad_edge=False,
            )
            for index, column in enumerate(columns):
                table.add_column(column, justify="left" if index < left else "right")
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [len(c) for c in columns]
        for row in rows:
            for index, cell in enumerate(row):
                widths[index] = max(widths[index], len(cell))

        def fmt(cells: Sequence[str]) -> str:
            parts = [
                cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ]
            return "  ".join(parts).rstrip()

        self.line(title)
        self.line(fmt(columns))
        self.line("  ".join("-" * w for w in widths))
        for row in rows:
            self.line(fmt(row))
