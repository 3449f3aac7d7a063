"""``OperationsCoordinator.submit`` / ``map``: undecorated callables, the concurrent.futures way.

A callable handed over with some tags becomes an operation exactly as if it had been decorated
with ``@task_token_guard(tags=...)``: its tags are validated and its plan compiled once per
(callable, tags) and cached (bounded), never per call.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tokengate.hashing import make_hashable

from ._context import CURRENT

if TYPE_CHECKING:
    from ._guard import GuardedFunction
    from ._protocols import TokenOwner
    from ._token import TaskToken

__all__ = ("CALL_CACHE_SIZE", "guarded_callable", "map_calls", "submit_call")

R = TypeVar("R")

#: Operations made from undecorated callables that are kept compiled (least recently used out).
CALL_CACHE_SIZE = 512

_cache: collections.OrderedDict[tuple[Any, ...], GuardedFunction[..., Any]] = (
    collections.OrderedDict()
)
_cache_lock = threading.Lock()


def _key(fn: Callable[..., Any], tags: Mapping[str, object] | None) -> tuple[Any, ...]:
    tags_key = None if not tags else make_hashable(dict(tags))
    try:
        hash(fn)
    except TypeError:  # an unhashable callable object: keyed by identity (held by the cache)
        return ("id", id(fn), tags_key)
    return ("fn", fn, tags_key)


def guarded_callable(
    fn: Callable[..., R], tags: Mapping[str, object] | None
) -> GuardedFunction[..., R]:
    """The operation made of ``fn`` with ``tags``, compiled once and cached.

    Raises:
        TypeError: ``fn`` is not callable, is async, or ``tags`` is not a mapping.
        TagValidationError: a tag is unknown, malformed or conflicts with another.
    """
    from ._guard import task_token_guard

    if not callable(fn):
        raise TypeError(f"submit/map take a callable as their first argument, not {fn!r}")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping such as {{'weight': 'light'}}, not {tags!r}")
    key = _key(fn, tags)
    with _cache_lock:
        guarded = _cache.get(key)
        if guarded is not None:
            _cache.move_to_end(key)
            return guarded
    made: GuardedFunction[..., R] = task_token_guard(tags=tags)(fn)
    with _cache_lock:
        guarded = _cache.setdefault(key, made)
        _cache.move_to_end(key)
        while len(_cache) > CALL_CACHE_SIZE:
            _cache.popitem(last=False)
    return guarded


def submit_call(
    owner: TokenOwner[Any],
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tags: Mapping[str, object] | None,
) -> TaskToken[R]:
    """Call ``fn`` as an operation of ``owner`` (the coordinator ``submit`` was called on)."""
    guarded = guarded_callable(fn, tags)
    reset = CURRENT.set(owner)  # route this call to ``owner``, whatever is current here
    try:
        return guarded(*args, **kwargs)
    finally:
        CURRENT.reset(reset)


def map_calls(
    owner: TokenOwner[Any],
    fn: Callable[..., R],
    iterables: tuple[Iterable[Any], ...],
    tags: Mapping[str, object] | None,
    buffersize: int | None,
    timeout: float | None,
) -> Iterator[R]:
    """``Executor.map`` over tokens: results in order; with ``buffersize``, at most that many
    calls in flight ahead of the consumer (the iterables are read lazily)."""
    if buffersize is not None and (
        not isinstance(buffersize, int) or isinstance(buffersize, bool) or buffersize < 1
    ):
        raise ValueError(f"buffersize must be an int >= 1 or None, not {buffersize!r}")
    guarded = guarded_callable(fn, tags)
    calls = zip(*iterables, strict=False)

    def submit(args: tuple[Any, ...]) -> TaskToken[R]:
        reset = CURRENT.set(owner)
        try:
            return guarded(*args)
        finally:
            CURRENT.reset(reset)

    pending: collections.deque[TaskToken[R]] = collections.deque()
    if buffersize is None:
        pending.extend(submit(args) for args in calls)  # like Executor.map: all at once
    else:
        pending.extend(submit(args) for args in itertools.islice(calls, buffersize))
    return _results(pending, calls, submit, timeout, buffersize is not None)


def _results(
    pending: collections.deque[TaskToken[R]],
    calls: Iterator[tuple[Any, ...]],
    submit: Callable[[tuple[Any, ...]], TaskToken[R]],
    timeout: float | None,
    refill: bool,
) -> Iterator[R]:
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while pending:
            token = pending.popleft()
            if refill:
                following = next(calls, None)
                if following is not None:
                    pending.append(submit(following))
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield token.get(wait)
    finally:  # the consumer stopped early (or a wait failed): calls not yet started never run
        for token in pending:
            if not token.running():  # a running body finishes; its result is dropped
                token.kill("map() was closed before this result was taken")
