"""``DaskExecutor``: the executor factory that puts core domains on Dask workers.

One :class:`DaskExecutor` serves every core domain of a coordinator: a :class:`DaskBackend`
per domain queues that domain's tokens, and three threads of the executor do the rest:

* the *sender* packs each domain's queued calls into batches and submits each batch as one
  Dask task pinned to the domain's worker (``workers=[address], allow_other_workers=False``)
  when that worker has a free thread: a batch leaves with at most ``max_batch`` calls, once
  its oldest call has waited ``max_delay`` seconds or the batch is full. Every token moves to
  ``EXECUTING`` (``token.set_running()``) right before its batch is submitted, so a token that
  waits for a free worker thread is still ``ADMITTED``: a kill, a timeout or ``drain()`` stops
  it before it ever reaches Dask;
* the *collector* receives finished batches as they complete and ends each token with its
  own outcome (``set_result`` / ``set_exception``; a late outcome of a killed token is
  dropped);
* the *watchdog* follows the cluster's workers: the calls sent to a worker that left fail
  with :class:`~tokengate.dask.DaskWorkerLostError` and its domains move to live workers.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import pickle
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import distributed

from tokengate.core import ExecutorBackend, ExecutorDomain, ExecutorStats, TaskToken

from . import _remote
from ._client import check_open, resolve_client
from ._errors import DaskExecutorError, DaskWorkerLostError
from ._mapping import WorkerMap

__all__ = ("DaskBackend", "DaskExecutor")

_log = logging.getLogger("tokengate.dask")
_perf = time.perf_counter
_EXECUTORS = itertools.count(1)
#: distributed's futures and client methods carry no annotations.
Future = Any
#: ``(backend, tokens, is a lead, reserved worker or None)``
_Work = tuple["DaskBackend", list[TaskToken[Any]], bool, str | None]

#: Seconds between two looks at the cluster's workers while calls are in flight.
WATCH_INTERVAL = 0.25
#: Seconds between two looks while idle.
IDLE_WATCH_INTERVAL = 2.0


class _Batch:
    """One Dask task: the tokens it carries, in order, and where it went."""

    __slots__ = ("backend", "future", "lead", "slot", "tokens", "worker")

    def __init__(
        self, backend: DaskBackend, tokens: list[TaskToken[Any]], worker: str, lead: bool
    ) -> None:
        self.backend = backend
        self.tokens = tokens
        self.worker = worker
        self.lead = lead
        self.future: Future | None = None
        #: the worker thread this batch holds until it ends (None for leads)
        self.slot: str | None = None


class DaskBackend(ExecutorBackend):
    """The backend of one core domain on a Dask worker (made by :class:`DaskExecutor`).

    Attributes:
        core_id: the core domain it serves.
        coordinator_name: the coordinator it serves.
        calls_sent: calls sent to Dask so far.
        batches_sent: Dask tasks submitted so far.
    """

    def __init__(self, executor: DaskExecutor, domain: ExecutorDomain) -> None:
        self._executor = executor
        self.core_id = domain.core_id
        self.coordinator_name = domain.coordinator_name
        self._pending: deque[TaskToken[Any]] = deque()
        self._leads: deque[TaskToken[Any]] = deque()
        self._oldest = 0.0
        self._batches: set[_Batch] = set()
        self._closed = False
        self.calls_sent = 0
        self.batches_sent = 0

    # ------------------------------------------------------------------ the interface
    def submit(self, tokens: Sequence[TaskToken[Any]]) -> None:
        """Queue ``ADMITTED`` tokens for this domain's worker; return at once."""
        executor = self._executor
        refused: list[TaskToken[Any]] = []
        with executor._cond:
            if self._closed:
                refused = list(tokens)
            else:
                is_lead = executor._is_lead
                pending = self._pending
                if not pending:
                    self._oldest = _perf()
                for token in tokens:
                    if is_lead(token):
                        self._leads.append(token)
                    else:
                        pending.append(token)
                executor._wake()
        for token in refused:
            token.kill(f"the Dask executor of core {self.core_id} shut down before it ran")

    def cancel(self, token: TaskToken[Any]) -> None:
        """A held token was killed or timed out: cancel its Dask task once every call in it
        has ended (a running task finishes on its worker; its late results are dropped)."""
        executor = self._executor
        with executor._cond:
            batch = executor._by_token.get(token)
            future = None
            if batch is not None and all(t.done() or t is token for t in batch.tokens):
                future = batch.future
        if future is not None:
            future.cancel()

    def shutdown(self, timeout: float) -> None:
        """Kill the calls not yet sent, wait about ``timeout`` seconds for the batches in
        flight, then kill what is left and cancel its Dask tasks."""
        executor = self._executor
        deadline = time.monotonic() + max(0.0, timeout)
        with executor._cond:
            self._closed = True
            unsent = list(self._pending) + list(self._leads)
            self._pending.clear()
            self._leads.clear()
        for token in unsent:
            token.kill(f"the Dask executor of core {self.core_id} shut down before it ran")
        with executor._cond:
            while self._batches and any(not t.done() for b in self._batches for t in b.tokens):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                executor._cond.wait(min(remaining, 0.1))
            leftovers = list(self._batches)
        for batch in leftovers:
            for token in batch.tokens:
                token.kill(
                    f"the Dask executor of core {self.core_id} shut down while the call ran "
                    f"on the Dask worker {batch.worker}"
                )
            if batch.future is not None:
                batch.future.cancel()
            executor._forget(batch)
        executor._backend_closed(self)

    def stats(self) -> ExecutorStats:
        """The domain's worker, calls in flight and queued, calls sent per worker."""
        executor = self._executor
        with executor._cond:
            busy = sum(1 for b in self._batches for t in b.tokens if not t.done())
            queued = len(self._pending) + len(self._leads)
            per_worker = dict(executor._calls_per_worker)
        worker = executor._map.assignments().get(self.core_id)
        live = executor._map.live
        return ExecutorStats(
            workers=0 if worker is None else 1,
            busy=busy,
            queued=queued,
            alive=worker is not None and worker in live,
            details={
                "worker": worker,
                "cluster_workers": len(live),
                "calls_sent": self.calls_sent,
                "batches_sent": self.batches_sent,
                "calls_per_worker": per_worker,
            },
        )


