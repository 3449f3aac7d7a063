"""Hostile input: fuzzed tags, fuzzed and hostile fingerprint inputs, and arguments that break
pickling on process tokens.

* Tags: whatever keys and values a caller passes, decoration either succeeds or raises
  ``TagValidationError`` with a message naming the function — never another exception.
* ``make_hashable`` (and ``fast_make_hashable``, ``safe_args_key``): never raises and always
  returns something hashable, for values of many types drawn with
  ``hypothesis.strategies.from_type``, containers mixing them, cycles, very deep nesting and
  objects whose every dunder raises.
* Process tokens: an argument that cannot cross to the worker process fails the token with a
  ``ProcessDomainError`` that says why and what to do; the body never runs twice (and never
  runs at all when the call could not cross).
"""

from __future__ import annotations

import array
import collections
import datetime
import decimal
import enum
import fractions
import ipaddress
import os
import pathlib
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import reliability_targets as targets
from tests.support.reliability_checks import WAIT, assert_quiescent, record_faults
from tokengate.core import (
    DigestPolicy,
    HashPolicy,
    OperationsCoordinator,
    ProcessDomainError,
    StorageSpeed,
    TagValidationError,
    TaskToken,
    TokenState,
    Weight,
    task_token_guard,
)
from tokengate.core._process import ProcessExecutor
from tokengate.hashing import fast_make_hashable, make_hashable, safe_args_key

# from_type(object) may resolve to types whose strategies hypothesis finds too small; that
# is a note about the generator, not about the code under test.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.SmallSearchSpaceWarning")

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------- hostile objects
class Boom(RuntimeError):
    """Raised by hostile objects."""


class EvilEverything:
    """Every dunder the fingerprint pipeline or a validator might touch raises."""

    def __hash__(self) -> int:
        raise Boom("__hash__")

    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    def __repr__(self) -> str:
        raise Boom("__repr__")

    def __str__(self) -> str:
        raise Boom("__str__")

    def __len__(self) -> int:
        raise Boom("__len__")

    def __iter__(self) -> Iterator[object]:
        raise Boom("__iter__")

    def __bool__(self) -> bool:
        raise Boom("__bool__")

    def __getattr__(self, name: str) -> object:
        raise Boom(f"__getattr__({name})")


class HashRaisesValueError:
    """``hash()`` raises something other than TypeError or RuntimeError."""

    def __hash__(self) -> int:
        raise ValueError("no hash for you")


class Unhashable:
    """``__hash__ = None`` and a ``__repr__`` that raises."""

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        raise Boom("__repr__")


class EqualsEverything:
    """``__eq__`` without ``__hash__`` (so unhashable), equal to anything."""

    def __eq__(self, other: object) -> bool:
        return True


class EndlessButSized:
    """Claims three items, iterates forever."""

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Iterator[int]:
        while True:
            yield 1


class LyingArray:
    """Looks array-like; its ``shape`` raises and its ``dtype`` is hostile."""

    __hash__ = None  # type: ignore[assignment]
    dtype = EvilEverything()

    @property
    def shape(self) -> tuple[int, ...]:
        raise Boom("shape")


class ClassRaises:
    """Even ``__class__`` raises."""

    __hash__ = None  # type: ignore[assignment]

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise Boom("__class__")


class EvilDict(dict[str, int]):
    """A dict whose views and iteration raise."""

    def items(self) -> Any:
        raise Boom("items")

    def keys(self) -> Any:
        raise Boom("keys")

    def __iter__(self) -> Iterator[str]:
        raise Boom("__iter__")


class EvilList(list[int]):
    """A list whose iteration raises."""

    def __iter__(self) -> Iterator[int]:
        raise Boom("__iter__")


class HashMeta(type):
    """A metaclass that makes its classes unhashable."""

    def __hash__(cls) -> int:
        raise Boom("metaclass __hash__")


class UnhashableClass(metaclass=HashMeta):
    """A class (not an instance) whose hash raises."""


class HugeRepr:
    """Unhashable, with a 20 MB repr."""

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "x" * 20_000_000


