"""A live browser dashboard for a running TokenGate coordinator, with token-guarded controls."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
