"""What runs inside a Dask worker: one task runs a batch of calls, each with its own outcome.

A batch arrives as the pickled functions it needs and, per call, the index of its function
and its pickled ``(args, kwargs, remote contexts)``. Every call is loaded, run and its outcome
pickled on its own, so a call whose argument cannot be unpickled, whose body raises or whose
result cannot be pickled fails alone; its batch-mates complete.

Calls made *inside* a body (a conductor lead calling its children) go to the worker-side
coordinator, started in the worker process on first use: its tokens run in this worker, so
a lead and all its descendants share the lead's worker. A body that waits on a token leaves
the worker's thread pool while it waits (``distributed.secede``) and rejoins it after
(``distributed.rejoin``), so a lead may wait on its children without holding a thread that
other work needs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

# How the core lets an executor hear that a body waits on a token (managed blocking).
from tokengate.core._blocking import current_handler as _current_handler
from tokengate.core._blocking import install as _install

__all__ = (
    "ERR",
    "OK",
    "FunctionRef",
    "Outcome",
    "current_worker_address",
    "dumps",
    "dumps_function",
    "run_batch",
    "worker_coordinator",
)

_log = logging.getLogger("tokengate.dask")

OK = 0
ERR = 1
#: ``(OK, pickled result)`` or ``(ERR, pickled exception)``.
Outcome = tuple[int, bytes]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: How a function travels: ``(operation, module, qualname, cloudpickled function or None)``;
#: None means "import it by module and qualified name on the worker".
FunctionRef = tuple[str, str, str, bytes | None]
#: Functions of this worker, by reference (bounded).
_FUNCTIONS: dict[FunctionRef, Callable[..., Any]] = {}
_FUNCTIONS_LIMIT = 512
_LOCK = threading.Lock()
#: The address of the worker this process runs (set by the first batch).
_ADDRESS: str | None = None
_COORDINATOR: Any = None
#: Threads of the worker-side coordinator's one core domain: calls made by bodies on this
#: worker, where leads and nested leads mostly wait on their children.
WORKER_SIDE_THREADS = 16


def dumps(value: object) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle (lambdas, closures,
    classes defined in ``__main__``)."""
    try:
        return pickle.dumps(value, _PROTOCOL)
    except Exception:
        data: bytes = cloudpickle.dumps(value, _PROTOCOL)
        return data


class _OperationPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, except that a ``@task_token_guard`` operation travels as its body, its
    name and its tags, and is decorated again where it lands (its compiled plan holds
    process-local state that must not be copied)."""

    def reducer_override(self, obj: object) -> object:
        plan = getattr(obj, "__tokengate_plan__", None) if callable(obj) else None
        if plan is not None:
            body = getattr(obj, "__wrapped__", None)
            operation = getattr(plan, "operation_type", None)
            if callable(body) and isinstance(operation, str):
                tags = dict(getattr(plan, "public_tags", None) or {})
                return _rebuild_operation, (body, operation, tags)
        return super().reducer_override(obj)


def dumps_function(func: Callable[..., Any]) -> bytes:
    """Pickle ``func`` by value (cloudpickle), operations it refers to by body and tags."""
    buffer = io.BytesIO()
    _OperationPickler(buffer, protocol=_PROTOCOL).dump(func)
    return buffer.getvalue()


_REBUILT: dict[tuple[str, str], Callable[..., Any]] = {}


def _rebuild_operation(
    body: Callable[..., Any], operation: str, tags: dict[str, object]
) -> Callable[..., Any]:
    """Decorate ``body`` again on the worker (once per operation and tags)."""
    key = (operation, repr(sorted(tags.items(), key=lambda item: item[0])))
    made = _REBUILT.get(key)
    if made is None:
        from tokengate.core import task_token_guard

        made = _REBUILT[key] = task_token_guard(operation, tags)(body)
    return made


def current_worker_address() -> str | None:
    """The address of the Dask worker running the calling code, or None outside Dask.

    Inside a body sent by the Dask executor it is the worker's address, and so it is in the
    calls that body makes (they run on the same worker).
    """
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            address: str = distributed.get_worker().address
            return address
        except ValueError:
            pass
    return _ADDRESS


def worker_coordinator() -> Any:
    """The coordinator that decorated calls made by bodies on this Dask worker go to.

    In a worker process of its own it is the worker-side coordinator, started on first use:
    its tokens run in this worker (it never sends work elsewhere). In a worker that shares
    the client's process (``LocalCluster(processes=False)``) it is the coordinator already
    running there. None when neither exists (outside Dask).
    """
    global _COORDINATOR, _ADDRESS
    coordinator = _COORDINATOR
    if coordinator is not None and coordinator.running:
        return coordinator
    from tokengate.core import OperationsCoordinator, current_coordinator

    with _LOCK:
        if _COORDINATOR is not None and _COORDINATOR.running:
            return _COORDINATOR
        existing = current_coordinator()
        if existing is not None:
            return existing  # the client's own process: its coordinator takes the calls
        address = current_worker_address()
        if address is None:
            return None
        _ADDRESS = address
        _COORDINATOR = OperationsCoordinator(cores=1, workers_per_core=WORKER_SIDE_THREADS).start()
        _log.info("worker-side coordinator started in the Dask worker %s", address)
        return _COORDINATOR


def _resolve(module: str, qualname: str) -> Callable[..., Any]:
    """Import ``module``, walk ``qualname``; a ``@task_token_guard`` wrapper gives its body."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if getattr(target, "__tokengate_plan__", None) is not None:
        target = target.__wrapped__
    if not callable(target):
        raise TypeError(f"{module}.{qualname} is {type(target).__name__}, not a function")
    result: Callable[..., Any] = target
    return result


