"""``OperationsCoordinator.submit`` / ``map``: undecorated callables, the concurrent.futures way.

A callable handed over with some tags becomes an operation exactly as if it had been decorated
with ``@task_token_guard(tags=...)``: its tags are validated and its plan compiled once per
(callable, tags) and cached (bounded), never per call.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tokengate.hashing import make_hashable

from ._plan import OperationPlan, compile_plan
from ._plugins import PluginResultError, plugin_manager

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("CALL_CACHE_SIZE", "map_calls", "plan_for", "submit_call")

R = TypeVar("R")

#: Operations made from undecorated callables that are kept compiled (least recently used out).
CALL_CACHE_SIZE = 512

_cache: collections.OrderedDict[tuple[Any, ...], OperationPlan] = collections.OrderedDict()
_cache_lock = threading.Lock()


class Submitter(Protocol):
    """What ``submit``/``map`` hand the compiled call to: the coordinator they were called on."""

    def _submit(
        self, plan: OperationPlan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskToken[Any]: ...


def _key(fn: Callable[..., Any], tags: Mapping[str, object] | None) -> tuple[Any, ...]:
    tags_key = None if not tags else make_hashable(dict(tags))
    try:
        hash(fn)
    except TypeError:  # an unhashable callable object: keyed by identity (held by the plan)
        return ("id", id(fn), tags_key)
    return ("fn", fn, tags_key)


def plan_for(fn: Callable[..., Any], tags: Mapping[str, object] | None) -> OperationPlan:
    """The operation made of ``fn`` with ``tags``: compiled once, cached, and compiled again
    only when the set of plugins changed (exactly as a decorated function's).

    Raises:
        TypeError: ``fn`` is not callable, is async, or ``tags`` is not a mapping.
        TagValidationError: a tag is unknown, malformed or conflicts with another.
        PluginResultError: a plugin's hook answered this operation with a bad result.
    """
    if not callable(fn) or isinstance(fn, type):
        raise TypeError(f"submit/map take a callable (a function) first, not {fn!r}")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"submit/map cannot run {getattr(fn, '__qualname__', fn)!r}: it is async. "
            "TokenGate runs synchronous functions; await the tokens instead"
        )
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping such as {{'weight': 'light'}}, not {tags!r}")
    host = plugin_manager()
    key = _key(fn, tags)
    with _cache_lock:
        plan = _cache.get(key)
        if plan is not None and plan.generation == host.generation:
            _cache.move_to_end(key)
            return plan
    name = getattr(fn, "__qualname__", None) or repr(fn)
    plan = compile_plan(host, fn, name, tags)
    if isinstance(plan.broken, PluginResultError):
        raise plan.broken  # a hook's bad answer: reported once, here
    with _cache_lock:
        _cache[key] = plan
        _cache.move_to_end(key)
        while len(_cache) > CALL_CACHE_SIZE:
            _cache.popitem(last=False)
    return plan


def submit_call(
    owner: Submitter,
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tags: Mapping[str, object] | None,
) -> TaskToken[R]:
    """Call ``fn`` as an operation of ``owner`` (the coordinator ``submit`` was called on)."""
    token: TaskToken[R] = owner._submit(plan_for(fn, tags), args, kwargs)
    return token


def map_calls(
    owner: Submitter,
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
    plan = plan_for(fn, tags)
    calls = zip(*iterables, strict=False)
    no_kwargs: dict[str, Any] = {}

    def submit(args: tuple[Any, ...]) -> TaskToken[R]:
        token: TaskToken[R] = owner._submit(plan, args, no_kwargs)
        return token

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
            # a running body finishes; its result is dropped
            token._kill_unstarted("map() was closed before this result was taken")