def cycles() -> list[object]:
    """Self-containing lists, dicts, deques and mixtures."""
    lst: list[object] = []
    lst.append(lst)
    dct: dict[str, object] = {}
    dct["self"] = dct
    mutual_a: list[object] = []
    mutual_b: dict[str, object] = {"a": mutual_a}
    mutual_a.append(mutual_b)
    dq: collections.deque[object] = collections.deque()
    dq.append(dq)
    return [lst, dct, mutual_a, dq, collections.ChainMap[str, object](dct, {"x": lst})]


def deep_list(levels: int) -> list[object]:
    root: list[object] = []
    current = root
    for _ in range(levels):
        nxt: list[object] = []
        current.append(nxt)
        current = nxt
    return root


def deep_dict(levels: int) -> dict[str, object]:
    root: dict[str, object] = {}
    current = root
    for _ in range(levels):
        nxt: dict[str, object] = {}
        current["k"] = nxt
        current = nxt
    return root


HOSTILE: dict[str, Callable[[], object]] = {
    "evil everything": EvilEverything,
    "hash raises ValueError": HashRaisesValueError,
    "unhashable with raising repr": Unhashable,
    "eq without hash": EqualsEverything,
    "endless iterator with a length": EndlessButSized,
    "lying array-like": LyingArray,
    "__class__ raises": ClassRaises,
    "dict subclass whose views raise": lambda: EvilDict(a=1),
    "list subclass whose iteration raises": lambda: EvilList([1, 2]),
    "class with an unhashable metaclass": lambda: UnhashableClass,
    "huge repr": HugeRepr,
    "cycles": cycles,
    "list nested 100,000 deep": lambda: deep_list(100_000),
    "dict nested 50,000 deep": lambda: deep_dict(50_000),
    "dict with keys of mixed types": lambda: {1: "a", "b": 2, (1, 2): 3, None: 4, 2.5: 5},
    "set of unorderable members": lambda: {1j, 2j, "x", None, (1, "a")},
    "hostile objects in containers": lambda: [
        EvilEverything(),
        {"k": Unhashable(), "l": [EvilList([1]), cycles()]},
        (EqualsEverything(), [LyingArray()]),
        collections.deque([EndlessButSized()]),
        collections.OrderedDict(a=ClassRaises()),
    ],
    "array with nan": lambda: array.array("d", [1.0, float("nan")]),
    "memoryview": lambda: memoryview(b"abc"),
    "bytearray": lambda: bytearray(b"abc"),
    "slice of unhashables": lambda: slice([1], {2: 3}, None),
}


def assert_fingerprintable(value: object) -> None:
    """The fingerprint functions never raise and always return something hashable."""
    for fingerprint in (make_hashable, fast_make_hashable):
        key = fingerprint(value)
        hash(key)
    hash(safe_args_key((value, value), {"kw": value}))


@pytest.mark.parametrize("make", list(HOSTILE.values()), ids=list(HOSTILE))
def test_make_hashable_survives_hostile_objects(make: Callable[[], object]) -> None:
    assert_fingerprintable(make())
    record_faults("hostile objects fingerprinted", 1)


FROM_TYPE_TYPES: tuple[Any, ...] = (
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    bool,
    type(None),
    decimal.Decimal,
    fractions.Fraction,
    datetime.datetime,
    datetime.date,
    datetime.timedelta,
    datetime.timezone,
    uuid.UUID,
    ipaddress.IPv4Address,
    ipaddress.IPv6Network,
    range,
    slice,
    Weight,
    HashPolicy,
    list[int],
    list[list[str]],
    list[dict[str, float]],
    dict[str, list[float]],
    dict[int, set[bytes]],
    dict[tuple[int, str], list[bytearray]],
    set[int],
    frozenset[str],
    tuple[int, str, list[float]],
    tuple[float, ...],
    collections.deque[int],
    collections.OrderedDict[str, list[int]],
    collections.Counter[str],
    collections.ChainMap[str, int],
    type,
    object,
)

from_type_values = st.sampled_from(FROM_TYPE_TYPES).flatmap(st.from_type) | st.builds(
    pathlib.PurePosixPath, st.text(max_size=8)
)
hostile_leaves = st.sampled_from(
    [EvilEverything, HashRaisesValueError, Unhashable, EqualsEverything, EndlessButSized]
).map(lambda make: make())
mixed_values = st.recursive(
    from_type_values | hostile_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
        | st.lists(children, max_size=4).map(collections.deque)
    ),
    max_leaves=12,
)


