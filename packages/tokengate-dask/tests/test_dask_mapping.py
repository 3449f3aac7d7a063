"""The rule that maps core domains onto workers as workers come and go, and the errors of
``DaskExecutor()`` without a client."""

from __future__ import annotations

import distributed
import pytest

from tokengate.dask import DaskExecutor, DaskExecutorError
from tokengate.dask._mapping import WorkerMap

A, B, C = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.3:1"


def test_one_domain_per_worker_in_address_order() -> None:
    workers = WorkerMap([B, A])
    assert workers.live == (A, B)
    assert [workers.worker_of(core) for core in (1, 2, 3, 4)] == [A, B, A, B]
    assert workers.domains_of(A) == [1, 3]


def test_a_domain_moves_only_when_its_worker_leaves() -> None:
    workers = WorkerMap([A, B, C])
    assert [workers.worker_of(core) for core in (1, 2)] == [A, B]
    assert workers.update([A, C]) == [(2, B, C)]  # C serves nothing: it takes core 2
    assert workers.worker_of(1) == A
    assert workers.update([A, B, C]) == []  # B is back: nobody moves
    assert workers.assignments() == {1: A, 2: C}


def test_with_no_worker_left_a_domain_waits_for_one() -> None:
    workers = WorkerMap([A])
    assert workers.worker_of(1) == A
    assert workers.update([]) == [(1, A, None)]
    assert workers.worker_of(1) is None
    workers.update([B])
    assert workers.worker_of(1) == B


def test_an_idle_domain_evens_the_load_on_a_worker_that_joined() -> None:
    workers = WorkerMap([A, B])
    for core in (1, 2, 3, 4):
        workers.worker_of(core)
    workers.update([A])  # B left: cores 2 and 4 move to A
    assert workers.domains_of(A) == [1, 2, 3, 4]
    workers.update([A, C])
    assert workers.rebalance(2) == (A, C)
    assert workers.rebalance(3) == (A, C)
    assert workers.rebalance(4) is None  # 2 and 2: already even
    assert workers.domains_of(C) == [2, 3]


def test_no_default_client_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match="No global client found"):
        distributed.get_client()  # the precondition of this test
    with pytest.raises(DaskExecutorError, match=r"DaskExecutor\(distributed.Client"):
        DaskExecutor()
