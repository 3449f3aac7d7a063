"""Conductor domains: the per-coordinator registry, the active-domain context variable and
the public read-only views (``get_active_seed``, ``conductor_snapshot``, ``DomainInfo``).

Counting model (routing layers 7, 8, 12): a domain's ``pending`` is the number of its
non-terminal members (the lead included) plus one for each of its open nested domains. A
domain is in the registry exactly while ``pending > 0``. All counts change under the
registry's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokengate.core import CoordinatorView

__all__ = (
    "ACTIVE_DOMAIN",
    "STATE_KEY",
    "Domain",
    "DomainInfo",
    "DomainRegistry",
    "conductor_snapshot",
    "get_active_seed",
    "registry_of",
)

_log = logging.getLogger("tokengate.conductor")

#: Key of the conductor's per-coordinator state (``OperationsCoordinator.extension_state``).
STATE_KEY = "tokengate.conductor"

#: Length of the seed prefix used as the key of :func:`conductor_snapshot`.
SNAPSHOT_KEY_LENGTH = 12


class Domain:
    """One live (or closed) conductor domain. Mutable fields change under the registry lock.

    Attributes:
        seed: the lead's seed (the digest of its token id and its call list).
        core_id: the core the domain is pinned to; None until its lead is routed.
        lead_token_id: the token id of the lead that opened it.
        parent: the enclosing domain this one holds one count on while it is open.
        depth: 0 for a top-level domain, 1 + the parent's depth for a nested one.
        pending: members not yet terminal plus open nested domains.
        registry: the registry (of one coordinator) the domain belongs to.
    """

    __slots__ = ("core_id", "depth", "lead_token_id", "parent", "pending", "registry", "seed")

    seed: str
    core_id: int | None
    lead_token_id: str
    parent: Domain | None
    depth: int
    pending: int
    registry: DomainRegistry

    def __init__(
        self,
        seed: str,
        core_id: int | None,
        lead_token_id: str,
        parent: Domain | None,
        registry: DomainRegistry,
    ) -> None:
        self.seed = seed
        self.core_id = core_id
        self.lead_token_id = lead_token_id
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.pending = 1
        self.registry = registry

    def __repr__(self) -> str:
        return (
            f"<conductor Domain {self.seed[:SNAPSHOT_KEY_LENGTH]} core={self.core_id} "
            f"pending={self.pending} lead={self.lead_token_id}>"
        )


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A snapshot of one live conductor domain, as returned by :func:`conductor_snapshot`.

    Attributes:
        seed: the full seed of the domain (the lead's digest).
        core_id: the core every member of the domain is routed to; None only between the
            lead's creation and its routing (for instance while admission is paused).
        pending: members not yet terminal (the lead included) plus open nested domains; the
            domain closes when it reaches zero.
        lead_token_id: the token id of the lead that opened the domain.
        parent_seed: the seed of the enclosing domain for a nested domain, else None.
        depth: 0 for a top-level domain, 1 for a domain nested in it, and so on.
    """

    seed: str
    core_id: int | None
    pending: int
    lead_token_id: str
    parent_seed: str | None
    depth: int


#: The domain the running code belongs to. Set by the worker around a member's body; it
#: follows the code into threads started with ``contextvars.copy_context().run``.
ACTIVE_DOMAIN: ContextVar[Domain | None] = ContextVar("tokengate_conductor_domain", default=None)


