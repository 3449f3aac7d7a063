"""Core without the conductor: lead tags fail at decoration naming the distribution, plain
operations work, and registering the plugin by hand brings leads back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json

    from tokengate.core import (
        OperationsCoordinator,
        TagValidationError,
        plugin_manager,
        task_token_guard,
    )

    host = plugin_manager()
    report = {"loaded": host.has_plugin("conductor"), "errors": []}
    for tags in ({"external_calls": ["x"]}, {"digest_policy": "full"}):
        try:
            task_token_guard(tags=tags)(print)
        except TagValidationError as exc:
            report["errors"].append(str(exc))

    @task_token_guard()
    def double(x: int) -> int:
        return 2 * x

    with OperationsCoordinator(cores=2, workers_per_core=1):
        token = double(21)
        report["plain"] = token.get(10)
        report["plain_seed"] = token.conductor_seed
        report["plain_tags"] = sorted(token.tags)

    import tokengate.conductor._plugin as conductor_plugin
    from tokengate.conductor import conductor_snapshot, get_active_seed

    host.register(conductor_plugin, name="conductor")

    @task_token_guard()
    def triple(x: int) -> int:
        return 3 * x

    @task_token_guard(tags={"external_calls": ["triple"]})
    def lead() -> list[object]:
        # double was decorated before the plugin was registered: it joins the domain too
        # (a plugin registered later applies to every operation from its next call)
        return [get_active_seed(), triple(1).conductor_seed, double(1).conductor_seed]

    with OperationsCoordinator(cores=2, workers_per_core=1) as coordinator:
        token = lead()
        seeds = token.get(10)
        report["registered"] = seeds == [token.conductor_seed] * 3
        report["registered"] &= seeds[0] is not None
        coordinator.stop()
        report["snapshot"] = dict(conductor_snapshot(coordinator))
    print(json.dumps(report))
    """
)


def test_without_the_plugin_lead_tags_fail_and_plain_operations_work() -> None:
    env = {**os.environ, "TOKENGATE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] is False
    assert len(report["errors"]) == 2
    for message in report["errors"]:
        assert "tokengate-conductor" in message
        assert "pip install tokengate-conductor" in message
    assert "'external_calls'" in report["errors"][0]
    assert "'digest_policy'" in report["errors"][1]
    assert report["plain"] == 42
    assert report["plain_seed"] is None
    assert "conductor_seed" not in report["plain_tags"]
    assert report["registered"] is True
    assert report["snapshot"] == {}
