"""The process pool engine under the process executor, with real worker processes.

Batches, functions by reference and by value, out-of-band buffers, crashes mid-batch with
no body run twice, hard kills of running bodies, recycling by calls and by memory, child
calls inside a worker, remote scopes, and errors for what cannot be pickled.

Bodies live in ``tests/support/core_process_funcs.py`` (importable in the worker processes).
Starting a process costs a fraction of a second, so the tests that do not kill or recycle
share one pool.
"""

from __future__ import annotations

import pickle
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import core_process_funcs as funcs
import numpy as np
import pytest

from tokengate.core import ProcessDomainError
from tokengate.core._process_worker import ERR, OK, SKIPPED, InlineToken
from tokengate.core._procpool import Call, FunctionRef, Outcome, ProcPool, function_ref
from tokengate.core._procpool_wire import Outbox

WAIT = 60.0
"""Upper bound of every wait here (a loaded machine may take seconds to start a process)."""


class Collector:
    """Receives a pool's outcomes; ``wait`` blocks until given calls have theirs."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.outcomes: dict[int, tuple[int, Any]] = {}
        self.calls: list[Call] = []  # kept alive, so no id() is reused
        self.deliveries = 0

    def __call__(self, outcomes: list[Outcome]) -> None:
        with self.cond:
            self.deliveries += 1
            for call, kind, value in outcomes:
                assert id(call) not in self.outcomes, "a call got two outcomes"
                self.outcomes[id(call)] = (kind, value)
                self.calls.append(call)
            self.cond.notify_all()

    def wait(self, calls: list[Call], timeout: float = WAIT) -> list[tuple[int, Any]]:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: all(id(c) in self.outcomes for c in calls), timeout=timeout
            )
            assert ok, f"{sum(id(c) not in self.outcomes for c in calls)} calls got no outcome"
            return [self.outcomes[id(c)] for c in calls]


def make_pool(collector: Collector, **options: Any) -> ProcPool:
    return ProcPool("test-pool", collector, **options)


def ref(func: Callable[..., Any]) -> FunctionRef:
    return function_ref(func, getattr(func, "__qualname__", "fn"))


def run(pool: ProcPool, collector: Collector, fn: FunctionRef, *args: Any) -> tuple[int, Any]:
    call = Call(fn, args, {})
    pool.submit([call])
    return collector.wait([call])[0]


def lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tag, pid = line.split()
        out.append((tag, int(pid)))
    return out


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[ProcPool, Collector]]:
    collector = Collector()
    pool = make_pool(collector)
    try:
        yield pool, collector
    finally:
        assert pool.shutdown(10) == []


def test_importable_functions_go_by_reference_and_others_by_value() -> None:
    assert ref(funcs.add).how == "ref"
    factor = 3
    assert ref(lambda x: x * factor).how == "value"

    def closure(x: int) -> int:
        return x + factor

    assert ref(closure).how == "value"


def test_a_function_that_cannot_be_sent_is_refused_clearly() -> None:
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    with pytest.raises(ProcessDomainError, match=r"holds_a_lock.*cloudpickle"):
        function_ref(holds_a_lock, "holds_a_lock")


def test_a_burst_arrives_in_batches_with_every_result(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    fn = ref(funcs.add)
    calls = [Call(fn, (i, 1), {}) for i in range(3000)]
    before = collector.deliveries
    pool.submit(calls)
    results = collector.wait(calls)
    assert results == [(OK, i + 1) for i in range(3000)]
    deliveries = collector.deliveries - before
    assert deliveries < len(calls) / 4, f"{deliveries} deliveries for {len(calls)} calls"
    stats = pool.stats()
    assert stats.alive
    assert stats.in_flight == 0
    assert stats.queued == 0
    assert stats.restarts == 0


def test_closures_and_lambdas_run_by_value(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    offset = 40

    def closure(x: int) -> int:
        return x + offset

    assert run(pool, collector, ref(closure), 2) == (OK, 42)
    assert run(pool, collector, ref(lambda x: x * offset), 2) == (OK, 80)
    # arguments are data: a lambda as an argument does not cross (plain pickle only)
    kind, error = run(pool, collector, ref(funcs.echo), lambda: 7)
    assert kind == ERR
    assert "argument 'value' (function)" in str(error)


def test_arrays_and_bytes_cross_out_of_band(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    array = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    kind, value = run(pool, collector, ref(funcs.array_info), array)
    assert kind == OK, value
    writable, nbytes, total = value
    assert writable, "the worker's array must be writable (received into its own buffer)"
    assert nbytes == array.nbytes
    assert total == float(array.sum())
    kind, back = run(pool, collector, ref(funcs.echo), array)
    assert kind == OK
    assert isinstance(back, np.ndarray)
    assert back.flags.writeable
    assert np.array_equal(back, array)
    blob = bytes(range(256)) * 4096  # 1 MiB
    assert run(pool, collector, ref(funcs.echo), blob) == (OK, blob)


def test_an_unpicklable_argument_fails_only_its_call(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    fn = ref(funcs.echo)
    calls = [Call(fn, (1,), {}), Call(fn, (threading.Lock(),), {}), Call(fn, (3,), {})]
    pool.submit(calls)
    first, bad, third = collector.wait(calls)
    assert first == (OK, 1)
    assert third == (OK, 3)
    assert bad[0] == ERR
    assert isinstance(bad[1], ProcessDomainError)
    assert "argument 'value' (lock)" in str(bad[1])
    assert "pickle" in str(bad[1])


def test_an_unpicklable_result_fails_only_its_call(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    calls = [
        Call(ref(funcs.add), (1, 1), {}),
        Call(ref(lambda: threading.Lock()), (), {}),
        Call(ref(funcs.add), (2, 2), {}),
    ]
    pool.submit(calls)
    first, bad, third = collector.wait(calls)
    assert first == (OK, 2)
    assert third == (OK, 4)
    assert bad[0] == ERR
    assert "result (lock) cannot be pickled" in str(bad[1])


def test_an_exception_keeps_its_type_and_remote_traceback(
    shared: tuple[ProcPool, Collector],
) -> None:
    pool, collector = shared
    kind, exc = run(pool, collector, ref(funcs.add), 1, "x")
    assert kind == ERR
    assert isinstance(exc, TypeError)
    assert any("Remote traceback" in note for note in getattr(exc, "__notes__", []))


def test_remote_scopes_wrap_the_body(shared: tuple[ProcPool, Collector]) -> None:
    pool, collector = shared
    call = Call(ref(funcs.scope_value), (), {}, scopes=[(funcs.Scoped.remote_scope, "trace-1")])
    pool.submit([call])
    assert collector.wait([call]) == [(OK, "trace-1")]
    assert run(pool, collector, ref(funcs.scope_value)) == (OK, None)


def test_child_calls_of_a_body_run_inline_in_the_same_process(
    shared: tuple[ProcPool, Collector],
) -> None:
    pool, collector = shared
    kind, value = run(pool, collector, ref(funcs.lead), 4)
    assert kind == OK, value
    results, message = value
    assert results == [0, 1, 4, 9]
    assert message == f"child 4 failed in {pool.pid}"
    token = InlineToken("op", 5, None)
    assert token.done()
    assert token.result() == 5
    assert token.exception() is None


def test_cancel_before_start_skips_the_call(tmp_path: Path) -> None:
    collector = Collector()
    pool = make_pool(collector)
    try:
        log = tmp_path / "runs.txt"
        slow = Call(ref(funcs.sleep_then), (0.5, "slow"), {})
        pool.submit([slow])
        queued = [Call(ref(funcs.record), (str(log), f"q{i}"), {}) for i in range(4)]
        pool.submit(queued)
        pool.cancel(queued[1])
        pool.cancel(queued[2])
        outcomes = collector.wait([slow, queued[0], queued[3]])
        assert outcomes[0] == (OK, "slow")
        assert [tag for tag, _ in lines(log)] == ["q0", "q3"]
        with collector.cond:  # cancelled in the parent's queue (no outcome) or skipped
            for call in queued[1:3]:
                assert collector.outcomes.get(id(call), (SKIPPED, None)) == (SKIPPED, None)
    finally:
        pool.shutdown(10)


def test_a_crash_mid_batch_fails_only_the_running_call_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    collector = Collector()
    pool = make_pool(collector, batch_size=16)
    try:
        log = tmp_path / "runs.txt"
        fn = ref(funcs.record)
        warm = Call(fn, (str(log), "warm"), {})
        pool.submit([warm])
        collector.wait([warm])
        calls = [Call(fn, (str(log), f"c{i}", "c5"), {}) for i in range(12)]
        pool.submit(calls)
        outcomes = collector.wait(calls)
        runs = lines(log)
        counts = Counter(tag for tag, _ in runs)
        assert all(n == 1 for n in counts.values()), f"a body ran twice: {counts}"
        assert set(counts) == {"warm"} | {f"c{i}" for i in range(12)}
        kind, error = outcomes[5]
        assert kind == ERR
        assert "died (exit code 3) while running this call" in str(error)
        for i, (kind, value) in enumerate(outcomes):
            if i != 5:
                assert kind == OK, (i, value)
        first_pid = dict(runs)["warm"]
        assert all(outcomes[i][1] == first_pid for i in range(5))
        assert all(outcomes[i][1] != first_pid for i in range(6, 12))
        assert pool.stats().restarts == 1
    finally:
        pool.shutdown(10)


def test_cancel_of_a_running_body_kills_the_process_and_loses_nothing_else(
    tmp_path: Path,
) -> None:
    collector = Collector()
    pool = make_pool(collector)
    try:
        log = tmp_path / "runs.txt"
        before = [Call(ref(funcs.record), (str(log), f"b{i}"), {}) for i in range(3)]
        hung = Call(ref(funcs.record_then_sleep), (str(log), "hung", 120.0), {})
        after = [Call(ref(funcs.record), (str(log), f"a{i}"), {}) for i in range(3)]
        pool.submit([*before, hung, *after])
        old_pid = collector.wait(before)[0][1]
        pause = threading.Event()
        for _ in range(1200):  # until the hung body has started
            if "hung" in {tag for tag, _ in lines(log)}:
                break
            pause.wait(0.05)
        pool.cancel(hung)
        kind, error = collector.wait([hung])[0]
        assert kind == ERR
        assert "killed to stop this body" in str(error)
        done = collector.wait(after)
        assert all(kind == OK and pid != old_pid for kind, pid in done)
        counts = Counter(tag for tag, _ in lines(log))
        assert counts == Counter(
            {f"b{i}": 1 for i in range(3)} | {f"a{i}": 1 for i in range(3)} | {"hung": 1}
        )
    finally:
        pool.shutdown(10)


def test_recycling_by_calls_strands_nothing(tmp_path: Path) -> None:
    collector = Collector()
    pool = make_pool(collector, max_calls=4)
    try:
        log = tmp_path / "runs.txt"
        calls = [Call(ref(funcs.record), (str(log), f"c{i}"), {}) for i in range(10)]
        pool.submit(calls)
        outcomes = collector.wait(calls)
        assert all(kind == OK for kind, _ in outcomes)
        pids = [pid for _, pid in outcomes]
        assert len(set(pids[0:4])) == 1
        assert len(set(pids[4:8])) == 1
        assert len({pids[0], pids[4], pids[8]}) == 3
        assert Counter(tag for tag, _ in lines(log)) == Counter({f"c{i}": 1 for i in range(10)})
        assert pool.stats().recycled >= 2
    finally:
        pool.shutdown(10)


def test_recycling_by_memory_between_calls() -> None:
    collector = Collector()
    pool = make_pool(collector, max_memory=200 * 2**20)
    try:
        first = run(pool, collector, ref(funcs.pid))
        assert first[0] == OK
        grown = run(pool, collector, ref(funcs.grow), 256)
        assert grown == (OK, first[1]), "the growing call itself runs to its end"
        after = run(pool, collector, ref(funcs.pid))
        assert after[0] == OK
        assert after[1] != first[1]
        assert pool.stats().recycled == 1
    finally:
        pool.shutdown(10)


def test_shutdown_returns_calls_that_never_ran() -> None:
    collector = Collector()
    pool = make_pool(collector)
    busy = Call(ref(funcs.sleep_then), (0.3, "done"), {})
    pool.submit([busy])
    queued = [Call(ref(funcs.add), (i, i), {}) for i in range(5)]
    pool.submit(queued)
    for _ in range(600):
        if pool.stats().busy:
            break
        threading.Event().wait(0.05)
    leftovers = pool.shutdown(10)
    ended = set(map(id, leftovers))
    with collector.cond:
        answered = set(collector.outcomes)
    for call in [busy, *queued]:
        assert (id(call) in ended) != (id(call) in answered), "exactly one of the two"
    late = Call(ref(funcs.add), (1, 1), {})
    pool.submit([late])
    kind, error = collector.wait([late])[0]
    assert kind == ERR
    assert "shut down" in str(error)


def test_the_outbox_wraps_around_and_refuses_what_does_not_fit() -> None:
    counters = [0, 0]
    box = Outbox(bytearray(64), counters, 0, 1)
    sent: list[object] = []
    received: list[object] = []
    refused = 0
    for i in range(40):  # ~1.5 KiB through a 64-byte ring: it wraps many times
        value = ("outcome", i, "x" * (i % 7))
        payload = pickle.dumps(value, 5)
        if not box.write(payload):  # full: the reader catches up, then it fits
            refused += 1
            values, problems = box.read_all()
            assert problems == []
            received += values
            assert box.write(payload), f"entry {i} did not fit in an empty ring"
        sent.append(value)
    values, problems = box.read_all()
    received += values
    assert received == sent
    assert refused > 10
    assert counters[0] > 64 * 10
    assert not box.pending()
    assert not box.write(b"y" * 61), "an entry larger than the ring was accepted"
    assert box.write(b"garbage that is not a pickle")
    values, problems = box.read_all()
    assert values == []
    assert len(problems) == 1
