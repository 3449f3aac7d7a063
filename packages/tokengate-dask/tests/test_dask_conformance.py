"""The executor conformance suite of tokengate-core, run on the Dask executor over a real
two-worker cluster (single-thread workers: one body at a time per core domain)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import distributed
import pytest

from tokengate.core import OperationsCoordinator, conformance
from tokengate.dask import DaskExecutor

Client: Any = distributed.Client
LocalCluster: Any = distributed.LocalCluster


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as made,
    ):
        made.wait_for_workers(2, timeout=60)
        yield made


def _maker(client: Any) -> Callable[..., OperationsCoordinator]:
    def make(**settings: Any) -> OperationsCoordinator:
        settings.setdefault("stop_timeout", 30)
        return OperationsCoordinator(executor=DaskExecutor(client), **settings)

    return make


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__)
def test_conformance(client: Any, check: Callable[..., None]) -> None:
    check(_maker(client), concurrency=1)


def test_conformance_worker_crash(client: Any) -> None:
    conformance.check_worker_crash(_maker(client), concurrency=1)
    client.wait_for_workers(2, timeout=60)  # the nanny's replacement joined
