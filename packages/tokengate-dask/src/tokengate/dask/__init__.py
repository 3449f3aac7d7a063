"""TokenGate on a Dask cluster: core domains on Dask workers, routing contracts kept."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
