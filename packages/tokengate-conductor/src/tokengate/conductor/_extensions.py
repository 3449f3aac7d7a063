"""The token extensions the conductor hands the core: one for leads, one for everything else.

They run on the hot path of every token, so each phase is a few attribute reads for a token
that is not in a domain (``MemberExtension.on_create`` costs one ``ContextVar.get``).
The extension's own per-token state (``get_state`` / ``set_state``) holds the
:class:`Domain` a token was counted into; it is set only after the count succeeded, so
``on_terminal`` releases exactly what was counted, even when the token fails half-way
through its creation.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from tokengate.core import TaskToken, TokenExtension

from ._domains import ACTIVE_DOMAIN, Domain, DomainRegistry, registry_of
from ._seeds import DigestFunction, checked_seed

__all__ = ("LeadExtension", "MemberExtension")

_log = logging.getLogger("tokengate.conductor")
_get_active = ACTIVE_DOMAIN.get


def _own_domain(token: TaskToken[Any], domain: Domain | None) -> Domain | None:
    """``domain`` (the active one) if it belongs to the coordinator that owns ``token``."""
    if domain is None:
        return None
    if domain.registry is not registry_of(token.coordinator):
        _log.debug(
            "token %s was created inside %r of another coordinator; it is not a member",
            token.token_id,
            domain,
        )
        return None
    return domain


class _ActivatingExtension(TokenExtension):
    """Makes a counted token's domain the active domain while its body runs (on a thread of
    the coordinator's process, or, with the seed only, in another process or machine).

    Only tokens counted into a domain (state set in ``on_create``) need the later phases, so
    a token created outside every domain costs nothing past ``on_create``."""

    only_with_state = True

    def domain_of(self, token: TaskToken[Any]) -> Domain | None:
        """The domain ``token`` was counted into, or None."""
        domain = self.get_state(token)
        return domain if isinstance(domain, Domain) else None

    def before_execute(self, token: TaskToken[Any]) -> object:
        domain = self.domain_of(token)
        if domain is None:
            return None
        return ACTIVE_DOMAIN.set(domain)

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        if isinstance(state, contextvars.Token) and state.var is ACTIVE_DOMAIN:
            ACTIVE_DOMAIN.reset(state)
        elif ACTIVE_DOMAIN.get() is not None:
            # Not our marker (the core paired states with another extension): never leak a
            # domain into the next body this worker runs.
            ACTIVE_DOMAIN.set(None)

    def on_terminal(self, token: TaskToken[Any]) -> None:
        domain = self.domain_of(token)
        if domain is not None:
            domain.registry.release(domain)

    def remote_context(self, token: TaskToken[Any]) -> object:
        """The domain's seed, core and lead, for a body that runs in another process."""
        domain = self.domain_of(token)
        if domain is None:
            return None
        return (domain.seed, domain.core_id, domain.lead_token_id)

    @classmethod
    def remote_scope(cls, value: object) -> contextlib.AbstractContextManager[object]:
        """Around a body in another process: ``get_active_seed()`` answers the domain's seed
        there. Tokens cannot be routed from there into the domain (it lives in the
        coordinator's process), so the stand-in domain counts nothing."""
        return _remote_domain(value)


class MemberExtension(_ActivatingExtension):
    """For every operation that is not a lead: a token created inside a domain joins it."""

    def on_create(self, token: TaskToken[Any]) -> None:
        domain = _get_active()
        if domain is None:
            return
        domain = _own_domain(token, domain)
        if domain is None:
            return
        joined = domain.registry.join(domain)
        self.set_state(token, joined)
        self.stamp_conductor_seed(token, joined.seed)

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        domain = self.domain_of(token)
        return None if domain is None else domain.core_id

    def __repr__(self) -> str:
        return "<tokengate.conductor member extension>"


class LeadExtension(_ActivatingExtension):
    """For an operation with ``external_calls``: each token opens a domain with its seed."""

    def __init__(self, calls: tuple[str, ...], policy: str, digest: DigestFunction) -> None:
        self.calls = calls
        self.policy = policy
        self.digest = digest

    def on_create(self, token: TaskToken[Any]) -> None:
        seed = checked_seed(self.digest, self.policy, token.token_id, self.calls)
        outer = _own_domain(token, _get_active())
        registry = outer.registry if outer is not None else registry_of(token.coordinator)
        domain = registry.open_lead(seed, token.token_id, outer)
        self.set_state(token, domain)
        self.stamp_conductor_seed(token, domain.seed)

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        domain = self.domain_of(token)
        if domain is None:
            return None
        core = domain.core_id
        if core is None:
            core = domain.registry.pin(domain, candidate)
            _log.debug("domain %r pinned to core %d", domain, core)
        return core

    def __repr__(self) -> str:
        return f"<tokengate.conductor lead extension calls={self.calls!r} digest={self.policy}>"


@contextlib.contextmanager
def _remote_domain(value: object) -> Iterator[object]:
    if not (isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str)):
        yield None
        return
    seed, core, lead = value
    stand_in = Domain(seed, core, str(lead), None, DomainRegistry())
    marker = ACTIVE_DOMAIN.set(stand_in)
    try:
        yield stand_in
    finally:
        ACTIVE_DOMAIN.reset(marker)
