"""The Dask executor on a real two-worker ``LocalCluster`` (worker processes, nothing mocked).

One cluster serves the module; each test makes its own coordinator on it. The test that kills
a worker process comes last in the file, and waits for the nanny's replacement worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pytest
import tg_dask_bodies as bodies

from tokengate.core import (
    OperationsCoordinator,
    TaskKilledError,
    TokenState,
    TokenTimeoutError,
    task_token_guard,
)
from tokengate.dask import DaskExecutor, DaskExecutorError, DaskWorkerLostError

WAIT = 60.0
#: distributed's classes carry no annotations
Client: Any = distributed.Client
LocalCluster: Any = distributed.LocalCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as made:
        yield made


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with Client(cluster, set_as_default=False) as made:
        made.wait_for_workers(2, timeout=WAIT)
        yield made


def _coordinator(executor: DaskExecutor, **settings: Any) -> OperationsCoordinator:
    settings.setdefault("stop_timeout", 30)
    return OperationsCoordinator(executor=executor, **settings)


def _clean(coordinator: OperationsCoordinator) -> None:
    assert coordinator.in_flight() == []
    assert coordinator.stats().in_flight == 0
    assert dict(coordinator.sticky_snapshot()) == {}


def test_results_and_errors_each_call_its_own(client: Any) -> None:
    executor = DaskExecutor(client, max_batch=64)
    with _coordinator(executor) as coordinator:
        assert coordinator.cores == executor.worker_count == 2  # one domain per worker
        squares = [bodies.square(i) for i in range(300)]
        failing = [bodies.fail(f"broken {i}") for i in range(3)]
        locked = bodies.give_lock()
        unpicklable = bodies.square(threading.Lock())  # type: ignore[arg-type]
        more = [bodies.square(i) for i in range(300, 400)]
        assert [t.get(WAIT) for t in squares] == [i * i for i in range(300)]
        assert [t.get(WAIT) for t in more] == [i * i for i in range(300, 400)]
        for index, token in enumerate(failing):
            error = token.exception(WAIT)
            assert isinstance(error, ValueError)
            assert str(error) == f"broken {index}"
            assert token.state is TokenState.FAILED
        result_error = locked.exception(WAIT)
        assert isinstance(result_error, DaskExecutorError)
        assert "cannot be pickled" in str(result_error)
        assert "dask_lock" in str(result_error)
        argument_error = unpicklable.exception(WAIT)
        assert isinstance(argument_error, DaskExecutorError)
        assert "argument 'value'" in str(argument_error)
        per_worker = executor.calls_per_worker()
        assert set(per_worker) <= set(executor.workers)
        assert sum(per_worker.values()) >= 400
        shown = {
            core.core_id: core.executors["dask"]
            for core in coordinator.stats().cores
            if "dask" in core.executors
        }
        assert 2 in shown  # these MEDIUM operations run on core 2 (core 1 is for HEAVY)
        for core_id, backend_stats in shown.items():
            assert backend_stats.details["worker"] == executor.domain_workers().get(core_id)
            assert backend_stats.details["calls_per_worker"] == per_worker
            assert backend_stats.queued == 0
    _clean(coordinator)


def test_domains_map_one_per_worker_and_sticky_keys_stay(client: Any) -> None:
    executor = DaskExecutor(client)
    assert executor.worker_count == 2
    with _coordinator(executor, cores=2) as coordinator:
        keys = ["alpha", "beta", "gamma", "delta"]
        tokens = [(key, bodies.where(key)) for _ in range(20) for key in keys]
        seen: dict[str, set[str | None]] = {}
        for key, token in tokens:
            (address, _pid), echoed = token.get(WAIT)
            assert echoed == key
            seen.setdefault(key, set()).add(address)
        for key, addresses in seen.items():
            assert len(addresses) == 1, f"in-flight calls of {key!r} ran on {addresses}"
        domains = executor.domain_workers()
        assert sorted(domains.values()) == sorted(executor.workers) or len(domains) == 1
        for token in (t for _, t in tokens):
            assert token.core_id is not None
            (address, _pid), _ = token.get(WAIT)
            assert address == domains[token.core_id]
    _clean(coordinator)


def test_conductor_leads_wait_on_children_on_their_worker(client: Any) -> None:
    executor = DaskExecutor(client)
    with _coordinator(executor) as coordinator:
        # more leads than worker threads, each waiting on its children inside its body
        leads = [bodies.lead(4) for _ in range(6)]
        for token in leads:
            (lead_address, lead_pid), children, seed = token.get(WAIT)
            assert seed == token.conductor_seed  # the lead's remote scope entered there
            assert lead_address in executor.workers
            assert [index for _, index in children] == [0, 1, 2, 3]
            for (address, pid), _ in children:
                assert (address, pid) == (lead_address, lead_pid)
            assert lead_address == executor.domain_workers()[token.core_id or 0]
    _clean(coordinator)


def test_nested_leads_stay_on_the_outer_leads_worker(client: Any) -> None:
    executor = DaskExecutor(client)
    with _coordinator(executor) as coordinator:
        nested = bodies.outer_lead(2, 3)
        (outer_address, _), inner = nested.get(WAIT)
        assert outer_address == executor.domain_workers()[nested.core_id or 0]
        assert len(inner) == 2
        for (address, _), children, _seed in inner:
            assert address == outer_address
            assert {where[0] for where, _ in children} == {outer_address}
    _clean(coordinator)


def test_a_waiting_body_gives_its_worker_thread_back(client: Any, tmp_path: Path) -> None:
    executor = DaskExecutor(client)
    with _coordinator(executor, cores=1) as coordinator:  # one domain, one worker thread
        path = str(tmp_path / "made-later")
        lead = bodies.waiting_lead(path)
        deadline = time.monotonic() + WAIT
        while lead.state is not TokenState.EXECUTING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        maker = bodies.touch(path)  # queued behind the waiting lead on the same thread
        assert maker.get(WAIT) == path
        (lead_address, _), (child_address, _) = lead.get(WAIT)
        assert lead_address == child_address == executor.domain_workers()[1]
    _clean(coordinator)


def test_kill_and_timeout_of_running_and_waiting_calls(client: Any, tmp_path: Path) -> None:
    executor = DaskExecutor(client)
    with _coordinator(executor, cores=1) as coordinator:
        started = tmp_path / "started"
        running = bodies.sleep(3.0, str(started))
        deadline = time.monotonic() + WAIT
        while not started.exists():
            assert time.monotonic() < deadline, "the body never started"
            time.sleep(0.01)
        waiting = bodies.touch(str(tmp_path / "never"))
        assert running.kill("test: killed while running")
        assert waiting.kill("test: killed while waiting")
        assert isinstance(running.exception(WAIT), TaskKilledError)
        assert running.state is TokenState.KILLED
        assert waiting.state is TokenState.KILLED
        timed = task_token_guard("dask_timed", tags={"timeout": 0.3, "hash_policy": "none"})(
            bodies.sleep_body
        )(2.0)
        assert isinstance(timed.exception(WAIT), TokenTimeoutError)
        assert timed.state is TokenState.TIMEOUT
        assert bodies.square(12).get(WAIT) == 144
        time.sleep(0.2)
        assert running.state is TokenState.KILLED, "a late result overwrote the kill"
        assert not (tmp_path / "never").exists(), "a call killed while waiting ran"
    _clean(coordinator)


def test_stop_ends_every_token(client: Any, tmp_path: Path) -> None:
    executor = DaskExecutor(client)
    coordinator = _coordinator(executor, cores=1).start()
    marker = tmp_path / "started"
    hung = bodies.sleep(5.0, str(marker))
    deadline = time.monotonic() + WAIT
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = [bodies.touch(str(tmp_path / f"queued-{i}")) for i in range(10)]
    began = time.monotonic()
    coordinator.stop(cancel_pending=True, timeout=0.5)
    assert time.monotonic() - began < 10, "stop() waited for a running body"
    assert hung.done()
    assert hung.state is TokenState.KILLED
    for index, token in enumerate(queued):
        assert token.done()
        if token.state is TokenState.KILLED:
            assert not (tmp_path / f"queued-{index}").exists()
    _clean(coordinator)
    assert "running" in str(client.status)  # a client passed in stays open


def test_the_dask_tag_runs_chosen_operations_on_the_default_client(
    cluster: Any,
) -> None:
    remote = task_token_guard("dask_tagged", tags={"executor": "dask"})(bodies.where_body)
    local = task_token_guard("dask_untagged")(bodies.where_body)
    with (
        Client(cluster) as default_client,
        OperationsCoordinator(cores=2, stop_timeout=30) as coordinator,
    ):
        assert distributed.get_client() is default_client
        (address, pid), _ = remote("x").get(WAIT)
        assert address in default_client.scheduler_info()["workers"]
        assert pid != os.getpid()
        (local_address, local_pid), _ = local("y").get(WAIT)
        assert local_address is None
        assert local_pid == os.getpid()
    _clean(coordinator)


def test_bad_input_gets_clear_errors(cluster: Any) -> None:
    with pytest.raises(TypeError, match=r"distributed\.Client, a scheduler address"):
        DaskExecutor(42)  # type: ignore[arg-type]
    with pytest.raises(DaskExecutorError, match="scheduler address is empty"):
        DaskExecutor("  ")
    with pytest.raises(ValueError, match="max_batch"):
        DaskExecutor(cluster.scheduler_address, max_batch=0)
    closed = Client(cluster, set_as_default=False)
    closed.close()
    with pytest.raises(DaskExecutorError, match="is closed; pass an open client"):
        DaskExecutor(closed)
    with pytest.raises(DaskExecutorError, match="could not reach a Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout=0.5)


def test_a_client_closed_while_running_fails_calls_clearly(
    cluster: Any,
) -> None:
    own = Client(cluster, set_as_default=False)
    executor = DaskExecutor(own)
    with _coordinator(executor, cores=1) as coordinator:
        assert bodies.square(3).get(WAIT) == 9
        own.close()
        after = bodies.square(4)
        error = after.exception(WAIT)
        assert isinstance(error, DaskExecutorError)
        assert "closed" in str(error)
    _clean(coordinator)


def test_fingerprints_and_digests_do_not_depend_on_the_process(client: Any) -> None:
    fingerprints, seeds, _ = bodies.fingerprints_here()
    remote = client.run(bodies.fingerprints_here)
    pids = client.run(os.getpid)
    assert os.getpid() not in pids.values()
    assert len(remote) == 2
    for address, (their_fingerprints, their_seeds, _) in remote.items():
        assert their_fingerprints == fingerprints, f"fingerprints differ on {address}"
        assert their_seeds == seeds, f"digests differ on {address}"


def test_a_killed_worker_fails_only_its_calls_and_its_domain_moves(
    client: Any, tmp_path: Path
) -> None:
    executor = DaskExecutor(client)
    with _coordinator(executor, cores=2) as coordinator:
        heavy_where = task_token_guard("dask_heavy_where", tags={"weight": "heavy"})(
            bodies.where_body
        )
        warm = [bodies.where("medium"), heavy_where("heavy")]  # core 2, core 1
        for token in warm:
            token.get(WAIT)
        domains = executor.domain_workers()
        assert len(set(domains.values())) == 2
        marker = tmp_path / "started"
        doomed = task_token_guard("dask_doomed", tags={"weight": "heavy", "hash_policy": "none"})(
            bodies.sleep_body
        )(30.0, str(marker))
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        victim = domains[1]  # HEAVY runs on core 1
        survivors = [bodies.square(i) for i in range(50)]  # MEDIUM: core 2
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        error = doomed.exception(WAIT)
        assert isinstance(error, DaskWorkerLostError), repr(error)
        assert victim in str(error)
        assert [t.get(WAIT) for t in survivors] == [i * i for i in range(50)]
        later = task_token_guard("dask_after", tags={"weight": "heavy", "hash_policy": "none"})(
            bodies.where_body
        )
        (address, _), _ = later("after").get(WAIT)
        assert address != victim
        assert executor.domain_workers()[1] != victim
    _clean(coordinator)
    client.wait_for_workers(2, timeout=WAIT)


def test_operations_that_workers_cannot_import_travel_by_value(client: Any) -> None:
    # Defined here, in a test (like in a notebook or a script's __main__): the workers cannot
    # import them, so the lead's body and the child operation it calls go by value.
    @task_token_guard("dask_local_child", tags={"hash_policy": "none"})
    def local_child(value: int) -> tuple[str | None, int]:
        return bodies.here()[0], value + 1

    @task_token_guard("dask_local_lead", tags={"external_calls": ["dask_local_child"]})
    def local_lead(count: int) -> tuple[str | None, list[tuple[str | None, int]]]:
        children = [local_child(i) for i in range(count)]
        return bodies.here()[0], [token.get(60) for token in children]

    executor = DaskExecutor(client)
    with _coordinator(executor) as coordinator:
        lead_address, children = local_lead(5).get(WAIT)
        assert lead_address in executor.workers
        assert children == [(lead_address, i + 1) for i in range(5)]
        doubled = task_token_guard("dask_lambda", tags={"hash_policy": "none"})(lambda x: 2 * x)
        assert [t.get(WAIT) for t in [doubled(i) for i in range(5)]] == [0, 2, 4, 6, 8]
    _clean(coordinator)


def test_the_benchmark_runner_measures_three_sides(client: Any) -> None:
    from tokengate.dask._bench import SIDES, run

    result = run(client, calls=128, per_call_calls=32, rounds=1, chunk=16)
    assert set(result.rates) == set(SIDES)
    assert all(rate > 0 for rate in result.rates.values())
    assert result.vs_per_call == result.rates["tokengate"] / result.rates["per_call"]
    assert result.as_dict()["workers"] == list(executor_workers(client))


def executor_workers(client: Any) -> list[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"])
