"""Invariant checks shared by the reliability suite (SPEC §4, I1-I5).

Everything here observes a live coordinator from the outside (public API, plus the token
attributes the core documents: ``sticky_key``, ``core_id``, ``conductor_seed``,
``started_at``) and returns or raises plain assertion failures naming what broke.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from tokengate.conductor import conductor_snapshot
from tokengate.core import OperationsCoordinator, TaskToken, TokenState

__all__ = (
    "FAULTS",
    "SOAK_FIGURES",
    "VOLUME",
    "WAIT",
    "RunCounter",
    "TerminalLedger",
    "assert_quiescent",
    "conductor_violations",
    "live_worker_threads",
    "record_faults",
    "record_volume",
    "sticky_violations",
    "wait_all",
)

#: Upper bound of every wait in the suite: a token not done by then counts as lost.
WAIT = 30.0

#: Faults injected by the tests of this session, by kind (printed in pytest's summary).
FAULTS: Counter[str] = Counter()
_FAULTS_LOCK = threading.Lock()

#: Work done by the tests of this session that is not a fault (programs, tokens), by kind.
VOLUME: Counter[str] = Counter()


def record_volume(kind: str, count: int = 1) -> None:
    """Count ``count`` units of ``kind`` (tokens, programs) for the session summary."""
    with _FAULTS_LOCK:
        VOLUME[kind] += count


#: Figures measured by the soak runs, by name, in the order they were recorded.
SOAK_FIGURES: dict[str, int | float] = {}


def record_faults(kind: str, count: int = 1) -> None:
    """Count ``count`` injected faults of ``kind`` for the session summary."""
    with _FAULTS_LOCK:
        FAULTS[kind] += count


def wait_all(tokens: Iterable[TaskToken[Any]], timeout: float = WAIT) -> None:
    """Wait until every token is terminal; a token still pending after ``timeout`` is lost.

    Raises:
        AssertionError: naming the first lost token and its state.
    """
    for token in tokens:
        try:
            token.exception(timeout)
        except TimeoutError:
            raise AssertionError(
                f"token {token.token_id} is lost: still {token.state.value} after {timeout} s"
            ) from None


def assert_quiescent(coordinator: OperationsCoordinator) -> None:
    """I3: with every token terminal, the token table, the sticky registry and the
    conductor domains are empty."""
    left = coordinator.in_flight()
    assert left == [], f"tokens still in flight: {left[:10]}"
    assert coordinator.stats().in_flight == 0, "the token table is not empty"
    assert dict(coordinator.sticky_snapshot()) == {}, "sticky pins outlived their tokens"
    domains = dict(conductor_snapshot(coordinator))
    assert domains == {}, f"conductor domains outlived their members: {domains}"


def sticky_violations(coordinator: OperationsCoordinator) -> list[str]:
    """I1 sampled now: in-flight tokens sharing a sticky key on more than one core.

    A pair counts only if both tokens are still not terminal after their cores were read:
    states only move forward, so both held the key the whole time.
    """
    seen = [(t, t.sticky_key, t.core_id) for t in coordinator.in_flight()]
    by_key: dict[Hashable, set[int]] = defaultdict(set)
    for token, key, core in seen:
        if key is not None and core is not None and not token.state.is_terminal:
            by_key[key].add(core)
    return [
        f"key {key!r} in flight on cores {sorted(c)}" for key, c in by_key.items() if len(c) > 1
    ]


def conductor_violations(
    leads: Sequence[tuple[TaskToken[Any], Sequence[TaskToken[Any]]]],
) -> list[str]:
    """I2: every routed member of a lead's domain is on the lead's core, with its seed."""
    problems: list[str] = []
    for lead, children in leads:
        if lead.core_id is None:
            continue
        for child in children:
            if child.conductor_seed != lead.conductor_seed:
                problems.append(
                    f"{child.token_id} has seed {child.conductor_seed!r}, its lead "
                    f"{lead.token_id} {lead.conductor_seed!r}"
                )
            if child.core_id is not None and child.core_id != lead.core_id:
                problems.append(
                    f"{child.token_id} ran on core {child.core_id}, its lead {lead.token_id} "
                    f"on core {lead.core_id}"
                )
    return problems


def live_worker_threads(coordinator: OperationsCoordinator) -> int:
    """How many worker threads of ``coordinator`` are alive now (the thread executor names
    them ``<coordinator>-core<N>-t<i>``)."""
    worker = re.compile(rf"{re.escape(coordinator.name)}-core\d+-t\d+")
    return sum(1 for t in threading.enumerate() if worker.fullmatch(t.name))


class TerminalLedger:
    """I4 witness: counts the done-callbacks of each token and the state each one saw.

    ``track`` registers a callback on a token; ``check`` asserts that every tracked token is
    done, was reported exactly once, and still has the state its callback saw.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, list[TokenState]] = defaultdict(list)
        self.tokens: list[TaskToken[Any]] = []

    def track(self, token: TaskToken[Any]) -> TaskToken[Any]:
        """Watch ``token``; returns it."""
        with self._lock:
            self.tokens.append(token)
        token.add_done_callback(self._done)
        return token

    def _done(self, token: TaskToken[Any]) -> None:
        with self._lock:
            self._seen[id(token)].append(token.state)

    def check(self, timeout: float = 10.0) -> None:
        """Every tracked token ended exactly once, in the state it still has.

        A token is done once it settles; its done-callbacks run right after, in the thread
        that ended it, so the check gives them ``timeout`` seconds to be reported.
        """
        wait_all(self.tokens)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self._seen.get(id(token)) for token in self.tokens):
                    break
            time.sleep(0.001)
        with self._lock:
            for token in self.tokens:
                seen = self._seen.get(id(token), [])
                assert len(seen) == 1, f"{token.token_id} was reported done {len(seen)} times"
                assert seen[0] is token.state, (
                    f"{token.token_id} ended {seen[0].value} but now reads {token.state.value}"
                )
                assert token.state.is_terminal


class RunCounter:
    """I5 witness for thread bodies: a body calls ``ran(marker)`` once per run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, int] = defaultdict(int)
        self.active = 0
        self._idle = threading.Condition(self._lock)

    def enter(self, marker: str) -> None:
        """A body with ``marker`` starts."""
        with self._lock:
            self.runs[marker] += 1
            self.active += 1

    def leave(self) -> None:
        """A body ends (returned or raised)."""
        with self._lock:
            self.active -= 1
            if not self.active:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = WAIT) -> None:
        """Block until no body is running (killed tokens' bodies still finish on their own)."""
        with self._lock:
            if not self._idle.wait_for(lambda: self.active == 0, timeout):
                raise AssertionError(f"{self.active} bodies still running after {timeout} s")

    def count(self, marker: str) -> int:
        """Runs of the body with ``marker`` so far."""
        with self._lock:
            return self.runs.get(marker, 0)