class DomainRegistry:
    """The live conductor domains of one coordinator, keyed by seed.

    Every method that changes a count takes the registry's lock; none of them calls out of
    this module while holding it.
    """

    __slots__ = ("_live", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._live: dict[str, Domain] = {}

    def open_lead(self, seed: str, lead_token_id: str, outer: Domain | None) -> Domain:
        """Count a new lead: open its domain (pending = 1) and return it.

        A lead created inside ``outer`` opens a nested domain on ``outer``'s core that holds
        one count on ``outer`` until it closes. A lead whose seed is already live (a digest
        collision) joins that domain instead: the two domains merge onto one core.
        """
        with self.lock:
            live = self._live.get(seed)
            if live is not None:
                live.pending += 1
                _log.info(
                    "lead %s has the seed %s of a live domain (digest collision): the domains "
                    "merge onto core %s",
                    lead_token_id,
                    seed[:SNAPSHOT_KEY_LENGTH],
                    live.core_id,
                )
                return live
            parent = self._acquire(outer) if outer is not None else None
            domain = Domain(
                seed, None if parent is None else parent.core_id, lead_token_id, parent, self
            )
            self._live[seed] = domain
        _log.debug("domain %r opened", domain)
        return domain

    def join(self, domain: Domain) -> Domain:
        """Count a new member of ``domain`` (pre-registration at creation) and return the
        domain it was counted into (``domain`` itself unless it had to be reopened into a
        live domain with the same seed)."""
        with self.lock:
            return self._acquire(domain)

    def _acquire(self, domain: Domain) -> Domain:
        if domain.pending > 0:
            domain.pending += 1
            return domain
        # The domain is closed: its lead ended (killed or timed out while its body kept
        # running, or a thread it started outlived it) and code of the domain still creates
        # tokens. Reopen it on the same core so those tokens keep the domain's locality.
        live = self._live.get(domain.seed)
        if live is not None:
            live.pending += 1
            return live
        domain.pending = 1
        self._live[domain.seed] = domain
        if domain.parent is not None:
            domain.parent = self._acquire(domain.parent)
        _log.info(
            "domain %r reopened: code of the domain created a token after the domain closed",
            domain,
        )
        return domain

    def release(self, domain: Domain) -> None:
        """Lower ``domain``'s pending count by one (a member reached its terminal state).

        At zero the domain is removed and releases its count on its parent, which may close
        in turn.
        """
        closed: list[Domain] = []
        with self.lock:
            current: Domain | None = domain
            while current is not None:
                if current.pending <= 0:
                    _log.error("domain %r released more often than it was counted", current)
                    break
                current.pending -= 1
                if current.pending:
                    break
                if self._live.get(current.seed) is current:
                    del self._live[current.seed]
                closed.append(current)
                current = current.parent
        for done in closed:
            _log.debug("domain %r closed", done)

    def pin(self, domain: Domain, candidate: int) -> int:
        """Pin ``domain`` to ``candidate`` unless it already has a core; return its core."""
        with self.lock:
            core = domain.core_id
            if core is None:
                core = domain.core_id = candidate
        return core

    def snapshot(self) -> dict[str, DomainInfo]:
        """The live domains: seed prefix → :class:`DomainInfo`."""
        with self.lock:
            infos = [
                DomainInfo(
                    d.seed,
                    d.core_id,
                    d.pending,
                    d.lead_token_id,
                    None if d.parent is None else d.parent.seed,
                    d.depth,
                )
                for d in self._live.values()
            ]
        result: dict[str, DomainInfo] = {}
        for info in infos:
            key = info.seed[:SNAPSHOT_KEY_LENGTH]
            result[info.seed if key in result else key] = info
        return result

    def __len__(self) -> int:
        return len(self._live)


def registry_of(coordinator: CoordinatorView) -> DomainRegistry:
    """The conductor registry of ``coordinator`` (made on first use)."""
    return coordinator.extension_state(STATE_KEY, DomainRegistry)


def get_active_seed() -> str | None:
    """The seed of the conductor domain the calling code runs in, or None.

    Inside the body of a lead or of any member of a domain it is the domain's seed; it
    follows the code into threads started with ``contextvars.copy_context().run`` (plain
    ``threading.Thread`` targets start with an empty context and see None).
    """
    domain = ACTIVE_DOMAIN.get()
    return None if domain is None else domain.seed


def conductor_snapshot(coordinator: CoordinatorView) -> Mapping[str, DomainInfo]:
    """The live conductor domains of ``coordinator``: seed (first 12 characters) →
    :class:`DomainInfo` (core and pending count).

    A read-only copy taken under the registry's lock. Empty once every lead and every
    member has reached a terminal state. If two live seeds share their first 12
    characters, the second is keyed by its full seed.
    """
    return MappingProxyType(registry_of(coordinator).snapshot())
