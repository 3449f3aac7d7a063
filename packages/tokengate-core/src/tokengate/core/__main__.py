"""``python -m tokengate.core``: the ``tokengate`` command line."""

from __future__ import annotations

import sys

from tokengate.core.cli import main

if __name__ == "__main__":
    sys.exit(main())