def _function(ref: FunctionRef) -> Callable[..., Any]:
    func = _FUNCTIONS.get(ref)
    if func is None:
        _operation, module, qualname, by_value = ref
        func = pickle.loads(by_value) if by_value is not None else _resolve(module, qualname)
        if len(_FUNCTIONS) >= _FUNCTIONS_LIMIT:
            _FUNCTIONS.clear()
        _FUNCTIONS[ref] = func
    return func


def _error(exc: BaseException, operation: str, where: str, with_traceback: bool) -> bytes:
    """Pickle ``exc`` (with the worker's traceback as a note), or a portable stand-in."""
    if with_traceback:
        exc.add_note(f"\nRemote traceback (Dask worker {where}):\n{traceback.format_exc()}")
    try:
        data = dumps(exc)
        pickle.loads(data)
        return data
    except Exception as problem:
        from ._errors import DaskExecutorError

        kind = type(exc)
        return dumps(
            DaskExecutorError(
                f"{operation} raised {kind.__module__}.{kind.__qualname__}: {exc} on the Dask "
                f"worker {where} (the exception itself cannot cross to the client: {problem!r})"
            )
        )


def _run_one(func: Callable[..., Any], call: bytes, operation: str, where: str) -> Outcome:
    from ._errors import DaskExecutorError

    try:
        args, kwargs, contexts = pickle.loads(call)
    except BaseException as exc:
        return ERR, _error(
            DaskExecutorError(
                f"the arguments of {operation} could not be unpickled on the Dask worker "
                f"{where}: {exc!r}; make their types importable on the workers"
            ),
            operation,
            where,
            False,
        )
    try:
        with contextlib.ExitStack() as scopes:
            for extension, value in contexts:
                scopes.enter_context(extension.remote_scope(value))
            result = func(*args, **kwargs)
    except BaseException as exc:
        return ERR, _error(exc, operation, where, True)
    try:
        return OK, dumps(result)
    except BaseException as exc:
        return ERR, _error(
            DaskExecutorError(
                f"the result of {operation} ({type(result).__qualname__}) cannot be pickled "
                f"on the Dask worker {where}: {exc}; return picklable data"
            ),
            operation,
            where,
            False,
        )


class _Secession:
    """A blocking handler for the Dask task thread running a batch: the outermost wait of a
    body on a token leaves the worker's thread pool (``distributed.secede``) and rejoins it
    (``distributed.rejoin``) when it is over, so the calls it waits for get the thread."""

    __slots__ = ("_depth", "_distributed", "_seceded")

    def __init__(self, distributed: Any) -> None:
        self._distributed = distributed
        self._depth = 0
        self._seceded = False

    def begin_blocking(self) -> None:
        """The body is about to wait: leave the thread pool (outermost wait only)."""
        self._depth += 1
        if self._depth == 1:
            try:
                self._distributed.secede()
                self._seceded = True
            except (ValueError, AttributeError, KeyError):
                self._seceded = False  # not on a Dask task thread

    def end_blocking(self) -> None:
        """The wait is over: rejoin the thread pool (blocks until a thread is free)."""
        self._depth -= 1
        if self._depth == 0 and self._seceded:
            self._seceded = False
            self._distributed.rejoin()


def run_batch(
    functions: list[FunctionRef],
    calls: list[tuple[int, bytes]],
    lead: bool,
) -> tuple[str, list[Outcome]]:
    """The Dask task of one batch: run every call, return ``(worker address, outcomes)``.

    Args:
        functions: the functions of the batch (see :data:`FunctionRef`).
        calls: per call, the index of its function and its pickled
            ``(args, kwargs, [(extension class, remote context value), ...])``.
        lead: the batch is one conductor lead (it may wait on its children).
    """
    import distributed

    from ._errors import DaskExecutorError

    where = current_worker_address() or "(not a Dask worker)"
    worker_coordinator()
    loaded: list[Callable[..., Any] | BaseException] = []
    for ref in functions:
        operation = ref[0]
        try:
            loaded.append(_function(ref))
        except BaseException as exc:
            loaded.append(
                DaskExecutorError(
                    f"{operation} could not be loaded on the Dask worker {where}: {exc!r}; "
                    "install its module on the workers, or send it by value with "
                    "cloudpickle.register_pickle_by_value(module)"
                )
            )
    outcomes: list[Outcome] = []
    secession = _Secession(distributed)
    previous = _current_handler()
    _install(secession)  # a body that waits on a token leaves the thread pool meanwhile
    try:
        for index, call in calls:
            func = loaded[index]
            operation = functions[index][0]
            if isinstance(func, BaseException):
                outcomes.append((ERR, _error(func, operation, where, False)))
            else:
                outcomes.append(_run_one(func, call, operation, where))
    finally:
        _install(previous)
    return where, outcomes
