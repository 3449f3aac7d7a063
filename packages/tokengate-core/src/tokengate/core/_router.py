"""Routing: from a token to the backend of its core domain.

Per operation (once, then cached): the valid cores of its weight and its executor's row of
backends. Per token: the routing extensions (conductor) or the policy's choice, else the
sticky pin or the core of its weight with the fewest tokens in flight (ties taken in turn);
then admission
(``WAITING`` → ``ADMITTED``), a storage slot when the operation has a tier, and the hand-off
to the domain's backend. Locality is decided here, before and whatever the executor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from ._enums import TokenState
from ._errors import PluginError, RoutingError
from ._executors import AUTO, ExecutorBackend
from ._plan import OperationPlan, plan_of
from ._sticky import StickyRegistry
from ._storage import StorageGate

if TYPE_CHECKING:
    from ._backends import BackendTable
    from ._token import TaskToken

__all__ = ("Router",)

_log = logging.getLogger("tokengate.routing")
_storage_log = logging.getLogger("tokengate.storage")

_WAITING = TokenState.WAITING
_ADMITTED = TokenState.ADMITTED
_WAITING_ONLY = frozenset({_WAITING})
_TERMINAL = frozenset(
    {TokenState.COMPLETED, TokenState.FAILED, TokenState.KILLED, TokenState.TIMEOUT}
)

#: The pin of a token routed without a sticky key: its terminal move still releases it, which
#: uncounts the token on its core.
_UNKEYED: Any = object()

#: Per operation: its valid cores and its executor's backends by core id.
_Route = tuple[tuple[int, ...], list[ExecutorBackend | None], str]


class Router:
    """Chooses the core of every token and hands it to that domain's backend.

    Args:
        cores: number of core domains (1..cores).
        workers_per_core: accepted for the coordinator's call; placement does not use it
            (every core starts with no token in flight).
        backends: the coordinator's backends.
        storage: the storage tiers' slot counters.
        default_executor: the executor of operations whose tags name none.
    """

    __slots__ = (
        "_auto",
        "_backends",
        "_cores",
        "_counters",
        "_default",
        "_lock",
        "_routes",
        "_stamps",
        "_sticky",
        "_storage",
        "_turn",
    )

    def __init__(
        self,
        cores: int,
        workers_per_core: int,
        backends: BackendTable,
        storage: StorageGate,
        default_executor: str,
    ) -> None:
        self._cores = cores
        #: Tokens in flight per core (index 0 unused): counted when placed, uncounted by the
        #: terminal move (``release_sticky``), both under ``_lock``.
        self._counters = [0] * (cores + 1)
        #: When each core was last given a token (a sequence number): among equally loaded
        #: cores the least recently given one wins, so equal cores take turns.
        self._stamps = [0] * (cores + 1)
        self._turn = 0
        self._backends = backends
        self._storage = storage
        self._default = default_executor
        self._sticky = StickyRegistry()
        self._lock = threading.Lock()
        self._routes: dict[OperationPlan, _Route] = {}
        #: How ``executor: auto`` resolves for an operation (threads unless told otherwise).
        self._auto: Callable[[OperationPlan], str] = _threads_for_auto

    # ------------------------------------------------------------------ per operation
    def executor_of(self, plan: OperationPlan) -> str:
        """The executor name ``plan``'s tokens run on (its tag, else the default)."""
        name = plan.executor or self._default
        return self._auto(plan) if name == AUTO else name

    def set_auto(self, choose: Callable[[OperationPlan], str]) -> None:
        """Decide ``executor: auto`` with ``choose(plan) -> executor name`` from now on."""
        self._auto = choose
        self._routes.clear()

    def move_operation(self, plan: OperationPlan, executor: str) -> None:
        """Send ``plan``'s next tokens to ``executor`` (tokens already handed off stay)."""
        cores = self._cores_for(plan)
        self._routes[plan] = (cores, self._backends.row(executor), executor)

    def _route_of(self, plan: OperationPlan) -> _Route:
        route = self._routes.get(plan)
        if route is None:
            name = self.executor_of(plan)
            try:
                row = self._backends.row(name)
            except KeyError as exc:
                raise RoutingError(
                    f"{plan.operation_type} runs on executor {name!r}, which is not registered "
                    f"here: {exc.args[0] if exc.args else exc}"
                ) from None
            route = self._routes[plan] = (self._cores_for(plan), row, name)
        return route

    def _cores_for(self, plan: OperationPlan) -> tuple[int, ...]:
        total = self._cores
        try:
            chosen = tuple(plan.policy.cores_for(plan.weight, total))
        except Exception as exc:
            raise PluginError(
                f"routing policy {plan.policy!r} failed for {plan.operation_type}: {exc!r}"
            ) from exc
        if not chosen or any(not isinstance(c, int) or not 1 <= c <= total for c in chosen):
            raise PluginError(
                f"routing policy {plan.policy!r} gave cores {chosen!r} for "
                f"{plan.weight.value} on {total} cores; expected a non-empty subset of "
                f"1..{total}"
            )
        return chosen

    # ------------------------------------------------------------------ per token
    def route(self, token: TaskToken[Any]) -> None:
        """Route one ``WAITING`` token and hand it to its backend.

        Raises:
            PluginError: a routing extension or policy failed.
            RoutingError: anything else went wrong (the caller fails the token with it).
        """
        backend = self._place(token)
        if backend is not None and self._admit(token, backend):
            backend.submit((token,))

    def route_many(
        self, tokens: Iterable[TaskToken[Any]]
    ) -> list[tuple[TaskToken[Any], BaseException]]:
        """Route several tokens, handing them to each backend in one batch.

        Returns the tokens whose routing failed, with the error (the caller fails them).
        """
        batches: dict[int, tuple[ExecutorBackend, list[TaskToken[Any]]]] = {}
        failed: list[tuple[TaskToken[Any], BaseException]] = []
        for token in tokens:
            try:
                backend = self._place(token)
                if backend is None or not self._admit(token, backend):
                    continue
            except BaseException as exc:
                failed.append((token, exc))
                continue
            entry = batches.get(id(backend))
            if entry is None:
                batches[id(backend)] = (backend, [token])
            else:
                entry[1].append(token)
        for backend, batch in batches.values():
            try:
                backend.submit(batch)
            except BaseException as exc:
                failed.extend((token, exc) for token in batch if not token.done())
        return failed

    def _place(self, token: TaskToken[Any]) -> ExecutorBackend | None:
        """Choose the token's core and backend; None when it ended while being routed."""
        plan = plan_of(token)
        cores, row, name = self._route_of(plan)
        core: int | None = None
        candidate = 0
        exts = plan.ext_route if token._ext is not None else plan.ext_route_free
        if exts:
            candidate = self._candidate(cores)
            for ext in exts:
                try:
                    core = ext.route(token, candidate)
                except Exception as exc:
                    raise PluginError(
                        f"extension {ext!r} failed routing {token.token_id}: {exc!r}"
                    ) from exc
                if core is not None:
                    break
        if core is None and plan.chooses_cores:
            try:
                core = plan.policy.choose_core(
                    token, candidate or self._candidate(cores), self._cores
                )
            except Exception as exc:
                raise PluginError(
                    f"routing policy {plan.policy!r} failed for {token.token_id}: {exc!r}"
                ) from exc
        key: Hashable = None
        pin: int | None = None
        if core is None:
            if plan.key_fn is not None:
                # Outside the routing lock: fingerprinting and hashing run user code
                # (__hash__, __eq__), which must not stall other threads' routing. The pin is
                # what release needs, fixed now: a body that mutates its argument later
                # cannot strand it.
                # Both are plain values (an int, the fingerprint): a token holding a pin adds
                # no container of its own for the garbage collector to count.
                key = plan.key_fn(token.args, token.kwargs)
                pin = hash((plan.anchor, hash(key)))
        elif type(core) is not int or not 1 <= core <= self._cores:
            raise RoutingError(
                f"a plugin routed token {token.token_id} to core {core!r}; this coordinator "
                f"has cores 1..{self._cores}"
            )
        counters = self._counters
        with self._lock:
            if core is None:
                core = self._candidate(cores)
                if pin is not None:
                    token._pin = pin  # before the hold: releasing a pin never taken is a no-op
                    core = self._sticky.acquire(pin, core)
                    token._sticky_key = key  # the fingerprint; sticky_key adds the anchor
            if pin is None:
                token._pin = _UNKEYED  # released by the terminal move like a key's pin
            counters[core] += 1
            turn = self._turn = self._turn + 1
            self._stamps[core] = turn
            token._core_id = core
        if token._tstate in _TERMINAL:
            # killed or timed out while being routed: its terminal move may have missed the pin
            self.release_sticky(token)
            return None
        backend = row[core]
        if backend is None:
            backend = self._backends.get(name, core)
        token._backend = backend
        return backend

    def _candidate(self, cores: tuple[int, ...]) -> int:
        """The core of ``cores`` with the fewest tokens in flight; among equal ones, the one
        given a token least recently (so equal cores take turns)."""
        counters = self._counters
        stamps = self._stamps
        best = cores[0]
        low = counters[best]
        last = stamps[best]
        for core in cores:
            count = counters[core]
            if count < low or (count == low and stamps[core] < last):
                best = core
                low = count
                last = stamps[core]
        return best

    def _admit(self, token: TaskToken[Any], backend: ExecutorBackend) -> bool:
        """``WAITING`` → ``ADMITTED``, and a storage slot when the operation has a tier.
        False when the token must not be handed off now (it ended, or waits for a slot)."""
        if not token._move(_WAITING_ONLY, _ADMITTED):
            return False
        tier = plan_of(token).storage
        if tier is None:
            return True
        with token._lock:  # a kill cannot slip between taking the slot and recording it
            if token._tstate is not _ADMITTED:
                return False
            if not self._storage.try_acquire(tier, token):
                _storage_log.debug("token %s waits for a %s slot", token.token_id, tier)
                return False
            token._holds_slot = True
        return True

    # ------------------------------------------------------------------ release steps
    def release_sticky(self, token: TaskToken[Any]) -> None:
        """Release the token's pin exactly once (routing and the terminal move may race): the
        hold on its sticky key, if it has one, and its count in flight on its core."""
        with self._lock:
            self._release_pin(token)

    def release_sticky_many(self, tokens: list[TaskToken[Any]]) -> None:
        """:meth:`release_sticky` for a batch of tokens, under one lock."""
        release = self._release_pin
        with self._lock:
            for token in tokens:
                release(token)

    def _release_pin(self, token: TaskToken[Any]) -> None:
        """With the lock held: see :meth:`release_sticky`."""
        pin = token._pin
        if pin is None:
            return
        if pin is _UNKEYED:
            token._pin = None
        else:
            self._sticky.release_token(token)
        counters = self._counters
        core = token._core_id
        if core is not None and counters[core] > 0:
            counters[core] -= 1

    def release_slot(self, token: TaskToken[Any]) -> None:
        """Give back the token's storage slot (exactly once) and pass it to the oldest parked
        token still waiting, which then goes to its backend."""
        tier = plan_of(token).storage
        if tier is None:
            return
        with token._lock:  # a kill may race the body's end here: exactly one of them releases
            if not token._holds_slot:
                return
            token._holds_slot = False
        storage = self._storage
        while True:
            nxt = storage.release(tier)
            if nxt is None:
                return
            with nxt._lock:
                live = nxt._tstate is _ADMITTED
                if live:
                    nxt._holds_slot = True
            if not live:  # it ended since it was parked: the slot goes on to the next one
                continue
            backend = nxt._backend
            if backend is None:  # cannot happen: parked tokens were placed first
                nxt.set_exception(RoutingError(f"token {nxt.token_id} lost its backend"))
                continue
            backend.submit((nxt,))
            return

    # ------------------------------------------------------------------ introspection
    def sticky_snapshot(self, tokens: Iterable[TaskToken[Any]]) -> dict[str, int]:
        """Live sticky pins: readable key → core.

        Only a copy of ``(pin, core)`` is taken under the routing lock; the keys' text (user
        ``__repr__``) is made outside it, from ``tokens`` (the in-flight tokens) that hold
        each pin.
        """
        with self._lock:
            entries = self._sticky.entries()
        if not entries:
            return {}
        keys: dict[Hashable, Hashable] = {}
        wanted = {pin for pin, _ in entries}
        for token in tokens:
            pin = token._pin
            if pin is not None and pin in wanted and pin not in keys:
                keys[pin] = token.sticky_key
        snapshot: dict[str, int] = {}
        for pin, core in entries:
            key = keys.get(pin)
            if key is None:  # its last holder is ending right now
                key = f"#{pin & 0xFFFFFFFFFFFF:x}" if isinstance(pin, int) else pin
            snapshot[StickyRegistry.describe(key)] = core
        return snapshot

    def in_flight(self) -> dict[int, int]:
        """Tokens placed and not yet ended, per core: ``{core: count}``."""
        with self._lock:
            counters = self._counters
            return {core: counters[core] for core in range(1, self._cores + 1)}

    @property
    def sticky_pins(self) -> int:
        """How many sticky keys are pinned now."""
        return len(self._sticky)


def _threads_for_auto(plan: OperationPlan) -> str:
    return "thread"
