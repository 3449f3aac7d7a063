"""Conductor domains on real coordinators, under concurrency.

Invariants: I2 (every member of a domain runs on its lead's core, with its lead's seed) and
I3 (no domain is left once every token is terminal), including failing, killed and
timed-out leads and members, nested leads, threads started by a lead, and random trees.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokengate.conductor import DomainInfo, conductor_snapshot, get_active_seed
from tokengate.core import (
    DigestPolicyRegistry,
    OperationInfo,
    OperationsCoordinator,
    PluginError,
    TaskKilledError,
    TaskToken,
    TokenExtension,
    TokenGateError,
    TokenState,
    TokenTimeoutError,
    current_coordinator,
    hookimpl,
    plugin_manager,
    task_token_guard,
)

WAIT = 20.0
_CORE_OF_THREAD = re.compile(r"-core(\d+)-[wt]\d+$")


@pytest.fixture(autouse=True)
def _no_conductor_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A count released more often than it was taken is logged as an error: fail on it."""
    caplog.set_level(logging.INFO, logger="tokengate.conductor")
    yield
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.name == "tokengate.conductor" and record.levelno >= logging.ERROR
    ]
    assert errors == []


# ---------------------------------------------------------------------------- recording
def current_core() -> int | None:
    """The core of the worker thread running the caller (None outside worker threads)."""
    match = _CORE_OF_THREAD.search(threading.current_thread().name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Observation:
    """What a body saw while it ran: the active seed and the core of its worker thread."""

    seed: str | None
    core: int | None


def observe() -> Observation:
    return Observation(get_active_seed(), current_core())


class BodyFailedError(Exception):
    """Raised on purpose by a body; carries what the body observed."""

    def __init__(self, observation: Observation) -> None:
        super().__init__(f"failed on purpose at {observation}")
        self.observation = observation


@dataclass(frozen=True)
class Entry:
    token: TaskToken[Any]
    lead: bool
    creator_seed: str | None


class Recorder:
    """Collects every token the test and the bodies create, with the seed active then."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.entries: list[Entry] = []
        self.extras: dict[str, Any] = {}

    def add(self, token: TaskToken[Any], *, lead: bool = False) -> None:
        entry = Entry(token, lead, get_active_seed())
        with self._cond:
            self.entries.append(entry)
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[Entry]:
        with self._cond:
            reached = self._cond.wait_for(lambda: len(self.entries) >= count, WAIT)
            assert reached, f"only {len(self.entries)} of {count} tokens were created"
            return list(self.entries)


def wait_all(entries: list[Entry]) -> None:
    for entry in entries:
        entry.token.exception(WAIT)


def assert_quiescent(coordinator: OperationsCoordinator) -> None:
    """I3: no conductor domain, no sticky pin, no in-flight token."""
    assert dict(conductor_snapshot(coordinator)) == {}
    assert dict(coordinator.sticky_snapshot()) == {}
    assert coordinator.in_flight() == []


def check_domains(coordinator: OperationsCoordinator, entries: list[Entry]) -> None:
    """I2 for every recorded token, unique lead seeds, and I3."""
    leads = [entry.token for entry in entries if entry.lead]
    seeds = [token.conductor_seed for token in leads]
    assert None not in seeds
    assert len(set(seeds)) == len(seeds), "two concurrent leads got the same seed"
    core_of_seed = {token.conductor_seed: token.core_id for token in leads}
    for entry in entries:
        token = entry.token
        assert token.done()
        if entry.lead:
            if entry.creator_seed is not None:  # nested: a new domain on the outer's core
                assert token.conductor_seed != entry.creator_seed
                assert token.core_id == core_of_seed[entry.creator_seed]
        else:
            assert token.conductor_seed == entry.creator_seed
        seed = token.conductor_seed
        if seed is not None:
            assert token.tags["conductor_seed"] == seed
            assert token.core_id == core_of_seed[seed]
        else:
            assert "conductor_seed" not in token.tags
        expected = Observation(seed, token.core_id)
        if token.state is TokenState.COMPLETED:
            assert token.get(0) == expected
        elif token.state is TokenState.FAILED:
            error = token.exception(0)
            assert isinstance(error, BodyFailedError)
            assert error.observation == expected
    assert_quiescent(coordinator)


# ---------------------------------------------------------------------------- operations
@task_token_guard(tags={"weight": "light"})
def grandchild(fail: bool) -> Observation:
    if fail:
        raise BodyFailedError(observe())
    return observe()


@task_token_guard()
def child(rec: Recorder, grandchildren: int, fail: bool) -> Observation:
    for index in range(grandchildren):
        rec.add(grandchild(fail and index == 0))
    if fail:
        raise BodyFailedError(observe())
    return observe()


@task_token_guard(tags={"external_calls": ["child", "grandchild"]})
def lead(rec: Recorder, children: int, grandchildren: int, fail: bool) -> Observation:
    for index in range(children):
        rec.add(child(rec, grandchildren, fail and index % 2 == 0))
    if fail:
        raise BodyFailedError(observe())
    return observe()


@task_token_guard(tags={"external_calls": ["child"], "weight": "heavy", "digest_policy": "fast"})
def heavy_lead(rec: Recorder, children: int) -> Observation:
    for _ in range(children):
        rec.add(child(rec, 1, False))
    return observe()


@task_token_guard()
def blocked(gate: threading.Event) -> Observation:
    gate.wait(WAIT)
    return observe()


@task_token_guard(tags={"timeout": 0.05})
def timed(gate: threading.Event) -> Observation:
    gate.wait(WAIT)
    return observe()


@task_token_guard(tags={"external_calls": ["blocked", "timed"]})
def blocking_lead(rec: Recorder, gate: threading.Event) -> Observation:
    rec.add(blocked(gate))
    rec.add(timed(gate))
    return observe()


# ---------------------------------------------------------------------------- I2 and I3
@pytest.mark.parametrize("round_", range(5))
def test_many_leads_with_children_and_grandchildren_share_their_leads_core(round_: int) -> None:
    rec = Recorder()
    leads, children, grandchildren = 24, 3, 2
    with OperationsCoordinator(cores=4, workers_per_core=3) as coordinator:

        def submit(index: int) -> None:
            if index % 4 == 0:
                rec.add(heavy_lead(rec, children), lead=True)
            else:
                rec.add(lead(rec, children, grandchildren, False), lead=True)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(submit, range(leads)))
        heavy = len(range(0, leads, 4))
        expected = heavy * (1 + 2 * children) + (leads - heavy) * (
            1 + children + children * grandchildren
        )
        entries = rec.wait_for(expected)
        wait_all(entries)
        check_domains(coordinator, entries)
        assert all(e.token.state is TokenState.COMPLETED for e in entries)
        assert {e.token.core_id for e in entries if e.lead} != {None}
        heavy_seeds = [e.token.conductor_seed for e in entries if e.lead and e.token.core_id == 1]
        assert heavy_seeds
        assert all(s is not None and len(s) == 16 for s in heavy_seeds)


@pytest.mark.parametrize("round_", range(3))
def test_failing_leads_and_children_leave_no_domain(round_: int) -> None:
    rec = Recorder()
    leads, children, grandchildren = 18, 3, 2
    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        with ThreadPoolExecutor(3) as pool:
            list(
                pool.map(
                    lambda i: rec.add(lead(rec, children, grandchildren, i % 3 == 0), lead=True),
                    range(leads),
                )
            )
        entries = rec.wait_for(leads * (1 + children + children * grandchildren))
        wait_all(entries)
        check_domains(coordinator, entries)
        failed = [e for e in entries if e.token.state is TokenState.FAILED]
        assert len(failed) == 6 * (1 + 2 + 2)  # per failing lead: itself, 2 children, 2 gc
        assert {e.token.state for e in entries} == {TokenState.COMPLETED, TokenState.FAILED}


@pytest.mark.parametrize("round_", range(3))
def test_killed_and_timed_out_members_release_their_domain(round_: int) -> None:
    """Blocked members are killed, others time out while blocked; every domain closes while
    the bodies are still running, and nothing reappears when they return."""
    leads = 4
    rec = Recorder()
    gate = threading.Event()
    # cores=2: every lead and member is on core 2, and each body gets its own worker.
    coordinator = OperationsCoordinator(cores=2, workers_per_core=3 * leads).start()
    try:
        for _ in range(leads):
            rec.add(blocking_lead(rec, gate), lead=True)
        entries = rec.wait_for(3 * leads)
        for entry in entries:
            if entry.token.operation_type == "blocked":
                assert entry.token.kill("test kill")
        for entry in entries:
            if entry.token.operation_type == "timed":
                assert isinstance(entry.token.exception(WAIT), TokenTimeoutError)
        wait_all(entries)
        states = {e.token.operation_type: e.token.state for e in entries}
        assert states == {
            "blocking_lead": TokenState.COMPLETED,
            "blocked": TokenState.KILLED,
            "timed": TokenState.TIMEOUT,
        }
        check_domains(coordinator, entries)  # bodies of blocked members still run here
    finally:
        gate.set()
        coordinator.stop()
    assert_quiescent(coordinator)


@task_token_guard(tags={"external_calls": ["child"], "weight": "heavy"})
def stubborn_lead(rec: Recorder, started: threading.Event, gate: threading.Event) -> str | None:
    rec.add(child(rec, 0, False))
    started.set()
    gate.wait(WAIT)
    rec.add(child(rec, 0, False))  # created after the lead itself ended
    return get_active_seed()


@task_token_guard(tags={"external_calls": ["child"], "weight": "heavy", "timeout": 0.25})
def stubborn_timed_lead(rec: Recorder, started: threading.Event, gate: threading.Event) -> str:
    rec.add(child(rec, 0, False))
    started.set()
    gate.wait(WAIT)
    rec.add(child(rec, 0, False))
    return "late"


@pytest.mark.parametrize("how", ["kill", "timeout"])
@pytest.mark.parametrize("round_", range(2))
def test_lead_ended_while_running_keeps_late_members_on_its_core(how: str, round_: int) -> None:
    """A lead killed (or timed out) while its body runs ends at once; members its body still
    creates reopen the domain on the same core with the same seed, and it closes again."""
    rec = Recorder()
    started = threading.Event()
    gate = threading.Event()
    with OperationsCoordinator(cores=2, workers_per_core=3) as coordinator:
        op = stubborn_lead if how == "kill" else stubborn_timed_lead
        token: TaskToken[Any] = op(rec, started, gate)
        assert started.wait(WAIT)
        if how == "kill":
            assert token.kill("test kill")
            with pytest.raises(TaskKilledError):
                token.get(WAIT)
        else:
            with pytest.raises(TokenTimeoutError):
                token.get(WAIT)
        first = rec.wait_for(1)[0].token
        first.exception(WAIT)
        assert_quiescent(coordinator)
        gate.set()
        late = rec.wait_for(2)[1].token
        assert late.get(WAIT) == Observation(token.conductor_seed, token.core_id)
        assert late.conductor_seed == token.conductor_seed == first.conductor_seed
        assert late.core_id == token.core_id == first.core_id == 1
    assert_quiescent(coordinator)


def test_members_held_by_a_pause_and_killed_before_running_release_their_domain() -> None:
    rec = Recorder()
    started = threading.Event()
    go = threading.Event()

    @task_token_guard(tags={"external_calls": ["child"]})
    def pausing_lead() -> None:
        started.set()
        go.wait(WAIT)
        for _ in range(3):
            rec.add(child(rec, 0, False))

    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        token = pausing_lead()
        assert started.wait(WAIT)
        coordinator.pause()
        held_lead = lead(rec, 1, 0, False)  # a lead held before routing: no core yet
        go.set()
        token.get(WAIT)
        children = [e.token for e in rec.wait_for(3)]
        assert all(t.state is TokenState.WAITING for t in children)
        snapshot = conductor_snapshot(coordinator)
        seed = token.conductor_seed
        assert seed is not None
        assert held_lead.conductor_seed is not None
        assert snapshot[seed[:12]].pending == 3
        assert snapshot[held_lead.conductor_seed[:12]].core_id is None
        assert held_lead.kill("drop the held lead")
        assert children[0].kill("drop before running")
        assert children[1].kill("drop before running")
        assert conductor_snapshot(coordinator)[seed[:12]].pending == 1
        coordinator.resume()
        assert children[2].get(WAIT) == Observation(seed, token.core_id)
        assert children[0].state is TokenState.KILLED
        assert_quiescent(coordinator)


# ---------------------------------------------------------------------------- lead finishes first
@pytest.mark.parametrize("round_", range(3))
def test_a_lead_that_returns_before_its_children_run(round_: int) -> None:
    rec = Recorder()
    gate = threading.Event()
    seen: list[list[TokenState]] = []

    @task_token_guard(tags={"external_calls": ["blocked"]})
    def hasty_lead(count: int) -> str | None:
        for _ in range(count):
            rec.add(blocked(gate))
        seen.append([e.token.state for e in rec.entries])
        return get_active_seed()

    # One worker per core: the children cannot start before the lead's body returns.
    with OperationsCoordinator(cores=3, workers_per_core=1) as coordinator:
        token = hasty_lead(4)
        seed = token.get(WAIT)
        assert seed == token.conductor_seed
        assert seed is not None
        assert seen == [[TokenState.ADMITTED] * 4]
        info = conductor_snapshot(coordinator)[seed[:12]]
        assert info == DomainInfo(seed, token.core_id, 4, token.token_id, None, 0)
        gate.set()
        entries = rec.wait_for(4)
        wait_all(entries)
        for entry in entries:
            assert entry.token.get(0) == Observation(seed, token.core_id)
        assert_quiescent(coordinator)


# ---------------------------------------------------------------------------- threads
@task_token_guard(tags={"external_calls": ["child"]})
def threaded_lead(rec: Recorder, threads: int, plain: bool) -> Observation:
    """Creates its children from threads; records the seed each thread saw."""
    seeds: list[str | None] = []
    lock = threading.Lock()

    def spawn() -> None:
        with lock:
            seeds.append(get_active_seed())
        rec.add(child(rec, 1, False))

    workers = [
        threading.Thread(target=spawn)
        if plain
        else threading.Thread(target=contextvars.copy_context().run, args=(spawn,))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rec.extras[str(get_active_seed())] = seeds
    return observe()


@pytest.mark.parametrize("round_", range(3))
def test_children_created_from_threads_that_copy_the_context(round_: int) -> None:
    rec = Recorder()
    leads, threads = 8, 3
    with OperationsCoordinator(cores=4, workers_per_core=2) as coordinator:
        tokens = [threaded_lead(rec, threads, False) for _ in range(leads)]
        for token in tokens:
            rec.add(token, lead=True)
        entries = rec.wait_for(leads * (1 + 2 * threads))
        wait_all(entries)
        for token in tokens:
            assert rec.extras[str(token.conductor_seed)] == [token.conductor_seed] * threads
        check_domains(coordinator, entries)
        assert sum(1 for e in entries if e.token.conductor_seed is not None) == len(entries)


def test_plain_threads_do_not_copy_the_context_so_their_tokens_are_not_members() -> None:
    """``threading.Thread`` starts with an empty context: no active seed, no membership."""
    rec = Recorder()
    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        token = threaded_lead(rec, 2, True)
        assert token.get(WAIT) == Observation(token.conductor_seed, token.core_id)
        assert rec.extras[str(token.conductor_seed)] == [None, None]
        entries = rec.wait_for(4)
        wait_all(entries)
        assert all(e.token.conductor_seed is None for e in entries)
        assert all("conductor_seed" not in e.token.tags for e in entries)
        assert_quiescent(coordinator)


def test_a_thread_that_outlives_its_lead_reopens_the_domain_on_the_same_core() -> None:
    rec = Recorder()
    go = threading.Event()
    spawned: list[threading.Thread] = []

    @task_token_guard(tags={"external_calls": ["child"]})
    def leaving_lead() -> None:
        def late() -> None:
            go.wait(WAIT)
            rec.add(child(rec, 1, False))

        thread = threading.Thread(target=contextvars.copy_context().run, args=(late,))
        spawned.append(thread)
        thread.start()

    with OperationsCoordinator(cores=4, workers_per_core=2) as coordinator:
        token = leaving_lead()
        token.get(WAIT)
        assert_quiescent(coordinator)  # the lead was the only member: its domain closed
        go.set()
        entries = rec.wait_for(2)
        wait_all(entries)
        spawned[0].join(WAIT)
        for entry in entries:
            assert entry.token.conductor_seed == token.conductor_seed
            assert entry.token.get(0) == Observation(token.conductor_seed, token.core_id)
        assert_quiescent(coordinator)


# ---------------------------------------------------------------------------- nesting
@task_token_guard(tags={"external_calls": ["nested_lead", "child"], "weight": "light"})
def outer_lead(rec: Recorder) -> Observation:
    rec.add(nested_lead(rec), lead=True)
    rec.add(child(rec, 1, False))
    return observe()


@task_token_guard(tags={"external_calls": ["child"], "weight": "heavy"})
def nested_lead(rec: Recorder) -> Observation:
    """Records the snapshot entries of its own domain and of the outer one while it runs."""
    rec.add(child(rec, 1, False))
    coordinator = current_coordinator()
    assert coordinator is not None
    snapshot = conductor_snapshot(coordinator)
    seed = get_active_seed()
    assert seed is not None
    own = snapshot.get(seed[:12])
    outer = None
    if own is not None and own.parent_seed is not None:
        outer = snapshot.get(own.parent_seed[:12])
    rec.extras[seed] = (own, outer)
    return observe()


@pytest.mark.parametrize("round_", range(3))
def test_nested_leads_open_nested_domains_on_the_same_core(round_: int) -> None:
    rec = Recorder()
    leads = 12
    with OperationsCoordinator(cores=4, workers_per_core=3) as coordinator:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: rec.add(outer_lead(rec), lead=True), range(leads)))
        # per outer lead: itself, its child and grandchild, the nested lead, its child and gc
        entries = rec.wait_for(leads * 6)
        wait_all(entries)
        check_domains(coordinator, entries)
        nested = [e for e in entries if e.token.operation_type == "nested_lead"]
        assert len(nested) == leads
        for entry in nested:
            own, outer = rec.extras[str(entry.token.conductor_seed)]
            assert own is not None
            assert outer is not None
            assert own.seed == entry.token.conductor_seed
            assert own.lead_token_id == entry.token.token_id
            assert own.parent_seed == entry.creator_seed == outer.seed
            assert own.depth == 1
            assert outer.depth == 0
            assert own.core_id == outer.core_id == entry.token.core_id
            assert own.pending >= 1
            assert outer.pending >= 1


def test_the_outer_domain_stays_open_until_its_nested_domain_closes() -> None:
    gate = threading.Event()
    made: list[TaskToken[Any]] = []

    @task_token_guard(tags={"external_calls": ["waiting_nested"]})
    def waiting_outer() -> None:
        made.append(waiting_nested())

    @task_token_guard(tags={"external_calls": ["nothing"]})
    def waiting_nested() -> str | None:
        gate.wait(WAIT)
        return get_active_seed()

    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        outer = waiting_outer()
        outer.get(WAIT)
        inner = made[0]
        assert outer.conductor_seed is not None
        assert inner.conductor_seed is not None
        snapshot = dict(conductor_snapshot(coordinator))
        assert snapshot == {
            outer.conductor_seed[:12]: DomainInfo(
                outer.conductor_seed, outer.core_id, 1, outer.token_id, None, 0
            ),
            inner.conductor_seed[:12]: DomainInfo(
                inner.conductor_seed, outer.core_id, 1, inner.token_id, outer.conductor_seed, 1
            ),
        }
        gate.set()
        assert inner.get(WAIT) == inner.conductor_seed
        assert inner.core_id == outer.core_id
        assert_quiescent(coordinator)


# ---------------------------------------------------------------------------- random trees
Tree: TypeAlias = tuple[bool, tuple["Tree", ...]]


def _spawn(rec: Recorder, node: Tree) -> None:
    for kid in node[1]:
        op = tree_lead if kid[0] else tree_node
        rec.add(op(rec, kid), lead=kid[0])


@task_token_guard(tags={"external_calls": ["tree_node", "tree_lead"]})
def tree_lead(rec: Recorder, node: Tree) -> Observation:
    _spawn(rec, node)
    return observe()


@task_token_guard(tags={"weight": "light"})
def tree_node(rec: Recorder, node: Tree) -> Observation:
    _spawn(rec, node)
    return observe()


def _size(node: Tree) -> int:
    return 1 + sum(_size(kid) for kid in node[1])


def _node(is_lead: bool, kids: list[Tree]) -> Tree:
    return (is_lead, tuple(kids))


def _extend(kids: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    return st.builds(_node, st.booleans(), st.lists(kids, max_size=3))


_trees: st.SearchStrategy[Tree] = st.recursive(
    st.builds(_node, st.booleans(), st.just([])), _extend, max_leaves=10
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(forest=st.lists(_trees, min_size=1, max_size=4))
def test_random_trees_of_leads_and_children(forest: list[Tree]) -> None:
    rec = Recorder()
    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        for root in forest:
            rec.add((tree_lead if root[0] else tree_node)(rec, root), lead=root[0])
        entries = rec.wait_for(sum(_size(root) for root in forest))
        wait_all(entries)
        check_domains(coordinator, entries)


# ---------------------------------------------------------------------------- collisions
class ConstantDigest:
    """A digest policy that gives every lead the same seed: every domain collides."""

    @hookimpl
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        registry.register("constant", lambda data: "c0ffee")


def test_colliding_seeds_merge_domains_onto_one_core() -> None:
    rec = Recorder()
    gate = threading.Event()
    host = plugin_manager()
    host.register(ConstantDigest(), name="test-constant-digest")
    try:

        @task_token_guard(tags={"external_calls": ["child"], "digest_policy": "CONSTANT"})
        def holding_lead() -> None:
            gate.wait(WAIT)

        @task_token_guard(tags={"external_calls": ["child"], "digest_policy": "constant"})
        def colliding_lead() -> None:
            for _ in range(2):
                rec.add(child(rec, 0, False))

        with OperationsCoordinator(cores=4, workers_per_core=3) as coordinator:
            holder = holding_lead()
            leads = [colliding_lead() for _ in range(8)]
            snapshot = conductor_snapshot(coordinator)
            assert list(snapshot) == ["c0ffee"]
            assert snapshot["c0ffee"].pending >= 1
            gate.set()
            entries = rec.wait_for(16)
            wait_all(entries)
            for token in [holder, *leads]:
                token.get(WAIT)
            cores = {t.core_id for t in [holder, *leads, *(e.token for e in entries)]}
            seeds = {t.conductor_seed for t in [holder, *leads, *(e.token for e in entries)]}
            assert cores == {holder.core_id}
            assert seeds == {"c0ffee"}
            assert_quiescent(coordinator)
    finally:
        host.unregister(name="test-constant-digest")


# ---------------------------------------------------------------------------- plugin failures
class _CreateFails(TokenExtension):
    def on_create(self, token: TaskToken[Any]) -> None:
        raise RuntimeError("on_create failed on purpose")


class _RouteFails(TokenExtension):
    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        raise RuntimeError("route failed on purpose")


class CreateFailsLast:
    """Its extension runs after the conductor's on_create: the token was already counted."""

    @hookimpl(trylast=True)
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return _CreateFails() if operation.operation_type.startswith("create_fails") else None


class RouteFailsFirst:
    """Its extension routes before the conductor's: counted at creation, then failed."""

    @hookimpl(tryfirst=True)
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return _RouteFails() if operation.operation_type.startswith("route_fails") else None


class BrokenDigest:
    @hookimpl
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        def broken(data: bytes) -> str:
            raise ValueError("digest failed on purpose")

        registry.register("broken", broken)


def test_failures_in_creation_or_routing_keep_the_counts_consistent() -> None:
    host = plugin_manager()
    plugins = {
        "test-create-fails": CreateFailsLast(),
        "test-route-fails": RouteFailsFirst(),
        "test-broken-digest": BrokenDigest(),
    }
    for name, plugin in plugins.items():
        host.register(plugin, name=name)
    try:

        @task_token_guard("create_fails")
        def create_fails() -> None:
            raise AssertionError("never runs")

        @task_token_guard("route_fails")
        def route_fails() -> None:
            raise AssertionError("never runs")

        @task_token_guard("route_fails_lead", tags={"external_calls": ["x"]})
        def route_fails_lead() -> None:
            raise AssertionError("never runs")

        @task_token_guard(tags={"external_calls": ["x"], "digest_policy": "broken"})
        def broken_digest_lead() -> None:
            raise AssertionError("never runs")

        made: list[TaskToken[Any]] = []

        @task_token_guard(tags={"external_calls": ["create_fails", "route_fails"]})
        def spawning_lead() -> str | None:
            made.extend([create_fails(), route_fails(), route_fails_lead(), broken_digest_lead()])
            made.append(child(Recorder(), 0, False))
            return get_active_seed()

        with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
            tokens = [spawning_lead() for _ in range(6)]
            for token in tokens:
                assert token.get(WAIT) == token.conductor_seed
            for token in made:
                token.exception(WAIT)
            by_op: dict[str, set[TokenState]] = {}
            for token in made:
                by_op.setdefault(token.operation_type, set()).add(token.state)
                if token.state is TokenState.FAILED:
                    assert isinstance(token.exception(0), TokenGateError)
            assert by_op.pop("child") == {TokenState.COMPLETED}
            assert len(by_op) == 4
            assert all(states == {TokenState.FAILED} for states in by_op.values())
            broken = [t for t in made if t.operation_type.endswith("broken_digest_lead")]
            error = broken[0].exception(0)
            assert isinstance(error, PluginError)
            assert "digest" in str(error)
            assert_quiescent(coordinator)
            # outside any domain too
            for token in (create_fails(), route_fails(), route_fails_lead()):
                assert token.state is TokenState.FAILED
            assert_quiescent(coordinator)
    finally:
        for name in plugins:
            host.unregister(name=name)


# ---------------------------------------------------------------------------- coordinators
def test_domains_belong_to_their_coordinator() -> None:
    gate = threading.Event()
    first = OperationsCoordinator(cores=2, workers_per_core=2).start()
    second = OperationsCoordinator(cores=2, workers_per_core=2).start()
    try:
        token = blocking_lead(Recorder(), gate)  # the newest coordinator takes the call
        assert token.coordinator is second
        assert dict(conductor_snapshot(first)) == {}
        assert len(conductor_snapshot(second)) == 1
    finally:
        gate.set()
        second.stop()
        first.stop()
    assert_quiescent(first)
    assert_quiescent(second)


@pytest.mark.asyncio
async def test_awaiting_leads_and_members_from_an_event_loop() -> None:
    rec = Recorder()
    async with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        for _ in range(8):
            rec.add(lead(rec, 2, 1, False), lead=True)
        entries = await asyncio.to_thread(rec.wait_for, 8 * (1 + 2 + 2))
        results = await asyncio.gather(*(e.token for e in entries))
        assert all(isinstance(result, Observation) for result in results)
        check_domains(coordinator, entries)


def test_get_active_seed_is_none_outside_domains() -> None:
    assert get_active_seed() is None
    seen: list[str | None] = []
    with OperationsCoordinator(cores=2, workers_per_core=1):
        token = child(Recorder(), 0, False)
        assert token.get(WAIT) == Observation(None, token.core_id)
        assert token.conductor_seed is None
    seen.append(get_active_seed())
    assert seen == [None]
