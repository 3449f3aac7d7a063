"""A cluster deployed the way users deploy one: ``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1, reached by the scheduler's address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pytest
import tg_dask_bodies as bodies

from tokengate.core import OperationsCoordinator
from tokengate.dask import DaskExecutor

WAIT = 60.0
DASK = str(Path(sys.executable).with_name("dask"))
SUPPORT = str(Path(__file__).resolve().parent / "support")
Client: Any = distributed.Client


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a scheduler and two single-thread workers; yield the scheduler's address."""
    tmp_path = tmp_path_factory.mktemp("deployed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SUPPORT, *sys.path])}
    scheduler_file = tmp_path / "scheduler.json"
    log = (tmp_path / "scheduler.log").open("wb")
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [
                    DASK,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + WAIT
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert started[0].poll() is None, "dask scheduler exited at start"
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.05)
        address = str(json.loads(scheduler_file.read_text())["address"])
        # w1 runs under a nanny (which gives its worker PYTHONHASHSEED=6640); w2 runs without
        # one, in a process started with PYTHONHASHSEED=2: the two hash strings differently.
        for name, extra in (("w1", ()), ("w2", ("--no-nanny",))):
            command = [DASK, "worker", address, "--nthreads", "1", "--nworkers", "1", *extra]
            command += ["--host", "127.0.0.1", "--no-dashboard", "--name", name]
            started.append(
                subprocess.Popen(
                    command,
                    env={**env, "PYTHONHASHSEED": "2"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield address
    finally:
        for process in reversed(started):
            _stop(process)
        log.close()


def test_a_deployed_cluster_by_address(deployed: str) -> None:
    with Client(deployed, timeout=WAIT, set_as_default=False) as probe:
        probe.wait_for_workers(2, timeout=WAIT)
    executor = DaskExecutor(deployed, connect_timeout=WAIT)
    assert executor.worker_count == 2
    with OperationsCoordinator(executor=executor, cores=2, stop_timeout=30) as coordinator:
        keys = ["k1", "k2", "k3", "k4"]
        tokens = [bodies.where(key) for _ in range(10) for key in keys]
        by_key: dict[object, set[str | None]] = {}
        for token in tokens:
            (address, pid), key = token.get(WAIT)
            assert pid != os.getpid()
            by_key.setdefault(key, set()).add(address)
        assert all(len(addresses) == 1 for addresses in by_key.values()), by_key
        assert set().union(*by_key.values()) <= set(executor.workers)
        leads = [bodies.lead(3) for _ in range(4)]
        for lead in leads:
            (lead_address, _), children, _seed = lead.get(WAIT)
            assert {where[0] for where, _ in children} == {lead_address}
        assert sum(executor.calls_per_worker().values()) == len(tokens) + len(leads)
    assert coordinator.in_flight() == []
    assert str(executor.client.status) in {"closed", "closing"}  # an executor given an
    # address owns its client and closes it when its coordinator stops


def test_fingerprints_agree_across_worker_processes_with_other_hash_seeds(
    deployed: str,
) -> None:
    with Client(deployed, timeout=WAIT, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=WAIT)
        fingerprints, seeds, probe = bodies.fingerprints_here()
        remote = client.run(bodies.fingerprints_here)
    probes = {probe} | {their_probe for _, _, their_probe in remote.values()}
    assert len(probes) == 3, "this process and the two workers should hash strings apart"
    for address, (their_fingerprints, their_seeds, _) in remote.items():
        assert their_fingerprints == fingerprints, f"fingerprints differ on {address}"
        assert their_seeds == seeds, f"digests differ on {address}"
