"""Even placement of keys and leads over the cores of a weight class."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokengate.core._placement import CorePlacement


def test_new_keys_spread_evenly_over_the_candidates() -> None:
    placement = CorePlacement(4)
    cores = [placement.place((1, 2, 3, 4)) for _ in range(8)]
    assert Counter(cores) == {1: 2, 2: 2, 3: 2, 4: 2}
    assert placement.snapshot() == {1: 2, 2: 2, 3: 2, 4: 2}


def test_the_least_loaded_core_takes_the_next_key() -> None:
    placement = CorePlacement(3)
    for _ in range(3):
        placement.add(1)
    placement.add(2)
    assert placement.place((1, 2, 3)) == 3
    assert placement.place((1, 2, 3)) in (2, 3)
    placement.release(1)
    placement.release(1)
    placement.release(1)
    assert placement.choose((1, 2, 3)) == 1


def test_equal_cores_take_turns_when_tokens_end_at_once() -> None:
    placement = CorePlacement(4)
    seen = []
    for _ in range(8):
        core = placement.place((2, 3, 4))
        seen.append(core)
        placement.release(core)
    assert set(seen) == {2, 3, 4}


def test_concurrent_placement_stays_balanced() -> None:
    placement = CorePlacement(4)
    barrier = threading.Barrier(8)
    placed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(10)
        for _ in range(500):
            core = placement.place((1, 2, 3, 4))
            with lock:
                placed.append(core)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    counts = Counter(placed)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(placement.snapshot().values()) == 4000


@given(st.lists(st.text(), min_size=1, max_size=50), st.integers(2, 8))
def test_rendezvous_is_stable_and_within_the_candidates(keys: list[str], cores: int) -> None:
    placement = CorePlacement(cores)
    candidates = tuple(range(1, cores + 1))
    for key in keys:
        core = placement.rendezvous(key, candidates)
        assert core in candidates
        assert placement.rendezvous(key, candidates) == core


def test_rendezvous_spreads_keys_and_moves_few_when_a_core_is_added() -> None:
    placement = CorePlacement(5)
    keys = [f"key-{i}" for i in range(4000)]
    four = {key: placement.rendezvous(key, (1, 2, 3, 4)) for key in keys}
    counts = Counter(four.values())
    assert min(counts.values()) > 800  # about 1000 each
    five = {key: placement.rendezvous(key, (1, 2, 3, 4, 5)) for key in keys}
    moved = [key for key in keys if four[key] != five[key]]
    assert all(five[key] == 5 for key in moved)  # only keys that go to the new core move
    assert 600 < len(moved) < 1000  # about a fifth


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_core_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="number of cores"):
        CorePlacement(bad)  # type: ignore[arg-type]


def test_bad_candidates_are_refused_with_the_valid_range() -> None:
    placement = CorePlacement(2)
    with pytest.raises(ValueError, match="at least one candidate"):
        placement.place(())
    with pytest.raises(ValueError, match=r"cores 1\.\.2"):
        placement.choose((1, 3))