@FUZZ
@given(from_type_values)
def test_make_hashable_never_raises_on_from_type_values(value: object) -> None:
    assert_fingerprintable(value)


@FUZZ
@given(mixed_values, st.booleans())
def test_make_hashable_never_raises_on_hostile_containers(value: object, cyclic: bool) -> None:
    if cyclic and isinstance(value, list):
        value.append(value)
    elif cyclic and isinstance(value, dict):
        value["self"] = value
    assert_fingerprintable(value)


# ---------------------------------------------------------------------- tag fuzzing
def tagged_target() -> None:
    """The function every fuzzed tag set decorates."""


WHERE = f"{tagged_target.__module__}.{tagged_target.__qualname__}"
KNOWN_TAGS = (
    "weight",
    "sticky_anchor",
    "hash_policy",
    "external_calls",
    "digest_policy",
    "process_pool",
    "storage_speed",
    "timeout",
)


class Colour(enum.Enum):
    """An enum the core knows nothing about."""

    RED = "red"
    LIGHT = "light"


tag_keys = (
    st.sampled_from(KNOWN_TAGS)
    | st.text(max_size=12)
    | st.sampled_from(["Weight", "WEIGHT", " weight", "weigth", "timout", "process-pool", ""])
)
odd_keys = st.integers() | st.none() | st.binary(max_size=4) | st.tuples(st.integers())
enum_members = st.sampled_from(
    [*Weight, *HashPolicy, *DigestPolicy, *StorageSpeed, *Colour, *TokenState]
)
special_numbers = st.sampled_from(
    [0, -1, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), True, False, 2**70]
)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=6)
    | enum_members
    | special_numbers
    | st.sampled_from(["heavy", "LIGHT", " medium ", "fast", "none", "standard", "full"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
        | st.frozensets(st.text(max_size=4), max_size=3)
    ),
    max_leaves=8,
)
tag_values = (
    plain_values
    | from_type_values
    | st.sampled_from([EvilEverything, Unhashable, HashRaisesValueError, EqualsEverything]).map(
        lambda make: make()
    )
)
tag_sets: st.SearchStrategy[dict[Any, Any]] = st.dictionaries(
    tag_keys, tag_values, max_size=5
) | st.dictionaries(tag_keys | odd_keys, plain_values, max_size=3)


def _proxy(tags: dict[Any, Any]) -> object:
    return MappingProxyType(tags)


def _ordered(tags: dict[Any, Any]) -> object:
    return collections.OrderedDict(tags)


def _pairs(tags: dict[Any, Any]) -> object:
    return list(tags.items())


tag_containers: st.SearchStrategy[object] = (
    tag_sets
    | tag_sets.map(_proxy)
    | tag_sets.map(_ordered)
    | tag_sets.map(_pairs)
    | st.sampled_from(["weight=heavy", 3, b"tags", {"weight"}, ("weight", "heavy")])
)


