"""``tokengate demo``: cache storm (sticky routing), conductor (domains) and endurance.

Each demo returns a :class:`DemoResult` whose checks decide the exit status.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import random
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokengate.core import (
    DefaultRoutingPolicy,
    OperationsCoordinator,
    TaskToken,
    Weight,
    task_token_guard,
)

from . import _workload
from ._stats import percentile

__all__ = (
    "Check",
    "DemoResult",
    "run_cache_storm",
    "run_conductor",
    "run_endurance",
)

_perf = time.perf_counter


@dataclass(frozen=True, slots=True)
class Check:
    """One verification of a demo.

    Attributes:
        name: what is verified.
        ok: whether it held.
        detail: the evidence (counts, offending ids).
    """

    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class DemoResult:
    """What a demo verified and measured.

    Attributes:
        name: the demo.
        checks: its verifications; the demo passes when every one holds.
        figures: what it measured (JSON-ready).
        tables: tables to show: (title, columns, rows).
        notes: lines to show before the checks.
    """

    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, tuple[str, ...], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check held (and there was at least one)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a verification; returns ``ok``."""
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def as_dict(self) -> dict[str, Any]:
        """Checks and figures, JSON-ready."""
        return {
            "demo": self.name,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "figures": self.figures,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`as_dict` to ``path``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.as_dict(), indent=2))
        return target


def _wait_all(tokens: Sequence[TaskToken[Any]], timeout: float) -> list[TaskToken[Any]]:
    """Block until every token is terminal or ``timeout`` passes; return the unfinished ones."""
    deadline = time.monotonic() + timeout
    for token in tokens:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            token.exception(timeout=remaining)
        except TimeoutError:
            break
    return [t for t in tokens if not t.done()]


