"""Benchmarks and demos for TokenGate: the `tokengate bench` and `tokengate demo` subcommands."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