def decorate(tags: object) -> TagValidationError | None:
    """Decorate ``tagged_target`` with ``tags``; the validation error, or None if valid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # storage_speed with process_pool warns by design
        try:
            task_token_guard(tags=tags)(tagged_target)  # type: ignore[arg-type]
        except TagValidationError as exc:
            return exc
    return None


@FUZZ
@given(tag_containers)
def test_fuzzed_tags_raise_only_tag_validation_error(tags: object) -> None:
    error = decorate(tags)  # anything but TagValidationError propagates and fails the test
    if error is not None:
        message = str(error)
        assert message.strip(), "a TagValidationError without a message"
        assert WHERE in message, f"the message does not name the function: {message}"
        again = decorate(tags)
        assert again is not None, "validation is not deterministic"
        assert str(again) == message, "validation is not deterministic"
        record_faults("bad tag sets rejected", 1)


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ({"weight": EvilEverything()}, "weight"),
        ({"sticky_anchor": Unhashable()}, "sticky_anchor"),
        ({"hash_policy": EvilEverything()}, "hash_policy"),
        ({"process_pool": EvilEverything()}, "process_pool"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"weigth": "heavy"}, "did you mean 'weight'"),
        ({"external_calls": []}, "external_calls"),
        ({"external_calls": ["a"], "sticky_anchor": "b"}, "sticky_anchor"),
        ({"digest_policy": "sha1", "external_calls": ["a"]}, "digest_policy"),
        ({"storage_speed": b"fast"}, "storage_speed"),
        ({3: "heavy"}, "tag names are strings"),
        (["weight", "heavy"], "must be a mapping"),
    ],
)
def test_bad_tags_are_named_in_the_error(tags: object, fragment: str) -> None:
    error = decorate(tags)
    assert error is not None, f"{tags!r} was accepted"
    assert fragment in str(error)
    assert WHERE in str(error)


class RaisingIterMapping(Mapping[str, object]):
    """A mapping whose iteration raises."""

    def __getitem__(self, key: str) -> object:
        return "heavy"

    def __iter__(self) -> Iterator[str]:
        raise Boom("mapping __iter__")

    def __len__(self) -> int:
        return 1


class RaisingGetitemMapping(Mapping[str, object]):
    """A mapping whose item access raises."""

    def __getitem__(self, key: str) -> object:
        raise Boom("mapping __getitem__")

    def __iter__(self) -> Iterator[str]:
        return iter(["weight"])

    def __len__(self) -> int:
        return 1


class UnhashableName(str):
    """A tag name whose hash raises."""

    def __hash__(self) -> int:
        raise Boom("key __hash__")


class UnhashableKeyMapping(Mapping[str, object]):
    """A mapping that yields a key whose hash raises."""

    def __getitem__(self, key: str) -> object:
        return "heavy"

    def __iter__(self) -> Iterator[str]:
        return iter([UnhashableName("weight")])

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param(RaisingIterMapping()),
        pytest.param(RaisingGetitemMapping()),
        pytest.param(UnhashableKeyMapping()),
        pytest.param({"external_calls": [EvilEverything()]}),
        pytest.param({"external_calls": EvilList([1])}),
    ],
    ids=[
        "mapping-iter-raises",
        "mapping-getitem-raises",
        "key-hash-raises",
        "external-calls-item-repr-raises",
        "external-calls-iter-raises",
    ],
)
def test_hostile_tag_containers_raise_only_tag_validation_error(tags: object) -> None:
    try:
        error = decorate(tags)
    except Boom as exc:
        pytest.fail(f"{type(exc).__name__}({exc}) escaped tag validation")
    if error is not None:  # accepting what can be read as valid tags is fine too
        assert WHERE in str(error)


# ---------------------------------------------------------------------- pickling on process
PROCESS = {"process_pool": True, "weight": "heavy", "hash_policy": "none"}
p_mark = task_token_guard("reliability.bad.p_mark", tags=PROCESS)(targets.mark_run)
p_unpicklable_result = task_token_guard("reliability.bad.p_result", tags=PROCESS)(
    targets.mark_and_return_unpicklable
)
p_whoami = task_token_guard("reliability.bad.p_whoami", tags=PROCESS)(targets.whoami)


@pytest.fixture(scope="module")
def process_coordinator() -> Iterator[OperationsCoordinator]:
    """Two cores with one worker each: HEAVY process tokens reach core 1's worker process in
    submission order."""
    coord = OperationsCoordinator(cores=2, workers_per_core=1, stop_timeout=WAIT).start()
    try:
        yield coord
    finally:
        coord.stop(timeout=WAIT)
    assert_quiescent(coord)


def _generator() -> Iterator[int]:
    yield 1


UNPICKLABLE: dict[str, Callable[[], object]] = {
    "lambda": lambda: lambda x: x,
    "lock": threading.Lock,
    "generator": _generator,
    "__reduce__ raises": targets.RefusesPickling,
    "lambda deep in a container": lambda: [1, {"k": (2, lambda: 3)}],
    "open file": lambda: open(__file__, encoding="utf-8"),  # noqa: SIM115
}


def _run_log(tmp_path: Path) -> str:
    return str(tmp_path / "runs.log")


@pytest.mark.parametrize("make", list(UNPICKLABLE.values()), ids=list(UNPICKLABLE))
@pytest.mark.parametrize("as_keyword", [False, True], ids=["positional", "keyword"])
def test_unpicklable_arguments_fail_clearly_and_never_run(
    make: Callable[[], object],
    as_keyword: bool,
    process_coordinator: OperationsCoordinator,
    tmp_path: Path,
) -> None:
    log = _run_log(tmp_path)
    payload = make()
    try:
        if as_keyword:
            token: TaskToken[str] = p_mark(log, "bad", payload=payload)
        else:
            token = p_mark(log, "bad", payload)
        exc = token.exception(WAIT)
    finally:
        close = getattr(payload, "close", None)
        if callable(close):
            close()
    record_faults("unpicklable process-token arguments", 1)
    assert token.state is TokenState.FAILED
    assert isinstance(exc, ProcessDomainError), repr(exc)
    message = str(exc)
    assert "argument 'payload'" in message
    assert "cannot be pickled" in message
    assert "process_pool" in message
    assert targets.count_runs(log) == {}, "the body ran although its arguments never crossed"
    # The worker process was not involved: the next call runs as usual.
    assert p_mark(log, "after").get(WAIT) == "after"
    assert targets.count_runs(log) == {"after": 1}


def test_argument_that_fails_to_unpickle_in_the_worker(
    process_coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    log = _run_log(tmp_path)
    before = p_whoami().get(WAIT)
    token = p_mark(log, "bad", targets.ExplodesInChild("hostile"))
    exc = token.exception(WAIT)
    record_faults("arguments that fail to unpickle in the worker process", 1)
    assert token.state is TokenState.FAILED
    assert isinstance(exc, ProcessDomainError), repr(exc)
    assert "could not load" in str(exc)
    assert "unpickling refused in the worker process: hostile" in str(exc)
    assert targets.count_runs(log) == {}
    assert p_whoami().get(WAIT) == before, "a refused argument must not cost the process"


def test_argument_that_kills_the_worker_while_unpickling_is_not_retried(
    process_coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    log = _run_log(tmp_path)
    p_whoami().get(WAIT)
    backend = process_coordinator.backend("process", 1)
    assert isinstance(backend, ProcessExecutor)
    restarts = backend.restarts
    token = p_mark(log, "bad", targets.ExitsInChild(7))
    follow = p_mark(log, "follow")
    exc = token.exception(WAIT)
    record_faults("arguments that kill the worker process while unpickling", 1)
    assert token.state is TokenState.FAILED
    assert isinstance(exc, ProcessDomainError), repr(exc)
    assert "died" in str(exc)
    assert "exit code 7" in str(exc)
    assert follow.get(WAIT) == "follow"
    assert targets.count_runs(log) == {"follow": 1}
    # One fresh process for the follow-up call; the fatal call was not sent again.
    assert backend.restarts == restarts + 1


def test_unpicklable_result_fails_without_a_second_run(
    process_coordinator: OperationsCoordinator, tmp_path: Path
) -> None:
    log = _run_log(tmp_path)
    token = p_unpicklable_result(log, "once")
    exc = token.exception(WAIT)
    record_faults("unpicklable process-token results", 1)
    assert token.state is TokenState.FAILED
    assert isinstance(exc, ProcessDomainError), repr(exc)
    assert "result" in str(exc)
    assert "cannot be pickled" in str(exc)
    assert targets.count_runs(log) == {"once": 1}


def test_a_local_function_crosses_by_value(
    process_coordinator: OperationsCoordinator,
) -> None:
    @task_token_guard("reliability.bad.p_local", tags=PROCESS)
    def local(x: int) -> tuple[int, int]:
        return x, os.getpid()

    value, pid = local(1).get(WAIT)
    assert value == 1
    assert pid != os.getpid()


def test_a_function_that_cannot_cross_fails_before_it_runs(
    process_coordinator: OperationsCoordinator,
) -> None:
    lock = threading.Lock()

    @task_token_guard("reliability.bad.p_lock_holder", tags=PROCESS)
    def holds_a_lock() -> bool:
        return lock.locked()

    token = holds_a_lock()
    exc = token.exception(WAIT)
    record_faults("process-token functions that cannot be sent", 1)
    assert token.state is TokenState.FAILED
    assert isinstance(exc, ProcessDomainError)
    assert "not importable" in str(exc)
    assert "cloudpickle cannot pickle it" in str(exc)
