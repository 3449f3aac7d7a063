"""Fault injection: bodies that raise, hang past their deadline or kill their worker process;
kill storms; stop during bursts from several threads; plugins whose hooks raise.

The promise checked everywhere: a fault ends the tokens it touched (each exactly once, with
an error that says what happened) and never the coordinator — its workers stay alive, other
tokens keep completing, and once everything is terminal no registry holds anything (I3).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import reliability_targets as targets
from tests.support.reliability_checks import (
    WAIT,
    RunCounter,
    TerminalLedger,
    assert_quiescent,
    conductor_violations,
    live_worker_threads,
    record_faults,
    sticky_violations,
    wait_all,
)
from tokengate.core import (
    CoordinatorNotRunningError,
    OperationInfo,
    OperationsCoordinator,
    PluginError,
    ProcessDomainError,
    RoutingError,
    RoutingPolicy,
    TaskKilledError,
    TaskToken,
    TokenExtension,
    TokenState,
    TokenTimeoutError,
    Weight,
    hookimpl,
    task_token_guard,
)
from tokengate.core._process import ProcessExecutor

PluginRegistrar = Callable[[object, str], str]

CORES = 4
WORKERS = 2


@pytest.fixture
def coordinator() -> Iterator[OperationsCoordinator]:
    """A fresh coordinator (4 cores x 2 workers), stopped and checked clean afterwards."""
    coord = OperationsCoordinator(cores=CORES, workers_per_core=WORKERS, stop_timeout=WAIT).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=WAIT)
    assert_quiescent(coord)


def assert_still_serving(coordinator: OperationsCoordinator) -> None:
    """The coordinator survived: new tokens complete on its worker threads, which are alive
    (executors make their threads per core domain as tokens arrive)."""
    assert coordinator.running
    probes = [healthy(i) for i in range(4 * coordinator.cores)]
    assert [t.get(WAIT) for t in probes] == [2 * i for i in range(4 * coordinator.cores)]
    assert live_worker_threads(coordinator) >= 1


@task_token_guard("reliability.faults.healthy", tags={"hash_policy": "none"})
def healthy(x: int) -> int:
    return 2 * x


# ---------------------------------------------------------------------- raising bodies
class CustomBaseError(BaseException):
    """A BaseException that is neither Exception nor one of the interpreter's own."""


RAISED: tuple[Callable[[str], BaseException], ...] = (
    ValueError,
    KeyError,
    RuntimeError,
    ZeroDivisionError,
    RecursionError,
    MemoryError,
    SystemExit,
    KeyboardInterrupt,
    GeneratorExit,
    CustomBaseError,
)


@task_token_guard("reliability.faults.raiser", tags={"sticky_anchor": "reliability.raise"})
def raiser(kind: int, serial: int) -> int:
    if kind >= 0:
        raise RAISED[kind](f"raised by body {serial}")
    return serial


