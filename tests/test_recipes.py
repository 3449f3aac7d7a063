"""The notebook recipe (docs/recipes/jupyter.md), run cell by cell in a real IPython shell
(top-level ``await`` included), in a fresh interpreter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "recipes" / "jupyter.md"

RUNNER = textwrap.dedent(
    """
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    cells = json.loads(sys.stdin.read())
    outputs = []
    for cell in cells:
        result = shell.run_cell(cell, store_history=True)
        if not result.success:
            raise SystemExit(f"cell failed: {result.error_before_exec or result.error_in_exec!r}")
        outputs.append(repr(result.result))
    print(json.dumps(outputs))
    """
)


def _cells() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"```python\n(# cell.*?)```", text, flags=re.S)]


def test_the_notebook_cells_run_in_order_in_ipython() -> None:
    cells = _cells()
    assert len(cells) == 4
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(cells),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(done.stdout.strip().splitlines()[-1])
    assert outputs[1] == repr([i * i for i in range(10)])
    assert outputs[2] == "285"