def _per_core(tokens: Sequence[TaskToken[Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for token in tokens:
        if token.core_id is not None:
            counts[token.core_id] = counts.get(token.core_id, 0) + 1
    return counts


def _spread_rows(cores: Sequence[int], columns: Sequence[dict[int, int]]) -> list[list[str]]:
    """One row per core: the core, then its count in each column."""
    return [[str(core), *(str(column.get(core, 0)) for column in columns)] for core in cores]


def _evenly(counts: dict[int, int], cores: Sequence[int]) -> bool:
    """Whether ``counts`` over ``cores`` differ by at most one (nothing outside ``cores``)."""
    if set(counts) - set(cores):
        return False
    values = [counts.get(core, 0) for core in cores]
    return max(values) - min(values) <= 1


# ====================================================================== cache storm
class StormState:
    """The shared state of one storm: the anchors' release event and what they saw.

    Every call of a key passes the same ``StormState``, so identical calls have identical
    fingerprints; the state is hashable by identity.
    """

    def __init__(self, hold_timeout: float) -> None:
        self.release = threading.Event()
        self.hold_timeout = hold_timeout
        self.held: dict[int, bool] = {}


def storm_value(key: int) -> int:
    """The value ``storm_fetch`` computes for ``key`` (so every result can be checked)."""
    return sum((key * 2654435761 + i) % 1_000_003 for i in range(200))


def storm_fetch_body(key: int, storm: StormState) -> int:
    """Compute the value of ``key``."""
    return storm_value(key)


def storm_anchor_body(key: int, storm: StormState) -> int:
    """Hold until the storm is over (keeping the key's pin), then compute like a fetch."""
    storm.held[key] = storm.release.wait(storm.hold_timeout)
    return storm_value(key)


storm_fetch = task_token_guard("storm_fetch", tags={"weight": "medium"})(storm_fetch_body)
#: Same sticky key as ``storm_fetch`` with the same arguments: its ``sticky_anchor`` is the
#: fetch operation's type, and the key is (anchor name, fingerprint of the arguments).
storm_anchor = task_token_guard(
    "storm_anchor", tags={"weight": "medium", "sticky_anchor": "storm_fetch"}
)(storm_anchor_body)


def run_cache_storm(
    *,
    keys: int = 8,
    burst: int = 50,
    distinct: int | None = None,
    cores: int = 4,
    hold_timeout: float = 60.0,
) -> DemoResult:
    """Pin ``keys`` keys with anchor tokens, fire bursts of identical and distinct calls from
    another thread while the anchors hold, and verify that no identical call left its
    anchor's core (zero misses) and that distinct keys spread over several cores.
    """
    if keys < 1 or burst < 0:
        raise ValueError("--keys must be >= 1 and --burst >= 0")
    distinct = keys * 8 if distinct is None else distinct
    result = DemoResult("cache-storm")
    storm = StormState(hold_timeout)
    coordinator = OperationsCoordinator(cores=cores)
    began = _perf()
    with coordinator:
        anchors = [storm_anchor(key, storm) for key in range(keys)]
        pins_after_anchors = dict(coordinator.sticky_snapshot())
        identical: list[TaskToken[int]] = []
        spread: list[TaskToken[int]] = []
        errors: list[BaseException] = []

        def fire() -> None:
            try:
                for round_ in range(burst):
                    for key in range(keys):
                        identical.append(storm_fetch(key, storm))
                    for n in range(
                        round_ * distinct // max(burst, 1), (round_ + 1) * distinct // max(burst, 1)
                    ):
                        spread.append(storm_fetch(1_000_000 + n, storm))
                if burst == 0:
                    spread.extend(storm_fetch(1_000_000 + n, storm) for n in range(distinct))
            except BaseException as exc:  # reported as a failed check
                errors.append(exc)

        injector = threading.Thread(target=fire, name="storm-injector")
        injector.start()
        injector.join(timeout=hold_timeout)
        pins_during = dict(coordinator.sticky_snapshot())
        anchors_pending = sum(1 for a in anchors if not a.done())
        storm.release.set()
        everything = [*anchors, *identical, *spread]
        unfinished = _wait_all(everything, hold_timeout)
        pins_after = dict(coordinator.sticky_snapshot())
    elapsed = _perf() - began

    anchor_core = {key: anchors[key].core_id for key in range(keys)}
    misses = [t for t in identical if t.core_id != anchor_core[t.args[0]]]
    wrong = [
        t
        for t in everything
        if t.done() and (t.exception(0) is not None or t.get(0) != storm_value(t.args[0]))
    ]
    spread_cores = sorted({t.core_id for t in spread if t.core_id is not None})
    anchor_cores = sorted({c for c in anchor_core.values() if c is not None})
    weight_cores = tuple(DefaultRoutingPolicy().cores_for(Weight.MEDIUM, cores))
    medium_cores = len(weight_cores)
    keys_per_core = _per_core(anchors)

    result.check(
        "the injector thread fired every call",
        not errors and not injector.is_alive(),
        f"{len(identical)} identical + {len(spread)} distinct calls"
        + (f"; error: {errors[0]!r}" if errors else ""),
    )
    result.check(
        "every anchor pinned its key before the storm",
        len(pins_after_anchors) >= keys,
        f"{len(pins_after_anchors)} pins for {keys} keys",
    )
    result.check(
        "the anchors still held their pins when the storm ended",
        anchors_pending == keys and len(pins_during) >= keys,
        f"{anchors_pending}/{keys} anchors in flight, {len(pins_during)} live pins",
    )
    result.check(
        "zero misses: every identical call landed on its anchor's core",
        not misses,
        f"{len(identical)} identical calls, {len(misses)} misses"
        + (f" (first: {misses[0].token_id} on core {misses[0].core_id})" if misses else ""),
    )
    if medium_cores >= 2 and distinct >= 2:
        result.check(
            "distinct keys were free to spread over several cores",
            len(spread_cores) >= 2,
            f"{distinct} distinct calls on cores {spread_cores}",
        )
    result.check(
        "keys spread evenly over the cores of their weight (at most one apart)",
        _evenly(keys_per_core, weight_cores),
        "keys per core: " + ", ".join(f"core {c}: {keys_per_core.get(c, 0)}" for c in weight_cores),
    )
    result.check(
        "every anchor held until released",
        all(storm.held.get(key, False) for key in storm.held) and len(storm.held) == keys,
        f"{sum(storm.held.values())}/{keys} anchors released by the event",
    )
    result.check(
        "every call completed with the right value",
        not unfinished and not wrong,
        f"{len(everything)} calls, {len(unfinished)} unfinished, {len(wrong)} wrong or failed",
    )
    result.check(
        "sticky registry empty once every call finished",
        not pins_after,
        f"{len(pins_after)} pins left" + (f": {sorted(pins_after)[:3]}" if pins_after else ""),
    )
    per_key = [
        [
            str(key),
            str(anchor_core[key]),
            str(sum(1 for t in identical if t.args[0] == key)),
            str(sum(1 for t in misses if t.args[0] == key)),
        ]
        for key in range(keys)
    ]
    result.tables.append(
        ("Keys and their anchors", ("key", "core", "identical calls", "misses"), per_key)
    )
    result.tables.append(
        (
            "Spread per core",
            ("core", "keys", "identical calls", "distinct calls"),
            _spread_rows(weight_cores, [keys_per_core, _per_core(identical), _per_core(spread)]),
        )
    )
    result.notes.append(
        f"{keys} anchors, {len(identical):,} identical and {len(spread):,} distinct calls on "
        f"{cores} cores in {elapsed:.2f} s"
    )
    result.figures.update(
        {
            "keys": keys,
            "burst": burst,
            "cores": cores,
            "anchors": keys,
            "identical_calls": len(identical),
            "distinct_calls": len(spread),
            "misses": len(misses),
            "anchor_cores": anchor_cores,
            "keys_per_core": {str(c): keys_per_core.get(c, 0) for c in weight_cores},
            "distinct_cores": spread_cores,
            "pins_during_storm": len(pins_during),
            "pins_after": len(pins_after),
            "unfinished": len(unfinished),
            "wrong": len(wrong),
            "elapsed_s": elapsed,
        }
    )
    return result


# ====================================================================== conductor
def conductor_available() -> bool:
    """Whether the conductor plugin (``tokengate-conductor``) is installed."""
    return importlib.util.find_spec("tokengate.conductor") is not None


@dataclass(frozen=True, slots=True)
class _ConductorOps:
    lead: Callable[..., TaskToken[Any]]
    child: Callable[..., TaskToken[Any]]
    grandchild: Callable[..., TaskToken[Any]]
    active_seed: Callable[[], str | None]
    snapshot: Callable[[OperationsCoordinator], Any]


def _grandchild_body(n: int) -> tuple[str | None, int]:
    from tokengate.conductor import get_active_seed

    return get_active_seed(), n * n


def _child_body(n: int, grandchildren: int) -> tuple[str | None, int, list[TaskToken[Any]]]:
    from tokengate.conductor import get_active_seed

    ops = conductor_operations()
    kids = [ops.grandchild(n * 10 + j) for j in range(grandchildren)]
    return get_active_seed(), n * n, kids


def _lead_body(
    lead: int, children: int, grandchildren: int
) -> tuple[str | None, list[TaskToken[Any]]]:
    from tokengate.conductor import get_active_seed

    ops = conductor_operations()
    kids = [ops.child(lead * 100 + i, grandchildren) for i in range(children)]
    return get_active_seed(), kids


@functools.cache
def conductor_operations() -> _ConductorOps:
    """The demo's lead, child and grandchild operations, decorated on first use (the
    ``external_calls`` tag exists only when the conductor plugin is installed)."""
    from tokengate.conductor import conductor_snapshot, get_active_seed

    lead = task_token_guard(
        "conductor_lead",
        tags={"weight": "medium", "external_calls": ["conductor_child", "conductor_grandchild"]},
    )(_lead_body)
    child = task_token_guard("conductor_child", tags={"weight": "medium"})(_child_body)
    grandchild = task_token_guard("conductor_grandchild", tags={"weight": "light"})(
        _grandchild_body
    )
    return _ConductorOps(lead, child, grandchild, get_active_seed, conductor_snapshot)


def run_conductor(
    *,
    leads: int = 8,
    children: int = 4,
    grandchildren: int = 1,
    cores: int = 4,
    timeout: float = 60.0,
) -> DemoResult:
    """Leads spawn children (which spawn grandchildren) while they run; verify unique seeds,
    every descendant on its lead's core with its lead's seed, and no live domain afterwards.
    """
    result = DemoResult("conductor")
    if not conductor_available():
        result.check(
            "the conductor plugin is installed",
            False,
            "install it: pip install tokengate-conductor",
        )
        return result
    ops = conductor_operations()
    began = _perf()
    coordinator = OperationsCoordinator(cores=cores)
    with coordinator:
        lead_tokens = [ops.lead(n, children, grandchildren) for n in range(leads)]
        live_at_start = len(ops.snapshot(coordinator))
        unfinished = _wait_all(lead_tokens, timeout)
        child_tokens: list[tuple[int, TaskToken[Any]]] = []
        for index, lead in enumerate(lead_tokens):
            if lead.done() and lead.exception(0) is None:
                child_tokens.extend((index, c) for c in lead.get(0)[1])
        unfinished += _wait_all([c for _, c in child_tokens], timeout)
        grand_tokens: list[tuple[int, TaskToken[Any]]] = []
        for index, child in child_tokens:
            if child.done() and child.exception(0) is None:
                grand_tokens.extend((index, g) for g in child.get(0)[2])
        unfinished += _wait_all([g for _, g in grand_tokens], timeout)
        live_after = dict(ops.snapshot(coordinator))
        pins_after = dict(coordinator.sticky_snapshot())
    elapsed = _perf() - began

    failed = [
        t
        for t in [*lead_tokens, *(c for _, c in child_tokens), *(g for _, g in grand_tokens)]
        if t.done() and t.exception(0) is not None
    ]
    seeds = [lead.conductor_seed for lead in lead_tokens]
    core_misses: list[str] = []
    seed_misses: list[str] = []
    body_misses: list[str] = []
    per_lead: list[list[str]] = []
    members_of: dict[int, list[TaskToken[Any]]] = {i: [] for i in range(leads)}
    for index, token in [*child_tokens, *grand_tokens]:
        members_of[index].append(token)
    for index, lead in enumerate(lead_tokens):
        lead_seed = lead.conductor_seed
        if lead.done() and lead.exception(0) is None and lead.get(0)[0] != lead_seed:
            body_misses.append(lead.token_id)
        bad_core = bad_seed = 0
        for member in members_of[index]:
            if member.core_id != lead.core_id:
                bad_core += 1
                core_misses.append(member.token_id)
            if member.conductor_seed != lead_seed:
                bad_seed += 1
                seed_misses.append(member.token_id)
            if member.done() and member.exception(0) is None and member.get(0)[0] != lead_seed:
                body_misses.append(member.token_id)
        per_lead.append(
            [
                lead.token_id,
                (lead_seed or "-")[:12],
                str(lead.core_id),
                str(len(members_of[index])),
                str(bad_core),
                str(bad_seed),
            ]
        )

    expected_members = leads * children * (1 + grandchildren)
    lead_range = tuple(DefaultRoutingPolicy().cores_for(Weight.MEDIUM, cores))
    leads_per_core = _per_core(lead_tokens)
    result.check(
        "every lead, child and grandchild completed",
        not unfinished and not failed and len(child_tokens) + len(grand_tokens) == expected_members,
        f"{leads} leads, {len(child_tokens)} children, {len(grand_tokens)} grandchildren; "
        f"{len(unfinished)} unfinished, {len(failed)} failed"
        + (f" (first: {failed[0].exception(0)!r})" if failed else ""),
    )
    result.check(
        "every lead opened a domain with a unique seed",
        all(seeds) and len(set(seeds)) == len(seeds),
        f"{len({s for s in seeds if s})} unique seeds for {leads} leads",
    )
    result.check(
        "every child and grandchild ran on its lead's core",
        not core_misses,
        f"{len(core_misses)} misses" + (f" (first: {core_misses[0]})" if core_misses else ""),
    )
    result.check(
        "every child and grandchild carries its lead's seed",
        not seed_misses,
        f"{len(seed_misses)} misses" + (f" (first: {seed_misses[0]})" if seed_misses else ""),
    )
    result.check(
        "get_active_seed() inside every body is its lead's seed",
        not body_misses,
        f"{len(body_misses)} misses" + (f" (first: {body_misses[0]})" if body_misses else ""),
    )
    result.check(
        "no live conductor domain afterwards",
        not live_after,
        f"{len(live_after)} domains left (had {live_at_start} right after submission)",
    )
    result.check("no sticky pin afterwards", not pins_after, f"{len(pins_after)} pins left")
    if leads >= 2 * len(lead_range) >= 4:
        # leads end at different times (with their members), so placement by tokens in flight
        # need not alternate exactly; it must not pile them up (the bug: 6 of 8 on one core)
        result.check(
            "leads spread over the cores of their weight (every one used, none with more "
            "than half)",
            set(leads_per_core) == set(lead_range) and max(leads_per_core.values()) * 2 <= leads,
            "leads per core: "
            + ", ".join(f"core {c}: {leads_per_core.get(c, 0)}" for c in lead_range),
        )
    result.tables.append(
        (
            "Leads and their domains",
            ("lead", "seed", "core", "members", "core misses", "seed misses"),
            per_lead,
        )
    )
    result.tables.append(
        (
            "Spread per core",
            ("core", "leads", "children", "grandchildren"),
            _spread_rows(
                lead_range,
                [
                    leads_per_core,
                    _per_core([c for _, c in child_tokens]),
                    _per_core([g for _, g in grand_tokens]),
                ],
            ),
        )
    )
    result.notes.append(
        f"{leads} leads, {len(child_tokens)} children, {len(grand_tokens)} grandchildren on "
        f"{cores} cores in {elapsed:.2f} s"
    )
    result.figures.update(
        {
            "leads": leads,
            "children": len(child_tokens),
            "grandchildren": len(grand_tokens),
            "cores": cores,
            "unique_seeds": len({s for s in seeds if s}),
            "lead_cores": sorted({t.core_id for t in lead_tokens if t.core_id is not None}),
            "leads_per_core": {str(c): leads_per_core.get(c, 0) for c in lead_range},
            "core_misses": len(core_misses),
            "seed_misses": len(seed_misses),
            "body_seed_misses": len(body_misses),
            "live_domains_at_start": live_at_start,
            "live_domains_after": len(live_after),
            "failed": len(failed),
            "unfinished": len(unfinished),
            "elapsed_s": elapsed,
        }
    )
    return result


# ====================================================================== endurance
@dataclass(frozen=True, slots=True)
class Phase:
    """A load phase: batches of ``batch`` calls every ``pause`` seconds (both random ranges)."""

    name: str
    batch: tuple[int, int]
    pause: tuple[float, float]


IDLE = Phase("IDLE", (1, 16), (0.05, 0.2))
NORMAL = Phase("NORMAL", (32, 160), (0.01, 0.05))
SURGE = Phase("SURGE", (400, 1500), (0.0, 0.01))
#: The schedule; each step lasts ``duration / len(SCHEDULE)``.
SCHEDULE = (IDLE, NORMAL, SURGE, NORMAL, IDLE, SURGE)


@dataclass(slots=True)
class _PhaseStats:
    submitted: int = 0
    resolved: int = 0
    failed: int = 0
    batches: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    first_error: str | None = None


async def _endurance_async(
    duration: float,
    seed: int,
    max_in_flight: int,
    drain_timeout: float,
    cores: int | None,
    batch_scale: float,
) -> tuple[dict[str, _PhaseStats], dict[str, Any]]:
    rng = random.Random(seed)
    ops = _workload.OPERATIONS
    stats = {phase.name: _PhaseStats() for phase in (IDLE, NORMAL, SURGE)}
    collectors: set[asyncio.Task[None]] = set()
    in_flight = 0
    lost = 0
    step = duration / len(SCHEDULE)

    async def collect(phase: str, tokens: list[TaskToken[Any]]) -> None:
        nonlocal in_flight
        results = await asyncio.gather(*tokens, return_exceptions=True)
        row = stats[phase]
        for token, value in zip(tokens, results, strict=True):
            if isinstance(value, BaseException):
                row.failed += 1
                if row.first_error is None:
                    row.first_error = repr(value)
            else:
                row.resolved += 1
            if token.finished_at is not None:
                row.latencies.append(token.finished_at - token.created_at)
        in_flight -= len(tokens)

    coordinator = OperationsCoordinator() if cores is None else OperationsCoordinator(cores=cores)
    load_s = drain_s = 0.0
    began = _perf()
    coordinator.start()
    try:
        for phase in SCHEDULE:
            phase_end = _perf() + step
            row = stats[phase.name]
            while _perf() < phase_end:
                size = max(1, round(rng.randint(*phase.batch) * batch_scale))
                while in_flight + size > max_in_flight and collectors:
                    await asyncio.wait(collectors, return_when=asyncio.FIRST_COMPLETED)
                tokens = []
                for _ in range(size):
                    i = rng.randrange(1_000_000)
                    op = ops[i % len(ops)]
                    tokens.append(op.submit(*op.arguments(i)))
                row.submitted += size
                row.batches += 1
                in_flight += size
                task = asyncio.ensure_future(collect(phase.name, tokens))
                collectors.add(task)
                task.add_done_callback(collectors.discard)
                await asyncio.sleep(rng.uniform(*phase.pause))
        load_s = _perf() - began
        drain_began = _perf()
        if collectors:
            await asyncio.wait(set(collectors), timeout=drain_timeout)
        lost = in_flight
        drain_s = _perf() - drain_began
    finally:
        for task in collectors:
            task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, coordinator.stop)
    extra = {
        "load_s": load_s,
        "drain_s": drain_s,
        "lost": lost,
        "in_flight_after_stop": coordinator.stats().in_flight,
        "pins_after": len(coordinator.sticky_snapshot()),
        "cores": coordinator.cores,
    }
    return stats, extra


def run_endurance(
    *,
    duration: float = 6.0,
    seed: int = 0,
    max_in_flight: int = 20_000,
    drain_timeout: float = 120.0,
    cores: int | None = None,
    batch_scale: float = 1.0,
) -> DemoResult:
    """Run random batches of the seed workload through IDLE / NORMAL / SURGE phases for
    ``duration`` seconds; report submitted, resolved, failed and p50/p95 latency per phase,
    and verify that no token was lost.

    ``batch_scale`` multiplies every batch size; ``max_in_flight`` bounds the tokens not yet
    gathered (a new batch waits for older ones beyond it).
    """
    if duration <= 0 or batch_scale <= 0:
        raise ValueError("--duration and --batch-scale must be > 0")
    result = DemoResult("endurance")
    stats, extra = asyncio.run(
        _endurance_async(duration, seed, max_in_flight, drain_timeout, cores, batch_scale)
    )
    rows = []
    per_phase: dict[str, Any] = {}
    for name, row in stats.items():
        ordered = sorted(row.latencies)
        p50 = percentile(ordered, 50) * 1000
        p95 = percentile(ordered, 95) * 1000
        per_phase[name] = {
            "batches": row.batches,
            "submitted": row.submitted,
            "resolved": row.resolved,
            "failed": row.failed,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "first_error": row.first_error,
        }
        rows.append(
            [
                name,
                f"{row.batches:,}",
                f"{row.submitted:,}",
                f"{row.resolved:,}",
                f"{row.failed:,}",
                f"{p50:.2f}",
                f"{p95:.2f}",
            ]
        )
    submitted = sum(r.submitted for r in stats.values())
    resolved = sum(r.resolved for r in stats.values())
    failed = sum(r.failed for r in stats.values())
    lost = int(extra["lost"])
    result.tables.append(
        (
            "Endurance per phase",
            ("phase", "batches", "submitted", "resolved", "failed", "p50 ms", "p95 ms"),
            rows,
        )
    )
    result.check(
        "every phase ran",
        all(r.batches for r in stats.values()),
        ", ".join(f"{n}: {r.batches} batches" for n, r in stats.items()),
    )
    result.check(
        "zero lost tokens: submitted == resolved + failed",
        lost == 0 and submitted == resolved + failed,
        f"{submitted:,} submitted, {resolved:,} resolved, {failed:,} failed, {lost:,} lost",
    )
    first_error = next((r.first_error for r in stats.values() if r.first_error), None)
    result.check(
        "zero failed tokens",
        failed == 0,
        f"{failed:,} failed" + (f" (first: {first_error})" if first_error else ""),
    )
    result.check(
        "nothing in flight and no sticky pin after stop",
        extra["in_flight_after_stop"] == 0 and extra["pins_after"] == 0,
        f"{extra['in_flight_after_stop']} in flight, {extra['pins_after']} pins",
    )
    total_s = extra["load_s"] + extra["drain_s"]
    result.notes.append(
        f"{submitted:,} tokens in {extra['load_s']:.1f} s of load + {extra['drain_s']:.2f} s "
        f"of drain ({submitted / total_s if total_s else 0:,.0f} tokens/s) on "
        f"{extra['cores']} cores"
    )
    result.figures.update(
        {
            "duration_s": duration,
            "seed": seed,
            "submitted": submitted,
            "resolved": resolved,
            "failed": failed,
            "lost": lost,
            "phases": per_phase,
            **extra,
        }
    )
    return result
