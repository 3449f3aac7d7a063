"""``task_token_guard`` and the *current coordinator*."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Never, ParamSpec, Protocol, Self, TypeVar, cast, overload

from . import _context
from ._context import CURRENT as CURRENT
from ._context import current_owner, running_owners
from ._context import push_running as push_running
from ._context import remove_running as remove_running
from ._errors import CoordinatorNotRunningError, PluginError
from ._plan import OperationPlan, compile_plan
from ._plugins import PluginResultError, plugin_manager

if TYPE_CHECKING:
    from ._coordinator import OperationsCoordinator
    from ._token import TaskToken

__all__ = ("GuardedFunction", "current_coordinator", "get_operation_plan", "task_token_guard")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class GuardedFunction(Protocol[P, R_co]):
    """What ``@task_token_guard(...)`` makes of a function: called with the function's
    parameters, it returns a token; ``__wrapped__`` is the undecorated function (call it in
    unit tests to run the body directly)."""

    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskToken[R_co]: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> Callable[..., TaskToken[R_co]]: ...

    # A decorated method binds like a function; its parameters after ``self`` are not
    # checked through the binding.
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> Self | Callable[..., TaskToken[R_co]]: ...


#: The started coordinators of this process, newest last (the live list of ``_context``).
_RUNNING = running_owners()
#: The same list and the current owner's getter, typed as what they hold here (only
#: coordinators make themselves owners): no ``cast`` call on the hot path.
_RUNNING_COORDINATORS = cast("list[OperationsCoordinator]", _RUNNING)
_current = cast("Callable[[], OperationsCoordinator | None]", CURRENT.get)
#: Re-exported from ``_context`` (where executors' worker processes set it).
PLAN_ATTRIBUTE = _context.PLAN_ATTRIBUTE
#: Kept for worker processes that still set it here (``_context.mark_worker_process()``).
IN_WORKER_PROCESS = False


def current_coordinator() -> OperationsCoordinator | None:
    """The coordinator that a decorated call made here would use, or None.

    Inside a running token it is the coordinator running it; elsewhere the most recently
    started coordinator of the process that is still running.
    """
    # Only coordinators make themselves current (``_context`` holds them by protocol).
    return cast("OperationsCoordinator | None", current_owner())


def _not_running(operation_type: str) -> CoordinatorNotRunningError:
    if _context.IN_WORKER_PROCESS or IN_WORKER_PROCESS:
        return CoordinatorNotRunningError(
            f"{operation_type} was called inside a process-domain worker process; tokens can "
            "only be created in the coordinator's process. Call the undecorated function "
            "(fn.__wrapped__) there, or drop process_pool from the caller's tags"
        )
    return CoordinatorNotRunningError(
        f"{operation_type} was called with no running OperationsCoordinator; start one first "
        "(OperationsCoordinator().start(), or 'with OperationsCoordinator():')"
    )


def task_token_guard(
    operation_type: str | None = None,
    tags: Mapping[str, object] | None = None,
    **misplaced: Never,
) -> Callable[[Callable[P, R]], GuardedFunction[P, R]]:
    """Turn a synchronous function into an operation whose calls return tokens at once.

    The decorated function keeps its parameters; calling it returns a
    :class:`~tokengate.core.TaskToken` immediately, and the body runs later on a worker of the
    current coordinator.

    Args:
        operation_type: the operation's name; defaults to the function's ``__qualname__``.
        tags: routing and execution tags (see the tag reference), validated now.

    Raises:
        TagValidationError: a tag is unknown, malformed or conflicts (at decoration).
        TypeError: the target is a coroutine function, an async generator function or not
            callable (at decoration); tag names were passed as keywords
            (``weight="light"``: write ``tags={"weight": "light"}``).
        CoordinatorNotRunningError: the decorated function is called while no coordinator runs.
    """
    if misplaced:
        given = ", ".join(
            f"{key!r}: {value!r}" for key, value in dict[str, object](misplaced).items()
        )
        raise TypeError(
            f"task_token_guard() takes tags as one mapping, not as keywords "
            f"({', '.join(misplaced)}); write task_token_guard(tags={{{given}}})"
        )
    if callable(operation_type):
        raise TypeError(
            "task_token_guard is a decorator factory: write @task_token_guard() or "
            "@task_token_guard(operation_type=..., tags={...}), with parentheses"
        )
    if operation_type is not None and (not isinstance(operation_type, str) or not operation_type):
        raise TypeError(f"operation_type must be a non-empty string, not {operation_type!r}")

    def decorate(func: Callable[P, R]) -> GuardedFunction[P, R]:
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"task_token_guard cannot decorate {getattr(func, '__qualname__', func)!r}: it "
                "is async. TokenGate runs synchronous functions; await the tokens instead"
            )
        if not callable(func) or isinstance(func, type):
            raise TypeError(
                f"task_token_guard decorates functions, not {type(func).__name__} {func!r}"
            )
        name = operation_type or getattr(func, "__qualname__", None) or repr(func)
        host = plugin_manager()
        plan = compile_plan(host, func, name, tags)
        if isinstance(plan.broken, PluginResultError):
            raise plan.broken  # a hook's bad answer: reported once, here
        # The plan in force; re-derived once per change of the plugin set (the generation),
        # by whichever call first sees the change.
        current = [plan]
        rederiving = threading.Lock()

        def rederive() -> OperationPlan:
            with rederiving:
                plan = current[0]
                if plan.generation == host._generation:
                    return plan
                generation = host._generation
                try:
                    plan = compile_plan(host, func, name, tags)
                except Exception as exc:  # e.g. a tag whose plugin was unregistered
                    plan = dataclasses.replace(
                        plan,
                        broken=PluginError(
                            f"{name}: the plugins changed and its tags no longer validate: {exc}"
                        ),
                        generation=generation,
                    )
                current[0] = plan
                setattr(submit, PLAN_ATTRIBUTE, plan)
                return plan

        @functools.wraps(func)
        def submit(*args: P.args, **kwargs: P.kwargs) -> TaskToken[R]:
            plan = current[0]
            if plan.generation != host._generation:
                plan = rederive()
            coordinator = _current()
            if coordinator is None:
                if not _RUNNING_COORDINATORS:
                    raise _not_running(name)
                coordinator = _RUNNING_COORDINATORS[-1]
            return coordinator._submit(plan, args, kwargs)

        setattr(submit, PLAN_ATTRIBUTE, plan)
        return cast("GuardedFunction[P, R]", submit)

    return decorate


def get_operation_plan(func: Callable[..., Any]) -> OperationPlan | None:
    """The compiled plan of a decorated function, or None for anything else."""
    plan = getattr(func, PLAN_ATTRIBUTE, None)
    return plan if isinstance(plan, OperationPlan) else None
