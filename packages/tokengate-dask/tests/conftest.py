"""Shared fixtures of the tokengate-dask tests: a real two-worker Dask cluster.

The operations the workers run live in ``tests/support/tg_dask_bodies.py``, put on
``sys.path`` here: worker processes of a ``LocalCluster`` inherit ``sys.path``, so they import
those functions by name, as they would an installed module.
"""

from __future__ import annotations

import sys
from pathlib import Path

SUPPORT = str(Path(__file__).resolve().parent / "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)
