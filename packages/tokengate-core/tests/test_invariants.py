"""SPEC §4 invariants I1, I3, I4 and I5 under real concurrency, each scenario repeated.

* I1 — all in-flight tokens that share a sticky key are in one core domain.
* I3 — once every token is terminal, the sticky registry and the token table are empty.
* I4 — every token reaches exactly one terminal state and every awaiter is released; an
  error anywhere in routing fails that token instead of losing it.
* I5 — no function body runs more than once per token.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokengate.core import (
    HashPolicyRegistry,
    OperationInfo,
    OperationsCoordinator,
    PluginError,
    RoutingError,
    RoutingPolicy,
    TaskKilledError,
    TaskToken,
    TokenExtension,
    TokenState,
    Weight,
    hookimpl,
    plugin_manager,
    task_token_guard,
)

WAIT = 20.0
ROUNDS = 5

PluginRegistrar = Callable[[object, str], str]

_CORE_OF_THREAD = re.compile(r"-core(\d+)-[wt]\d+$")


def core_of_current_thread() -> int:
    match = _CORE_OF_THREAD.search(threading.current_thread().name)
    assert match is not None, threading.current_thread().name
    return int(match.group(1))


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def main(index: int) -> None:
        try:
            barrier.wait(WAIT)
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
        assert not thread.is_alive(), "a submitting thread hung"
    if errors:
        raise errors[0]


def assert_registries_empty(coordinator: OperationsCoordinator) -> None:
    """I3, checked while the coordinator still runs."""
    assert dict(coordinator.sticky_snapshot()) == {}
    assert coordinator.in_flight() == []
    assert coordinator.stats().in_flight == 0


def wait_all(tokens: Sequence[TaskToken[Any]]) -> None:
    for token in tokens:
        token.exception(WAIT)  # raises TimeoutError if a token was lost


# --------------------------------------------------------------------------- I1
class ActiveBodies:
    """Body-side recorder: which cores run bodies of each sticky key right now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[Hashable, Counter[int]] = defaultdict(Counter)
        self.violations: list[str] = []
        self.max_overlap = 0

    def enter(self, key: Hashable) -> None:
        core = core_of_current_thread()
        with self.lock:
            running = self.active[key]
            others = {c for c, n in running.items() if n and c != core}
            if others:
                self.violations.append(f"key {key!r} ran on core {core} and {others}")
            running[core] += 1
            self.max_overlap = max(self.max_overlap, sum(running.values()))

    def leave(self, key: Hashable) -> None:
        core = core_of_current_thread()
        with self.lock:
            self.active[key][core] -= 1


def sample_in_flight(coordinator: OperationsCoordinator, violations: list[str]) -> int:
    """One I1 sample from the coordinator's side. A conflict counts only if both tokens are
    still not terminal after their cores were read (so both held the key the whole time)."""
    tokens = coordinator.in_flight()
    seen = [(t, t.sticky_key, t.core_id) for t in tokens]
    by_key: dict[Hashable, list[tuple[TaskToken[Any], int]]] = defaultdict(list)
    for token, key, core in seen:
        if key is not None and core is not None:
            by_key[key].append((token, core))
    for key, members in by_key.items():
        alive = [(t, core) for t, core in members if not t.state.is_terminal]
        cores = {core for _, core in alive}
        if len(cores) > 1:
            violations.append(f"in-flight tokens of key {key!r} on cores {sorted(cores)}")
    return len(seen)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_i1_same_key_same_core_under_concurrent_submission(round_: int) -> None:
    recorder = ActiveBodies()
    rng = random.Random(round_)
    keys = [f"key{i}" for i in range(6)]

    @task_token_guard(operation_type="inv.i1.medium", tags={"sticky_anchor": "shared"})
    def medium(key: str, pause: float) -> str:
        recorder.enter(("shared", (key, pause)))
        try:
            time.sleep(pause)  # the workload: bodies that take a little while
        finally:
            recorder.leave(("shared", (key, pause)))
        return key

    @task_token_guard(
        operation_type="inv.i1.light", tags={"sticky_anchor": "shared", "weight": "light"}
    )
    def light(key: str, pause: float) -> str:
        return medium.__wrapped__(key, pause)

    pauses = (0.0, 0.001)
    tokens: list[TaskToken[str]] = []
    lock = threading.Lock()
    sampler_violations: list[str] = []
    submitting = threading.Event()
    submitting.set()
    samples = [0]

    with OperationsCoordinator(cores=4, workers_per_core=3) as coordinator:

        def sampler() -> None:
            while submitting.is_set():
                samples[0] += sample_in_flight(coordinator, sampler_violations)

        sampling = threading.Thread(target=sampler)
        sampling.start()
        plans = [
            [(rng.choice(keys), rng.choice(pauses), rng.random()) for _ in range(150)]
            for _ in range(8)
        ]

        def submit(index: int) -> None:
            mine = [
                (light if coin < 0.3 else medium)(key, pause) for key, pause, coin in plans[index]
            ]
            with lock:
                tokens.extend(mine)

        try:
            run_threads(8, submit)
            wait_all(tokens)
        finally:
            submitting.clear()
            sampling.join(WAIT)
        assert all(t.state is TokenState.COMPLETED for t in tokens)
        assert_registries_empty(coordinator)  # I3
    assert recorder.violations == []
    assert sampler_violations == []
    assert recorder.max_overlap > 1, "the scenario never ran two bodies of one key at once"
    assert samples[0] > 0
    # the same key was pinned to different cores at different times: routing stays free
    by_key: dict[str, set[int | None]] = defaultdict(set)
    for token in tokens:
        by_key[token.get(0)].add(token.core_id)
    assert len(set().union(*by_key.values())) > 1