def test_raising_bodies_fail_only_their_own_token(coordinator: OperationsCoordinator) -> None:
    ledger = TerminalLedger()
    rng = random.Random(7)
    plan = [(rng.randrange(-1, len(RAISED)), serial) for serial in range(400)]
    tokens: list[tuple[int, TaskToken[int]]] = []
    lock = threading.Lock()

    def submit(part: Sequence[tuple[int, int]]) -> None:
        made = [(kind, ledger.track(raiser(kind, serial))) for kind, serial in part]
        with lock:
            tokens.extend(made)

    threads = [threading.Thread(target=submit, args=(plan[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    ledger.check()
    faults = 0
    for kind, token in tokens:
        exc = token.exception(0)
        if kind < 0:
            assert token.state is TokenState.COMPLETED
            assert exc is None
            continue
        faults += 1
        assert token.state is TokenState.FAILED
        assert type(exc) is RAISED[kind], f"{token!r} ended with {exc!r}"
        assert "raised by body" in str(exc)
    assert faults > 300
    record_faults("bodies that raise (10 exception kinds, BaseException included)", faults)
    assert_still_serving(coordinator)
    assert_quiescent(coordinator)


# ---------------------------------------------------------------------- hung thread bodies
def test_thread_bodies_hanging_past_their_deadline(coordinator: OperationsCoordinator) -> None:
    release = threading.Event()
    runs = RunCounter()

    @task_token_guard(
        "reliability.faults.hung", tags={"weight": "heavy", "timeout": 1.0, "hash_policy": "none"}
    )
    def hung(marker: str) -> str:
        runs.enter(marker)
        try:
            release.wait(WAIT)
            return marker
        finally:
            runs.leave()

    stuck = [hung(f"h{i}") for i in range(WORKERS)]  # one for each worker of core 1
    try:
        for token in stuck:
            with pytest.raises(TokenTimeoutError, match=r"missed its 1 s deadline"):
                token.get(WAIT)
            assert token.state is TokenState.TIMEOUT
        # A body that had not started by its deadline never runs; the others hang on.
        hanging = [token for token in stuck if token.started_at is not None]
        assert hanging, "no body started within its 1 s deadline"
        record_faults("bodies hanging past their deadline", len(hanging))
        # The hung bodies still hold their workers of core 1; the other cores keep serving.
        assert coordinator.stats().cores[0].busy_workers == len(hanging)
        assert [healthy(i).get(WAIT) for i in range(20)] == [2 * i for i in range(20)]
    finally:
        release.set()
    runs.wait_idle()
    for i, token in enumerate(stuck):
        assert token.state is TokenState.TIMEOUT, "a late result replaced the TIMEOUT"
        assert runs.count(f"h{i}") == (1 if token in hanging else 0)
    assert_still_serving(coordinator)


# ---------------------------------------------------------------------- process faults
@pytest.fixture
def process_coordinator() -> Iterator[OperationsCoordinator]:
    """Two cores with one worker each, so HEAVY process tokens reach core 1's single worker
    process in submission order."""
    coord = OperationsCoordinator(cores=2, workers_per_core=1, stop_timeout=WAIT).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=WAIT)
    assert_quiescent(coord)


PROCESS_HEAVY = {"process_pool": True, "weight": "heavy", "hash_policy": "none"}
p_whoami = task_token_guard("reliability.faults.p_whoami", tags=PROCESS_HEAVY)(targets.whoami)
p_exit = task_token_guard("reliability.faults.p_exit", tags=PROCESS_HEAVY)(targets.exit_abruptly)
p_sigkill = task_token_guard("reliability.faults.p_sigkill", tags=PROCESS_HEAVY)(
    targets.die_by_signal
)
p_fail = task_token_guard("reliability.faults.p_fail", tags=PROCESS_HEAVY)(targets.fail)
p_hang = task_token_guard("reliability.faults.p_hang", tags={**PROCESS_HEAVY, "timeout": 1.5})(
    targets.mark_then_sleep
)
p_mark = task_token_guard("reliability.faults.p_mark", tags=PROCESS_HEAVY)(targets.mark_run)


def test_process_bodies_that_kill_their_worker_fail_only_themselves(
    process_coordinator: OperationsCoordinator,
) -> None:
    first = p_whoami().get(WAIT)
    # One call in flight per process: the crashes and the calls queued behind them.
    tokens: list[TaskToken[Any]] = [
        p_exit(3),
        p_whoami(),
        p_sigkill(),
        p_whoami(),
        p_fail("ordinary failure"),
        p_whoami(),
    ]
    wait_all(tokens)
    crashed_exit, after_exit, crashed_kill, after_kill, failed, last = tokens
    record_faults("process bodies that kill their worker process", 2)
    for crashed, how in ((crashed_exit, "exit code 3"), (crashed_kill, "SIGKILL")):
        assert crashed.state is TokenState.FAILED
        exc = crashed.exception(0)
        assert isinstance(exc, ProcessDomainError)
        assert "died" in str(exc)
        assert how in str(exc)
        assert crashed.token_id in str(exc)
    assert failed.state is TokenState.FAILED
    assert isinstance(failed.exception(0), ValueError)
    record_faults("process bodies that raise", 1)
    pids = [after_exit.get(0), after_kill.get(0), last.get(0)]
    assert first != pids[0] != pids[1], "a dead worker process was not replaced"
    assert pids[1] == pids[2], "an ordinary exception must not cost the worker process"
    backend = process_coordinator.backend("process", 1)
    assert isinstance(backend, ProcessExecutor)
    assert backend.restarts >= 2
    assert_quiescent(process_coordinator)


def test_process_body_hanging_past_its_deadline_then_stop(tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    # One worker thread per core: the calls reach the worker process in submission order.
    coordinator = OperationsCoordinator(cores=2, workers_per_core=1).start()
    try:
        assert p_mark(log, "warm-up").get(WAIT) == "warm-up"  # the worker process is up
        hung = p_hang(log, "hung", 120.0)
        queued = [p_mark(log, f"queued{i}") for i in range(3)]
        with pytest.raises(TokenTimeoutError):
            hung.get(WAIT)
        record_faults("process bodies hanging past their deadline", 1)
        assert hung.state is TokenState.TIMEOUT
        # The timeout killed the hung body with its worker process; the calls queued behind
        # it run on a fresh one.
        assert [t.get(WAIT) for t in queued] == [f"queued{i}" for i in range(3)]
    finally:
        coordinator.stop(timeout=1.0)
    assert hung.state is TokenState.TIMEOUT
    assert coordinator.stats().cores[0].process_alive is False, (
        "stop() left a worker process running"
    )
    runs = targets.count_runs(log)
    assert runs == {"warm-up": 1, "hung": 1, "queued0": 1, "queued1": 1, "queued2": 1}, (
        f"a body ran twice or not at all: {runs}"
    )
    assert_quiescent(coordinator)


# ---------------------------------------------------------------------- kill storms
def test_kill_storm(coordinator: OperationsCoordinator) -> None:
    ledger = TerminalLedger()
    runs = RunCounter()
    markers: dict[int, str] = {}
    leads: list[tuple[TaskToken[Any], list[TaskToken[Any]]]] = []
    lock = threading.Lock()
    pool: list[TaskToken[Any]] = []
    submitting = threading.Event()
    submitting.set()

    def work(marker: str, key: int) -> int:
        runs.enter(marker)
        try:
            return sum(range(300 + key))
        finally:
            runs.leave()

    sticky = task_token_guard("reliability.storm.sticky", tags={"sticky_anchor": "storm"})(work)
    light = task_token_guard(
        "reliability.storm.light", tags={"sticky_anchor": "storm", "weight": "light"}
    )(work)

    @task_token_guard(
        "reliability.storm.lead", tags={"external_calls": ["reliability.storm.sticky"]}
    )
    def lead(marker: str, children: int) -> int:
        runs.enter(marker)
        try:
            made = []
            for i in range(children):
                child_marker = f"{marker}.{i}"
                child = sticky(child_marker, i)
                with lock:
                    markers[id(child)] = child_marker
                    pool.append(ledger.track(child))
                made.append(child)
            with lock:
                leads.append((lead_tokens[marker], made))
            return children
        finally:
            runs.leave()

    lead_tokens: dict[str, TaskToken[Any]] = {}

    def submitter(index: int) -> None:
        rng = random.Random(index)
        for serial in range(300):
            marker = f"s{index}.{serial}"
            roll = rng.random()
            if roll < 0.1:
                with lock:  # the lead body looks itself up; register before it can run
                    token = lead(marker, rng.randrange(4))
                    lead_tokens[marker] = token
            else:
                token = (light if roll < 0.4 else sticky)(marker, rng.randrange(5))
            with lock:
                markers[id(token)] = marker
                pool.append(ledger.track(token))

    kills = [0]
    samples: list[str] = []

    def killer(index: int) -> None:
        rng = random.Random(100 + index)
        while submitting.is_set():
            with lock:
                victims = rng.sample(pool, min(len(pool), 5)) if pool else []
            for victim in victims:
                if victim.kill("storm"):
                    with lock:
                        kills[0] += 1
            if rng.random() < 0.05:
                with lock:
                    kills[0] += coordinator.kill_operation("reliability.storm.light", "storm")
            if rng.random() < 0.05:
                with lock:
                    kills[0] += coordinator.drain()
            samples.extend(sticky_violations(coordinator))

    killers = [threading.Thread(target=killer, args=(i,)) for i in range(2)]
    submitters = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for thread in killers + submitters:
        thread.start()
    for thread in submitters:
        thread.join(WAIT)
    submitting.clear()
    for thread in killers:
        thread.join(WAIT)
    ledger.check()
    runs.wait_idle()
    ledger.check()  # children made by lead bodies that kept running after their kill
    record_faults("kills in kill storms (kill, kill_operation, drain)", kills[0])
    assert kills[0] > 0
    assert samples == [], samples  # I1 while the storm raged
    with lock:
        assert conductor_violations(leads) == []  # I2
    killed = 0
    for token in ledger.tokens:
        marker = markers[id(token)]
        count = runs.count(marker)
        assert count <= 1, f"{token!r} ran {count} times"  # I5
        if token.state is TokenState.KILLED:
            killed += 1
            assert isinstance(token.exception(0), TaskKilledError)
            if token.started_at is None:
                assert count == 0, f"{token!r} was killed before it started, yet ran"
        else:
            assert token.state is TokenState.COMPLETED, f"{token!r}: {token.exception(0)!r}"
            assert count == 1
    assert killed > 0
    assert_still_serving(coordinator)
    assert_quiescent(coordinator)


# ---------------------------------------------------------------------- stop during bursts
@pytest.mark.parametrize(
    ("wait", "cancel_pending"),
    [(True, False), (True, True), (False, False)],
    ids=["wait", "cancel-pending", "no-wait"],
)
def test_stop_during_bursts_from_several_threads(wait: bool, cancel_pending: bool) -> None:
    coordinator = OperationsCoordinator(cores=CORES, workers_per_core=WORKERS).start()
    ledger = TerminalLedger()
    runs = RunCounter()
    markers: dict[int, str] = {}
    lock = threading.Lock()
    enough = threading.Event()
    foreign = threading.Event()
    refused = [0]

    def work(marker: str, key: int) -> int:
        runs.enter(marker)
        try:
            return sum(range(500 + key))
        finally:
            runs.leave()

    sticky = task_token_guard("reliability.burst.sticky", tags={"sticky_anchor": "burst"})(work)
    heavy = task_token_guard(
        "reliability.burst.heavy", tags={"weight": "heavy", "hash_policy": "none"}
    )(work)

    def submitter(index: int) -> None:
        rng = random.Random(index)
        serial = 0
        while True:
            marker = f"b{index}.{serial}"
            serial += 1
            try:
                token = (heavy if rng.random() < 0.3 else sticky)(marker, rng.randrange(8))
            except CoordinatorNotRunningError:
                with lock:
                    refused[0] += 1
                return
            if token.coordinator is not coordinator:  # stop() fell back to another one
                token.kill("foreign coordinator")
                foreign.set()
                return
            with lock:
                markers[id(token)] = marker
                ledger.track(token)
                if len(ledger.tokens) >= 2000:
                    enough.set()

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    assert enough.wait(WAIT)
    coordinator.stop(wait=wait, cancel_pending=cancel_pending, timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert not foreign.is_set(), "another coordinator was running: the test needs its own"
    assert refused[0] == 4, "a submitter kept getting tokens from a stopped coordinator"
    record_faults("stops during multi-thread bursts", 1)
    ledger.check()  # every token handed out before the stop is terminal, exactly once
    runs.wait_idle()
    states = {token.state for token in ledger.tokens}
    assert states <= {TokenState.COMPLETED, TokenState.KILLED}, states
    for token in ledger.tokens:
        count = runs.count(markers[id(token)])
        assert count <= 1
        if token.state is TokenState.COMPLETED:
            assert count == 1
        elif token.started_at is None:
            assert count == 0
    assert live_worker_threads(coordinator) == 0
    assert_quiescent(coordinator)


def test_call_racing_stop_still_ends_its_token(register_plugin: PluginRegistrar) -> None:
    """Deterministic version of the race above: a creation hook holds one call between the
    coordinator's running check and the token's registration while stop() runs to the end."""
    inside = threading.Event()
    go_on = threading.Event()

    class SlowCreation:
        @hookimpl
        def tokengate_token_created(self, token: TaskToken[Any]) -> None:
            if token.operation_type == "reliability.race.stop":
                inside.set()
                go_on.wait(WAIT)

    register_plugin(SlowCreation(), "reliability-slow-creation")

    @task_token_guard("reliability.race.stop")
    def racing() -> int:
        return 1

    coordinator = OperationsCoordinator(cores=2, workers_per_core=1).start()
    made: list[TaskToken[int]] = []
    caller = threading.Thread(target=lambda: made.append(racing()))
    caller.start()
    assert inside.wait(WAIT)
    coordinator.stop(timeout=WAIT)
    go_on.set()
    caller.join(WAIT)
    (token,) = made
    record_faults("calls racing stop()", 1)
    try:
        token.exception(2.0)
    except TimeoutError:
        pytest.fail(f"{token!r} never ended: it was routed after stop() finished")
    assert token.state is TokenState.KILLED


# ---------------------------------------------------------------------- failing plugins
PHASES = ("on_create", "route", "before_execute", "after_execute", "on_terminal")
FATAL_PHASES = frozenset({"on_create", "route", "before_execute"})


class PluginBoom(RuntimeError):
    """What the faulty plugin raises."""


class FaultyExtension(TokenExtension):
    """Raises in exactly one phase."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def _maybe_fail(self, phase: str, token: TaskToken[Any]) -> None:
        if phase == self.phase:
            raise PluginBoom(f"faulty plugin exploded in {phase} of {token.token_id}")

    def on_create(self, token: TaskToken[Any]) -> None:
        self._maybe_fail("on_create", token)

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        self._maybe_fail("route", token)
        return None

    def before_execute(self, token: TaskToken[Any]) -> object:
        self._maybe_fail("before_execute", token)
        return None

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        self._maybe_fail("after_execute", token)

    def on_terminal(self, token: TaskToken[Any]) -> None:
        self._maybe_fail("on_terminal", token)

    def __repr__(self) -> str:
        return f"<FaultyExtension {self.phase}>"


FAULTY_PREFIX = "reliability.faulty."


def faulty_phase(operation: str) -> str | None:
    """``reliability.faulty.<phase>[.anything]`` → phase."""
    if not operation.startswith(FAULTY_PREFIX):
        return None
    return operation[len(FAULTY_PREFIX) :].split(".")[0]


class FaultyPlugin:
    """Fails the hooks named by the operation: ``reliability.faulty.<phase>``.

    Its extension runs after the conductor's (``trylast``), so a lead is already counted
    into its domain when the faulty phase raises: the conductor must still release it.
    """

    @hookimpl(trylast=True)
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        phase = faulty_phase(operation.operation_type)
        return FaultyExtension(phase) if phase in PHASES else None

    @hookimpl
    def tokengate_token_created(self, token: TaskToken[Any]) -> None:
        if faulty_phase(token.operation_type) == "created":
            raise PluginBoom(f"created hook exploded for {token.token_id}")

    @hookimpl
    def tokengate_token_started(self, token: TaskToken[Any]) -> None:
        if faulty_phase(token.operation_type) == "started":
            raise PluginBoom(f"started hook exploded for {token.token_id}")

    @hookimpl
    def tokengate_token_finished(self, token: TaskToken[Any]) -> None:
        if faulty_phase(token.operation_type) == "finished":
            raise PluginBoom(f"finished hook exploded for {token.token_id}")

    @hookimpl(tryfirst=True)
    def tokengate_classify_weight(
        self, operation_type: str, func: Callable[..., Any], tags: object
    ) -> Weight | None:
        if faulty_phase(operation_type) == "classify":
            raise PluginBoom(f"classifier exploded for {operation_type}")
        return None

    @hookimpl(tryfirst=True)
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        phase = faulty_phase(operation.operation_type)
        if phase in {"choose", "badcore", "nocores"}:
            return FaultyPolicy(phase)
        return None


class FaultyPolicy(RoutingPolicy):
    """A routing policy that raises, picks a core that does not exist, or gives no cores."""

    chooses_cores = True

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def cores_for(self, weight: Weight, total_cores: int) -> Sequence[int]:
        if self.phase == "nocores":
            return ()
        return super().cores_for(weight, total_cores)

    def choose_core(self, token: TaskToken[Any], candidate: int, total_cores: int) -> int | None:
        if self.phase == "choose":
            raise PluginBoom(f"choose_core exploded for {token.token_id}")
        return total_cores + 7

    def __repr__(self) -> str:
        return f"<FaultyPolicy {self.phase}>"


#: phase → (the token fails?, the error type, a fragment of its message)
EXPECTED: dict[str, tuple[bool, type[Exception], str]] = {
    "on_create": (True, PluginError, "FaultyExtension on_create"),
    "route": (True, PluginError, "FaultyExtension route"),
    "before_execute": (True, PluginError, "faulty plugin exploded in before_execute"),
    "after_execute": (False, Exception, ""),
    "on_terminal": (False, Exception, ""),
    "created": (True, PluginError, "tokengate_token_created hook failed"),
    "started": (True, PluginError, "started hook exploded"),
    "finished": (False, Exception, ""),
    "classify": (True, PluginError, "classifier exploded"),
    "choose": (True, PluginError, "FaultyPolicy choose"),
    "badcore": (True, RoutingError, "to core 11"),
    "nocores": (True, PluginError, "gave cores ()"),
}


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_a_failing_plugin_fails_the_tokens_it_touched_never_the_coordinator(
    phase: str,
    coordinator: OperationsCoordinator,
    register_plugin: PluginRegistrar,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_plugin(FaultyPlugin(), f"reliability-faulty-{phase}")
    runs = RunCounter()
    ledger = TerminalLedger()

    def work(marker: str) -> str:
        runs.enter(marker)
        try:
            return marker
        finally:
            runs.leave()

    faulty = task_token_guard(f"{FAULTY_PREFIX}{phase}", tags={"sticky_anchor": "faulty"})(work)
    faulty_lead = task_token_guard(
        f"{FAULTY_PREFIX}{phase}.lead", tags={"external_calls": ["anything"]}
    )(work)
    bystander = task_token_guard("reliability.bystander", tags={"sticky_anchor": "faulty"})(work)

    with caplog.at_level(logging.ERROR):
        touched = [ledger.track(faulty(f"f{i}")) for i in range(20)]
        touched += [ledger.track(faulty_lead(f"L{i}")) for i in range(5)]
        others = [ledger.track(bystander(f"b{i}")) for i in range(20)]
        ledger.check()
    record_faults("plugin hooks that raise or misbehave", len(touched))

    fails, error_type, fragment = EXPECTED[phase]
    # A lead is routed by the conductor's extension, which answers first: a faulty route
    # phase or routing policy is never consulted for it.
    leads_untouched = phase in {"route", "choose", "badcore"}
    for token in touched:
        exc = token.exception(0)
        is_lead = token.operation_type.endswith(".lead")
        marker = str(token.get(0)) if token.state is TokenState.COMPLETED else ""
        if fails and not (is_lead and leads_untouched):
            assert token.state is TokenState.FAILED, f"{token!r} survived its plugin's failure"
            assert isinstance(exc, error_type), f"{token!r}: {exc!r}"
            assert fragment in str(exc), str(exc)
            if phase not in {"classify", "nocores"}:  # these fail the operation as a whole
                assert token.token_id in str(exc), str(exc)
        else:
            assert token.state is TokenState.COMPLETED, f"{token!r}: {exc!r}"
            assert runs.count(marker) == 1
        if not fails:
            assert any(token.token_id in r.getMessage() for r in caplog.records), (
                f"the failure of the {phase} hook for {token.token_id} was not logged"
            )
    if fails:
        ran = sum(n for m, n in runs.runs.items() if not m.startswith("b"))
        expected_runs = 5 if leads_untouched else 0
        assert ran == expected_runs, f"{ran} bodies ran although their plugin failed first"
    for token in others:
        assert token.state is TokenState.COMPLETED, f"a bystander failed: {token.exception(0)!r}"
    runs.wait_idle()
    assert_still_serving(coordinator)
    assert_quiescent(coordinator)  # conductor domains of failed leads closed too


def test_failing_registration_hooks_are_reported_not_fatal(
    coordinator: OperationsCoordinator, register_plugin: PluginRegistrar
) -> None:
    class BrokenRegistrations:
        @hookimpl
        def tokengate_register_tags(self, registry: object) -> None:
            raise PluginBoom("tag registration exploded")

        @hookimpl
        def tokengate_register_hash_policies(self, registry: object) -> None:
            raise PluginBoom("hash policy registration exploded")

        @hookimpl
        def tokengate_register_hash_handlers(self, registry: object) -> None:
            raise PluginBoom("handler registration exploded")

    from tokengate.core import plugin_manager

    register_plugin(BrokenRegistrations(), "reliability-broken-registrations")
    record_faults("registration hooks that raise", 3)
    errors = "\n".join(plugin_manager().load_errors)
    assert "tag registration exploded" in errors
    assert "hash policy registration exploded" in errors
    assert "reliability-broken-registrations" in errors

    @task_token_guard("reliability.after.broken.registrations", tags={"weight": "light"})
    def still_works(x: int) -> int:
        return x + 1

    assert still_works(1).get(WAIT) == 2
    assert_still_serving(coordinator)