class DaskExecutor:
    """Executor factory: runs core domains on the workers of a Dask cluster.

    Pass it as ``OperationsCoordinator(executor=DaskExecutor(client))`` to run every operation
    on the cluster, or rely on the registered name (``executor: "dask"`` tag), which uses the
    process's default Dask client.

    * **Domains on workers.** One core domain per worker by default: domain ``k`` runs on the
      ``(k - 1) % W``-th worker in address order, and a coordinator made with this executor
      and no ``cores`` gets one domain per worker (:attr:`cores`). A domain keeps its worker
      while the worker lives; when it leaves, the domain moves to the live worker serving the
      fewest domains; an idle domain moves to a worker that joined when that evens the load.
    * **Batches.** A domain's calls travel in Dask tasks of at most ``max_batch`` calls. A
      worker gets at most one batch per thread (plus ``prefetch``) at a time; when one of its
      threads is free, the next batch leaves as soon as it is full or its oldest call has
      waited ``max_delay`` seconds. Calls that arrive meanwhile wait (``ADMITTED``) and leave
      together, so batches grow with the load. Each call keeps its own token, outcome and
      exception: one failing call never fails its batch-mates. A conductor lead travels alone;
      a body that waits on a token leaves the worker's thread pool while it waits
      (``secede``, then ``rejoin``), so a lead may wait on its children, which run on the
      same worker.

    Args:
        client: a :class:`distributed.Client`, a scheduler address (``"tcp://host:8786"``;
            the executor then owns the client and closes it when its coordinator stops), or
            None for the process's default client (``distributed.get_client()``).
        max_batch: most calls in one Dask task.
        max_delay: seconds a call may wait for batch-mates while its worker has a free thread.
        prefetch: batches sent to a worker beyond its thread count, so that its next batch is
            already there when one finishes. Their calls count as running (``EXECUTING``)
            while they wait on the worker: ``drain()`` no longer stops them, a kill still
            does. 0 (the default) keeps every waiting call ``ADMITTED``.
        connect_timeout: seconds to reach a scheduler given by address.

    Attributes:
        max_batch: as given.
        max_delay: as given, in seconds.
        prefetch: as given.

    Raises:
        DaskExecutorError: no default client exists, the address cannot be reached, or the
            client is closed or asynchronous.
        TypeError: ``client`` is of another type.
        ValueError: ``max_batch``, ``max_delay`` or ``prefetch`` is out of range.
    """

    def __init__(
        self,
        client: distributed.Client | str | None = None,
        *,
        max_batch: int = 256,
        max_delay: float = 0.002,
        prefetch: int = 0,
        connect_timeout: float = 10.0,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"DaskExecutor(max_batch={max_batch!r}): must be an int >= 1")
        if not isinstance(max_delay, int | float) or not 0 <= max_delay <= 10:
            raise ValueError(
                f"DaskExecutor(max_delay={max_delay!r}): must be seconds between 0 and 10"
            )
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"DaskExecutor(prefetch={prefetch!r}): must be an int >= 0")
        self._client: Any
        self._client, self._owns_client = resolve_client(client, connect_timeout)
        self.max_batch = max_batch
        self.max_delay = float(max_delay)
        self.prefetch = prefetch
        self._name = f"tokengate-dask-{next(_EXECUTORS)}"
        self._cond = threading.Condition(threading.Lock())
        self._threads_of: dict[str, int] = {}
        self._map = WorkerMap(self._fetch_workers())
        #: non-lead batches in flight per worker
        self._busy: dict[str, int] = {}
        self._backends: dict[tuple[str, int], DaskBackend] = {}
        self._by_token: dict[TaskToken[Any], _Batch] = {}
        self._by_key: dict[str, _Batch] = {}
        self._calls_per_worker: dict[str, int] = {}
        self._lead_ops: dict[str, bool] = {}
        self._functions: dict[Callable[..., Any], _remote.FunctionRef] = {}
        self._done: SimpleQueue[Future | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._sleeping = False
        self._stopping = False
        self._stopped = threading.Event()
        self._address = client.strip() if isinstance(client, str) else None
        self._connect_timeout = connect_timeout

    #: The executor name this factory serves: tags ``executor: "dask"`` of a coordinator made
    #: with ``executor=DaskExecutor(...)`` reach this object (not the default client).
    name = "dask"

    # ------------------------------------------------------------------ public face
    @property
    def cores(self) -> int:
        """The coordinator's ``cores`` when it is not given: one core domain per worker (at
        least 1)."""
        return max(1, len(self._map.live))

    @property
    def client(self) -> distributed.Client:
        """The Dask client the executor submits through."""
        result: distributed.Client = self._client
        return result

    @property
    def workers(self) -> tuple[str, ...]:
        """Addresses of the cluster's live workers, in address order (as last seen)."""
        return self._map.live

    @property
    def worker_count(self) -> int:
        """How many workers the cluster has (as last seen): the ``cores`` that gives one core
        domain per worker."""
        return len(self._map.live)

    def domain_workers(self) -> dict[int, str]:
        """The worker address of every core domain in use: ``{core_id: address}``."""
        return self._map.assignments()

    def calls_per_worker(self) -> dict[str, int]:
        """Calls sent to each worker so far: ``{address: count}``."""
        with self._cond:
            return dict(self._calls_per_worker)

    def __call__(self, domain: ExecutorDomain) -> DaskBackend:
        """Make the backend of one core domain (called by the coordinator).

        Raises:
            DaskExecutorError: the client was closed since.
        """
        with self._cond:
            if (
                self._owns_client
                and self._address is not None
                and not self._backends
                and str(self._client.status) in {"closed", "closing", "failed"}
            ):
                # an executor given an address reconnects for its next coordinator
                self._client, _ = resolve_client(self._address, self._connect_timeout)
            check_open(self._client)
            backend = DaskBackend(self, domain)
            self._backends[(domain.coordinator_name, domain.core_id)] = backend
            if not self._threads:
                self._stopping = False
                self._stopped.clear()
                self._start_threads()
        return backend

    def __repr__(self) -> str:
        return (
            f"<DaskExecutor {self._name} scheduler={self._client.scheduler.address} "
            f"workers={self.worker_count}>"
        )

    # ------------------------------------------------------------------ cluster
    def _fetch_workers(self) -> list[str]:
        workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
        self._threads_of = {
            address: max(1, int(info.get("nthreads", 1) or 1)) for address, info in workers.items()
        }
        return list(workers)

    def _start_threads(self) -> None:
        for role, target in (
            ("sender", self._sender),
            ("collector", self._collector),
            ("watchdog", self._watchdog),
        ):
            thread = threading.Thread(target=target, name=f"{self._name}-{role}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _backend_closed(self, backend: DaskBackend) -> None:
        with self._cond:
            key = (backend.coordinator_name, backend.core_id)
            if self._backends.get(key) is backend:
                del self._backends[key]
            if self._backends:
                return
            self._stopping = True
            self._stopped.set()
            # nothing of a finished coordinator may hold a worker thread for the next one
            self._by_key.clear()
            self._by_token.clear()
            self._busy.clear()
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        self._done.put(None)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(2.0)
        if self._owns_client:
            try:
                self._client.close(timeout=5)
            except Exception:
                _log.exception("closing the Dask client of %s failed", self._name)

    def _is_lead(self, token: TaskToken[Any]) -> bool:
        operation = token.operation_type
        lead = self._lead_ops.get(operation)
        if lead is None:
            lead = self._lead_ops[operation] = token.tags.get("external_calls") is not None
        return lead

    def _wake(self) -> None:
        """Called under the lock after queueing work."""
        if self._sleeping:
            self._cond.notify_all()

    # ------------------------------------------------------------------ sender
    def _sender(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if self._stopping:
                    return
                work, wait = self._ready_work()
                if not work:
                    self._sleeping = True
                    cond.wait(wait)
                    self._sleeping = False
                    continue
            for backend, tokens, lead, worker in work:
                try:
                    self._send(backend, tokens, lead, worker)
                except BaseException as exc:  # never lose a token to a bug here
                    _log.exception("sending a batch of core %d failed", backend.core_id)
                    for token in tokens:
                        token.set_exception(
                            DaskExecutorError(f"sending the call to Dask failed: {exc!r}")
                        )

    def _ready_work(self) -> tuple[list[_Work], float | None]:
        """Under the lock: the batches to send now, and how long to sleep otherwise."""
        now = _perf()
        work: list[_Work] = []
        wait: float | None = None
        limit = self.max_batch
        busy = self._busy
        for backend in list(self._backends.values()):
            leads = backend._leads
            while leads:
                work.append((backend, [leads.popleft()], True, None))
            pending = backend._pending
            if not pending:
                continue
            if not any(not b.lead for b in backend._batches):
                moved = self._map.rebalance(backend.core_id)
                if moved is not None:
                    _log.info(
                        "core %d moves from the Dask worker %s to %s (it was idle and %s "
                        "serves fewer domains)",
                        backend.core_id,
                        moved[0],
                        moved[1],
                        moved[1],
                    )
            worker = self._map.worker_of(backend.core_id)
            if worker is None:
                work.append((backend, list(pending), False, None))
                pending.clear()
                continue
            slots = self._threads_of.get(worker, 1) + self.prefetch
            due = backend._oldest + self.max_delay
            while pending and busy.get(worker, 0) < slots and (len(pending) >= limit or due <= now):
                batch = [pending.popleft() for _ in range(min(limit, len(pending)))]
                busy[worker] = busy.get(worker, 0) + 1
                work.append((backend, batch, False, worker))
                backend._oldest = now
            if pending and busy.get(worker, 0) < slots:
                wait = due - now if wait is None else min(wait, due - now)
        return work, wait

    def _function_ref(self, token: TaskToken[Any]) -> _remote.FunctionRef:
        func = token.func
        ref = self._functions.get(func)
        if ref is None:
            ref = _reference(token.operation_type, func)
            if len(self._functions) > 1024:
                self._functions.clear()
            self._functions[func] = ref
        return ref

    def _send(
        self, backend: DaskBackend, tokens: list[TaskToken[Any]], lead: bool, slot: str | None
    ) -> None:
        """Send one batch; ``slot`` is the worker whose thread ``_ready_work`` reserved for
        it (None for a lead or when no worker is known)."""
        sent = False
        try:
            sent = self._send_batch(backend, tokens, lead, slot)
        finally:
            if slot is not None and not sent:
                self._release_slot(slot)

    def _release_slot(self, worker: str) -> None:
        with self._cond:
            left = self._busy.get(worker, 0) - 1
            if left > 0:
                self._busy[worker] = left
            else:
                self._busy.pop(worker, None)
            self._cond.notify_all()

    def _send_batch(
        self, backend: DaskBackend, tokens: list[TaskToken[Any]], lead: bool, slot: str | None
    ) -> bool:
        if self._closed_client():
            closed = DaskExecutorError(
                f"the Dask client {self._client.id} is {self._client.status}: keep the client "
                "open while the coordinator runs"
            )
            for token in tokens:
                if not token.done():
                    token.set_exception(closed)
            return False
        functions: list[_remote.FunctionRef] = []
        index: dict[_remote.FunctionRef, int] = {}
        calls: list[tuple[int, bytes]] = []
        started: list[TaskToken[Any]] = []
        for token in tokens:
            if token.done():
                continue
            try:
                ref = self._function_ref(token)
            except Exception as exc:
                token.set_exception(
                    DaskExecutorError(
                        f"{token.operation_type} cannot be sent to a Dask worker: {exc}; define "
                        "it at module level of a module the workers can import"
                    )
                )
                continue
            try:
                contexts = _remote_contexts(token)
                payload = _remote.dumps((token.args, token.kwargs, contexts))
            except Exception as exc:
                token.set_exception(_argument_error(token, exc))
                continue
            if not token.set_running():
                continue  # killed, drained or timed out while queued: it never runs
            position = index.get(ref)
            if position is None:
                position = index[ref] = len(functions)
                functions.append(ref)
            calls.append((position, payload))
            started.append(token)
        if not started:
            return False
        worker = slot or self._map.worker_of(backend.core_id)
        if worker is None:
            error = DaskExecutorError(
                f"the Dask cluster has no worker to run core {backend.core_id}; start a worker "
                "('dask worker <scheduler address>') and call again"
            )
            for token in started:
                token.set_exception(error)
            return False
        batch = _Batch(backend, started, worker, lead)
        batch.slot = slot
        key = f"tokengate-{backend.core_id}-{uuid.uuid4().hex}"
        with self._cond:
            for token in started:
                self._by_token[token] = batch
            self._by_key[key] = batch
            backend._batches.add(batch)
            backend.calls_sent += len(started)
            backend.batches_sent += 1
            self._calls_per_worker[worker] = self._calls_per_worker.get(worker, 0) + len(started)
        try:
            future = self._client.submit(
                _remote.run_batch,
                functions,
                calls,
                lead,
                key=key,
                workers=[worker],
                allow_other_workers=False,
                pure=False,
            )
        except Exception as exc:
            self._forget(batch, key)
            error = DaskExecutorError(
                f"the Dask client could not submit the call ({exc!r}); is the client closed? "
                "Keep it open while the coordinator runs"
            )
            for token in started:
                token.set_exception(error)
            return True  # _forget released the slot
        batch.future = future
        future.add_done_callback(self._done.put)
        return True

    def _forget(self, batch: _Batch, key: str | None = None) -> None:
        with self._cond:
            slot, batch.slot = batch.slot, None
            if slot is not None:
                left = self._busy.get(slot, 0) - 1
                if left > 0:
                    self._busy[slot] = left
                else:
                    self._busy.pop(slot, None)
            for token in batch.tokens:
                if self._by_token.get(token) is batch:
                    del self._by_token[token]
            if key is None and batch.future is not None:
                key = str(batch.future.key)
            if key is not None:
                self._by_key.pop(key, None)
            batch.backend._batches.discard(batch)
            self._cond.notify_all()

    # ------------------------------------------------------------------ collector
    def _collector(self) -> None:
        done = self._done
        while True:
            first = done.get()
            if first is None:
                return
            futures = [first]
            while True:
                try:
                    more = done.get_nowait()
                except Empty:
                    break
                if more is None:
                    self._settle(futures)
                    return
                futures.append(more)
            self._settle(futures)

    def _settle(self, futures: list[Future]) -> None:
        """End the tokens of finished batches; never lets an error stop the collector."""
        try:
            self._finish_futures(futures)
        except BaseException as exc:
            _log.exception("%s: settling %d batches failed", self._name, len(futures))
            for future in futures:
                with self._cond:
                    batch = self._by_key.get(str(future.key))
                if batch is None:
                    continue
                error = DaskExecutorError(f"reading the outcome of this call failed: {exc!r}")
                for token in batch.tokens:
                    if not token.done():
                        token.set_exception(error)
                self._forget(batch)

    def _finish_futures(self, futures: list[Future]) -> None:
        finished: list[tuple[_Batch, Future]] = []
        for future in futures:
            with self._cond:
                batch = self._by_key.get(str(future.key))
            if batch is None:
                continue  # already settled (worker lost, shutdown)
            if future.status == "finished":
                finished.append((batch, future))
            else:
                self._fail_batch(batch, future)
        if finished:
            try:
                results = self._client.gather([f for _, f in finished])
            except BaseException:
                results = None
            if results is None:
                for batch, future in finished:
                    try:
                        self._complete(batch, future.result(timeout=30))
                    except BaseException:
                        self._fail_batch(batch, future)
            else:
                for (batch, _), result in zip(finished, results, strict=True):
                    self._complete(batch, result)

    def _complete(self, batch: _Batch, result: tuple[str, list[_remote.Outcome]]) -> None:
        where, outcomes = result
        for token, (kind, data) in zip(batch.tokens, outcomes, strict=True):
            if token.done():
                continue  # killed or timed out meanwhile: the late outcome is dropped
            try:
                value = pickle.loads(data)
            except Exception as exc:
                token.set_exception(
                    DaskExecutorError(
                        f"the {'result' if kind == _remote.OK else 'exception'} of "
                        f"{token.token_id} from the Dask worker {where} could not be unpickled "
                        f"here: {exc!r}; make its type importable in the client's process"
                    )
                )
                continue
            if kind == _remote.OK:
                token.set_result(value)
            else:
                token.set_exception(value)
        self._forget(batch)

    def _fail_batch(self, batch: _Batch, future: Future) -> None:
        status = future.status
        if status == "cancelled":
            error: BaseException = DaskExecutorError(
                f"the Dask task of this call was cancelled on the Dask worker {batch.worker} "
                "(client.cancel, client.restart or a client that closed)"
            )
        else:
            try:
                exc = future.exception(timeout=5)
            except BaseException as problem:
                exc = problem
            if type(exc).__name__ == "KilledWorker":
                error = DaskWorkerLostError(
                    f"the Dask worker {batch.worker} died while running this call: {exc}"
                )
            else:
                error = DaskExecutorError(
                    f"Dask failed the task of this call on the Dask worker {batch.worker}: {exc!r}"
                )
        for token in batch.tokens:
            if not token.done():
                token.set_exception(error)
        self._forget(batch)

    # ------------------------------------------------------------------ watchdog
    def _watchdog(self) -> None:
        last = _perf()
        stopped = self._stopped
        while not stopped.wait(WATCH_INTERVAL):
            busy = bool(self._by_key)
            if not busy and _perf() - last < IDLE_WATCH_INTERVAL:
                continue
            last = _perf()
            try:
                live = self._fetch_workers()
            except Exception as exc:
                if self._closed_client():
                    self._client_closed()
                    return
                _log.warning("%s could not list the Dask workers: %r", self._name, exc)
                continue
            try:
                self._reconcile(live)
            except Exception:
                _log.exception("%s: following the cluster's workers failed", self._name)

    def _closed_client(self) -> bool:
        return str(self._client.status) in {"closed", "closing", "failed"}

    def _reconcile(self, live: list[str]) -> None:
        moved = self._map.update(live)
        alive = set(live)
        with self._cond:
            lost = [b for b in self._by_key.values() if b.worker not in alive]
        for core_id, old, new in moved:
            _log.warning(
                "the Dask worker %s left the cluster; core %d moves to %s",
                old,
                core_id,
                new or "(no worker left: it waits for one)",
            )
        for batch in lost:
            new = self._map.assignments().get(batch.backend.core_id)
            error = DaskWorkerLostError(
                f"the Dask worker {batch.worker} left the cluster (it died or was retired) "
                f"before the batch of this call finished; the call may or may not have run "
                f"there and is not run again. Only the calls sent to that worker failed; core "
                f"{batch.backend.core_id} now runs on {new or 'the next worker that joins'}"
            )
            for token in batch.tokens:
                if not token.done():
                    token.set_exception(error)
            if batch.future is not None:
                batch.future.cancel()
            self._forget(batch)

    def _client_closed(self) -> None:
        with self._cond:
            batches = list(self._by_key.values())
        for batch in batches:
            error = DaskExecutorError(
                f"the Dask client {self._client.id} closed while this call ran on "
                f"{batch.worker}; keep the client open while the coordinator runs"
            )
            for token in batch.tokens:
                if not token.done():
                    token.set_exception(error)
            self._forget(batch)


def _reference(operation: str, func: Callable[..., Any]) -> _remote.FunctionRef:
    """How ``func`` travels: by module and name when the workers can import it so, else by
    value (cloudpickle: ``__main__``, closures, lambdas, modules registered by value)."""
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or ""
    by_name = bool(module) and module != "__main__" and "<" not in qualname
    if by_name and module in cloudpickle.list_registry_pickle_by_value():
        by_name = False
    if by_name:
        found: Any = sys.modules.get(module)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is not func and getattr(found, "__wrapped__", None) is not func:
            by_name = False
    if by_name:
        return operation, module, qualname, None
    return operation, module, qualname, _remote.dumps_function(func)


def _remote_contexts(token: TaskToken[Any]) -> list[tuple[type, object]]:
    getter = getattr(token, "remote_contexts", None)
    if getter is None:
        return []
    return list(getter())


def _argument_error(token: TaskToken[Any], exc: Exception) -> DaskExecutorError:
    """Name the argument of ``token`` that cannot be pickled (or the call as a whole)."""
    try:
        bound = inspect.signature(token.func).bind(*token.args, **token.kwargs)
        named: list[tuple[str, object]] = list(bound.arguments.items())
    except (TypeError, ValueError):
        named = [(f"#{i}", a) for i, a in enumerate(token.args)] + list(token.kwargs.items())
    culprit = "the call"
    reason: BaseException = exc
    for name, value in named:
        try:
            _remote.dumps(value)
        except Exception as inner:
            culprit = f"argument {name!r} ({type(value).__qualname__})"
            reason = inner
            break
    error = DaskExecutorError(
        f"{culprit} of {token.operation_type} cannot be pickled to go to a Dask worker: "
        f"{reason}; pass picklable arguments, or run this operation with another executor"
    )
    error.__cause__ = exc
    return error