# --------------------------------------------------------------------------- I4
class FaultyPolicy(RoutingPolicy):
    """Raises for arguments divisible by 3, routes to a core that does not exist for
    arguments ≡ 1 (mod 3), and keeps the usual routing otherwise."""

    chooses_cores = True

    def choose_core(self, token: TaskToken[Any], candidate: int, total_cores: int) -> int | None:
        value = token.args[0]
        if value % 3 == 0:
            raise LookupError(f"policy exploded on {value}")
        if value % 3 == 1:
            return total_cores + 7
        return None


class BrokenCoresPolicy(RoutingPolicy):
    def cores_for(self, weight: Weight, total_cores: int) -> Sequence[int]:
        return ()


class FaultyRoutingPlugin:
    @hookimpl
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        if operation.operation_type == "inv.i4.faulty":
            return FaultyPolicy()
        if operation.operation_type == "inv.i4.no_cores":
            return BrokenCoresPolicy()
        return None

    @hookimpl
    def tokengate_register_hash_policies(self, registry: HashPolicyRegistry) -> None:
        def exploding_key(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Hashable:
            if args and args[0] % 2:
                raise ValueError("key function exploded")
            return args

        registry.register("inv_exploding", exploding_key)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_i4_routing_errors_fail_tokens_and_release_every_awaiter(
    round_: int, register_plugin: PluginRegistrar
) -> None:
    register_plugin(FaultyRoutingPlugin(), "test-inv-faulty-routing")

    @task_token_guard(operation_type="inv.i4.faulty")
    def faulty(value: int) -> int:
        return value

    @task_token_guard(operation_type="inv.i4.no_cores")
    def no_cores(value: int) -> int:
        return value

    @task_token_guard(operation_type="inv.i4.bad_key", tags={"hash_policy": "inv_exploding"})
    def bad_key(value: int) -> int:
        return value

    @task_token_guard(operation_type="inv.i4.good")
    def good(value: int) -> int:
        return value

    ops = (faulty, no_cores, bad_key, good)
    tokens: list[TaskToken[int]] = []
    lock = threading.Lock()
    loop_results: list[list[object]] = []

    with OperationsCoordinator(cores=4, workers_per_core=2) as coordinator:

        def submit(index: int) -> None:
            rng = random.Random(index * 100 + round_)
            mine = [rng.choice(ops)(i) for i in range(200)]
            with lock:
                tokens.extend(mine)
            if index % 2:  # half of the awaiters wait on an event loop, half block

                async def gather() -> list[object]:
                    return await asyncio.gather(*mine, return_exceptions=True)

                loop_results.append(asyncio.run(gather()))
            else:
                wait_all(mine)

        run_threads(6, submit)
        wait_all(tokens)
        assert_registries_empty(coordinator)  # I3
    assert len(loop_results) == 3
    assert all(len(results) == 200 for results in loop_results)
    for token in tokens:
        error = token.exception(0)
        op = token.operation_type
        if op == "inv.i4.good":
            assert token.state is TokenState.COMPLETED
        elif op == "inv.i4.no_cores":
            assert token.state is TokenState.FAILED
            assert isinstance(error, PluginError)
        elif op == "inv.i4.faulty":
            value = token.args[0]
            if value % 3 == 0:  # the policy raised: a plugin's fault
                assert isinstance(error, PluginError), repr(error)
            elif value % 3 == 1:  # the policy chose a core that does not exist
                assert isinstance(error, RoutingError), repr(error)
            else:
                assert token.state is TokenState.COMPLETED
            if error is not None:
                assert token.state is TokenState.FAILED
                assert token.token_id in str(error)
        else:  # the key function of the hash policy raised for odd values
            if token.args[0] % 2:
                assert token.state is TokenState.FAILED
                assert isinstance(error, (RoutingError, PluginError)), repr(error)
            else:
                assert token.state is TokenState.COMPLETED
    failed = Counter(t.operation_type for t in tokens if t.state is TokenState.FAILED)
    assert failed["inv.i4.faulty"] > 0
    assert failed["inv.i4.bad_key"] > 0
    assert failed["inv.i4.good"] == 0


# --------------------------------------------------------------------------- I5
class ReleaseCounter(TokenExtension):
    """Counts the on_terminal release step of every token."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.terminal: Counter[str] = Counter()

    def on_terminal(self, token: TaskToken[Any]) -> None:
        with self.lock:
            self.terminal[token.token_id] += 1


class ReleaseCounterPlugin:
    def __init__(self) -> None:
        self.extension = ReleaseCounter()

    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return self.extension if operation.operation_type.startswith("inv.i5") else None


def _kill_storm(
    submitters: int, calls: int, keys: int, kill_every: int, seed: int
) -> tuple[Counter[int], list[tuple[int, TaskToken[int]]], ReleaseCounter]:
    """Submit from ``submitters`` threads while two killer threads kill tokens (recent ones
    and random ones; now and then they drain or kill the whole operation). Every tenth body
    holds its worker until the storm is over, so tokens pile up behind them and the storm
    meets tokens in every state: queued, running and completing. Returns the body runs per
    call id, ``(call id, token)`` pairs and the release-step counter."""
    runs: Counter[int] = Counter()
    runs_lock = threading.Lock()
    storm_over = threading.Event()
    plugin = ReleaseCounterPlugin()
    host = plugin_manager()
    name = f"test-inv-release-counter-{seed}"
    host.register(plugin, name=name)  # for the whole storm: plans follow the plugin set
    try:

        @task_token_guard(operation_type="inv.i5.body")
        def body(call_id: int, key: int) -> int:
            with runs_lock:
                runs[call_id] += 1
            if call_id % 10 == 0:
                storm_over.wait(WAIT)
            return call_id

        submitted: list[tuple[int, TaskToken[int]]] = []
        lock = threading.Lock()
        remaining = [submitters]
        done_submitting = threading.Event()
        with OperationsCoordinator(cores=4, workers_per_core=2, stop_timeout=WAIT) as coordinator:

            def submit(index: int) -> None:
                base = index * calls
                try:
                    for i in range(calls):
                        token = body(base + i, (base + i) % keys)
                        with lock:
                            submitted.append((base + i, token))
                finally:
                    with lock:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done_submitting.set()

            def kill(index: int) -> None:
                rng = random.Random(seed * 31 + index)
                passes_after = 0
                while passes_after < 3:
                    if done_submitting.is_set():
                        passes_after += 1
                    with lock:
                        if rng.random() < 0.7:
                            victims = [token for _, token in submitted[-60:]]
                        else:
                            pairs = rng.sample(submitted, min(40, len(submitted)))
                            victims = [token for _, token in pairs]
                    for victim in victims[:: max(1, kill_every)]:
                        victim.kill("storm")
                    if rng.random() < 0.02:
                        coordinator.drain("inv.i5.body")
                    if rng.random() < 0.005:
                        coordinator.kill_operation("inv.i5.body", "storm")

            def role(index: int) -> None:
                if index < submitters:
                    submit(index)
                else:
                    kill(index)

            try:
                run_threads(submitters + 2, role)
            finally:
                storm_over.set()
            wait_all([token for _, token in submitted])
            assert_registries_empty(coordinator)  # I3
    finally:
        host.unregister(name=name)
    return runs, submitted, plugin.extension


def _check_storm(
    runs: Counter[int], submitted: list[tuple[int, TaskToken[int]]], release: ReleaseCounter
) -> Counter[TokenState]:
    states: Counter[TokenState] = Counter()
    for call_id, token in submitted:
        state = token.state
        states[state] += 1
        assert state.is_terminal
        assert release.terminal[token.token_id] == 1, "release steps did not run exactly once"
        if state is TokenState.COMPLETED:
            assert token.get(0) == call_id
            assert runs[call_id] == 1
        else:
            assert state is TokenState.KILLED
            with pytest.raises(TaskKilledError):
                token.get(0)
            if token.started_at is None:  # killed before it started: it never runs
                assert runs[call_id] == 0, f"{token.token_id} ran after a kill before its start"
    assert max(runs.values(), default=0) <= 1, "a body ran twice"  # I5
    return states


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_i5_no_body_runs_twice_under_kill_storms(round_: int) -> None:
    runs, submitted, release = _kill_storm(
        submitters=4, calls=250, keys=7, kill_every=2, seed=round_
    )
    states = _check_storm(runs, submitted, release)
    assert len(submitted) == 1000
    killed_queued = sum(
        1 for _, t in submitted if t.state is TokenState.KILLED and t.started_at is None
    )
    assert killed_queued > 0, "the storm killed no queued token: the scenario is too weak"
    assert states[TokenState.KILLED] + states[TokenState.COMPLETED] == 1000


@settings(max_examples=6, deadline=None)
@given(
    submitters=st.integers(1, 5),
    keys=st.integers(1, 10),
    kill_every=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_i5_property_over_storm_shapes(
    submitters: int, keys: int, kill_every: int, seed: int
) -> None:
    runs, submitted, release = _kill_storm(
        submitters=submitters, calls=120, keys=keys, kill_every=kill_every, seed=seed
    )
    _check_storm(runs, submitted, release)
    assert len(submitted) == submitters * 120


# --------------------------------------------------------------------------- kill races
class KillingPolicy(RoutingPolicy):
    """Kills the token while it is being routed (as a concurrent kill, a timeout or a drain
    could), then lets the usual sticky routing continue."""

    chooses_cores = True

    def choose_core(self, token: TaskToken[Any], candidate: int, total_cores: int) -> int | None:
        token.kill("killed during routing")
        return None


class KillingPolicyPlugin:
    @hookimpl
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        return KillingPolicy() if operation.operation_type == "inv.kill_in_route" else None


def test_kill_during_routing_leaves_no_sticky_pin(register_plugin: PluginRegistrar) -> None:
    register_plugin(KillingPolicyPlugin(), "test-inv-killing-policy")

    @task_token_guard(operation_type="inv.kill_in_route")
    def victim(x: int) -> int:
        return x

    coordinator = OperationsCoordinator(cores=3, workers_per_core=1).start()
    try:
        tokens = [victim(i) for i in range(5)]
        assert all(t.state is TokenState.KILLED for t in tokens)
        wait_all(tokens)
        assert dict(coordinator.sticky_snapshot()) == {}
    finally:
        coordinator.stop(timeout=1)


class KillOnCreate(TokenExtension):
    def on_create(self, token: TaskToken[Any]) -> None:
        token.kill("refused at creation")


class KillOnCreatePlugin:
    @hookimpl
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        return KillOnCreate() if operation.operation_type == "inv.kill_on_create" else None


def test_a_token_killed_on_creation_leaves_the_token_table(
    register_plugin: PluginRegistrar,
) -> None:
    register_plugin(KillOnCreatePlugin(), "test-inv-kill-on-create")

    @task_token_guard(operation_type="inv.kill_on_create")
    def refused() -> int:
        return 1

    coordinator = OperationsCoordinator(cores=2, workers_per_core=1).start()
    try:
        token = refused()
        assert token.state is TokenState.KILLED
        assert coordinator.get_token(token.token_id) is None
        assert coordinator.stats().in_flight == 0
    finally:
        coordinator.stop(timeout=0.5)
