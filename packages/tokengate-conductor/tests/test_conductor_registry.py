"""The domain registry's counting rules, without a coordinator (``_domains`` is private)."""

from __future__ import annotations

import logging
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokengate.conductor import DomainInfo
from tokengate.conductor._domains import Domain, DomainRegistry
from tokengate.core import OperationsCoordinator

SEED_A = "a" * 64
SEED_B = "b" * 64
SEED_C = "c" * 64


def test_a_lead_opens_a_domain_with_one_pending_and_no_core_until_pinned() -> None:
    registry = DomainRegistry()
    domain = registry.open_lead(SEED_A, "lead#1", None)
    assert registry.snapshot() == {SEED_A[:12]: DomainInfo(SEED_A, None, 1, "lead#1", None, 0)}
    assert registry.pin(domain, 3) == 3
    assert registry.pin(domain, 2) == 3  # the first pin wins
    registry.release(domain)
    assert registry.snapshot() == {}
    assert len(registry) == 0


def test_members_are_counted_and_released_one_by_one() -> None:
    registry = DomainRegistry()
    domain = registry.open_lead(SEED_A, "lead#1", None)
    members = [registry.join(domain) for _ in range(3)]
    assert all(member is domain for member in members)
    assert domain.pending == 4
    registry.release(domain)  # the lead ends first
    for expected in (2, 1, 0):
        registry.release(domain)
        assert domain.pending == expected
    assert registry.snapshot() == {}


def test_a_nested_domain_holds_one_count_on_its_outer_domain() -> None:
    registry = DomainRegistry()
    outer = registry.open_lead(SEED_A, "outer#1", None)
    registry.pin(outer, 2)
    inner = registry.open_lead(SEED_B, "inner#2", outer)
    deepest = registry.open_lead(SEED_C, "deep#3", inner)
    assert (inner.core_id, deepest.core_id) == (2, 2)
    assert (outer.pending, inner.pending, deepest.pending) == (2, 2, 1)
    assert registry.snapshot()[SEED_C[:12]] == DomainInfo(SEED_C, 2, 1, "deep#3", SEED_B, 2)
    registry.release(outer)  # the outer lead ends: the outer stays open for the nested one
    registry.release(inner)
    assert set(registry.snapshot()) == {SEED_A[:12], SEED_B[:12], SEED_C[:12]}
    registry.release(deepest)  # closing the deepest closes the whole chain
    assert registry.snapshot() == {}
    assert (outer.pending, inner.pending, deepest.pending) == (0, 0, 0)


def test_a_member_of_a_closed_domain_reopens_it_with_its_parents() -> None:
    registry = DomainRegistry()
    outer = registry.open_lead(SEED_A, "outer#1", None)
    registry.pin(outer, 4)
    inner = registry.open_lead(SEED_B, "inner#2", outer)
    registry.release(outer)
    registry.release(inner)
    assert registry.snapshot() == {}
    late = registry.join(inner)
    assert late is inner
    assert (inner.pending, outer.pending) == (1, 1)
    assert {info.core_id for info in registry.snapshot().values()} == {4}
    registry.release(late)
    assert registry.snapshot() == {}


def test_a_colliding_seed_joins_the_live_domain() -> None:
    registry = DomainRegistry()
    first = registry.open_lead(SEED_A, "lead#1", None)
    second = registry.open_lead(SEED_A, "lead#2", None)
    assert second is first
    assert first.pending == 2
    registry.release(first)
    registry.release(second)
    assert registry.snapshot() == {}


def test_a_reopened_domain_merges_into_a_live_domain_with_its_seed() -> None:
    registry = DomainRegistry()
    old = registry.open_lead(SEED_A, "lead#1", None)
    registry.release(old)
    live = registry.open_lead(SEED_A, "lead#2", None)
    assert live is not old
    assert registry.join(old) is live
    assert live.pending == 2
    registry.release(live)
    registry.release(live)
    assert registry.snapshot() == {}


def test_releasing_more_than_was_counted_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = DomainRegistry()
    domain = registry.open_lead(SEED_A, "lead#1", None)
    registry.release(domain)
    with caplog.at_level(logging.ERROR, logger="tokengate.conductor"):
        registry.release(domain)
    assert domain.pending == 0
    assert "released more often than it was counted" in caplog.text


def test_snapshot_keys_fall_back_to_the_full_seed_when_prefixes_collide() -> None:
    registry = DomainRegistry()
    registry.open_lead("0123456789ab-one", "lead#1", None)
    registry.open_lead("0123456789ab-two", "lead#2", None)
    assert set(registry.snapshot()) == {"0123456789ab", "0123456789ab-two"}


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40))
def test_concurrent_joins_and_releases_balance_out(ops: list[int]) -> None:
    """Threads join and release the same nested domains concurrently; all close at the end."""
    registry = DomainRegistry()
    outer = registry.open_lead(SEED_A, "outer#1", None)
    inner = registry.open_lead(SEED_B, "inner#2", outer)
    targets: list[Domain] = [outer, inner]

    def work(count: int) -> None:
        held = [registry.join(targets[i % 2]) for i in range(count)]
        for domain in held:
            registry.release(domain)

    threads = [threading.Thread(target=work, args=(count,)) for count in ops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (outer.pending, inner.pending) == (2, 1)
    registry.release(inner)
    registry.release(outer)
    assert registry.snapshot() == {}


def test_a_coordinator_stopped_with_open_domains_logs_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tokengate.conductor._domains import registry_of

    coordinator = OperationsCoordinator(cores=2, workers_per_core=1).start()
    registry = registry_of(coordinator)
    domain = registry.open_lead(SEED_A, "lead#1", None)
    with caplog.at_level(logging.ERROR, logger="tokengate.conductor"):
        coordinator.stop()
    assert "still open" in caplog.text
    assert SEED_A[:12] in caplog.text
    registry.release(domain)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="tokengate.conductor"):
        coordinator.start()
        coordinator.stop()
    assert "still open" not in caplog.text
