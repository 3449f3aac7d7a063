"""Importing the package, loading the plugin and running a coordinator import no numeric
library (checked in a fresh interpreter)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

LIBRARIES = ("numpy", "pandas", "torch", "cupy", "PIL")

SCRIPT = textwrap.dedent(
    """
    import importlib
    import json
    import sys

    import tokengate.numeric
    import tokengate.numeric._plugin
    from tokengate.core import OperationsCoordinator, plugin_manager, task_token_guard
    from tokengate.hashing import default_registry, make_hashable

    host = plugin_manager()
    if not host.has_plugin("numeric"):
        host.register(tokengate.numeric._plugin, name="numeric")

    @task_token_guard(operation_type="lazy_sum", tags={"weight": "light"})
    def lazy_sum(values, scale=1):
        return sum(values) * scale

    class Opaque:
        __hash__ = None

    coordinator = OperationsCoordinator(cores=2, workers_per_core=1)
    coordinator.start()
    try:
        tokens = [
            lazy_sum([1, 2, 3]),
            lazy_sum((4, 5), scale=2),
            lazy_sum({7: "x"}.keys()),
            lazy_sum(bytearray(b"ab")),
        ]
        results = [token.get(timeout=30) for token in tokens]
        fingerprints = [repr(make_hashable(obj)) for obj in (Opaque(), {"a": [1.5]}, 3)]
    finally:
        coordinator.stop()

    for control in sys.argv[1:]:  # a positive control: this import must be reported
        importlib.import_module(control)

    print(json.dumps({
        "results": results,
        "fingerprints": fingerprints,
        "plugin": host.has_plugin("numeric"),
        "lazy_names": "numpy.ndarray" in default_registry(),
        "handlers_module": "tokengate.numeric._handlers" in sys.modules,
        "loaded": sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"numpy", "pandas", "torch", "cupy", "PIL"}
        ),
    }))
    """
)


def run_script(*controls: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, *controls],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["results"] == [6, 18, 7, 195]
    assert len(report["fingerprints"]) == 3
    assert report["plugin"] is True
    assert report["lazy_names"] is True
    assert report["handlers_module"] is True
    return report


def test_no_numeric_library_is_imported_by_the_plugin_or_a_coordinator_run() -> None:
    report = run_script()
    assert report["loaded"] == [], f"imported eagerly: {report['loaded']}"


def test_the_check_sees_a_library_that_was_imported() -> None:
    installed = [name for name in LIBRARIES if importlib.util.find_spec(name) is not None]
    if not installed:
        pytest.skip("none of the numeric libraries is installed")
    light = "PIL" if "PIL" in installed else installed[0]
    report = run_script(light)
    assert light in report["loaded"]
