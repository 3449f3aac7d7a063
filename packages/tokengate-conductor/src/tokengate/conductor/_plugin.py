"""The conductor plugin (entry point ``tokengate = conductor``): hook implementations only.

Register it by hand with ``plugin_manager().register(tokengate.conductor._plugin,
name="conductor")`` when entry-point autoloading is disabled.
"""

from __future__ import annotations

import logging

from tokengate.core import OperationInfo, OperationsCoordinator, TagRegistry, hookimpl

from ._domains import registry_of
from ._extensions import LeadExtension, MemberExtension
from ._seeds import digest_for
from ._tags import register_tags

__all__ = (
    "tokengate_coordinator_stopped",
    "tokengate_register_tags",
    "tokengate_token_extension",
)

_log = logging.getLogger("tokengate.conductor")

_MEMBER = MemberExtension()


@hookimpl
def tokengate_register_tags(registry: TagRegistry) -> None:
    """Contribute ``external_calls``, ``digest_policy`` and the sticky-anchor rule."""
    register_tags(registry)


@hookimpl
def tokengate_token_extension(operation: OperationInfo) -> LeadExtension | MemberExtension:
    """A lead extension for operations with ``external_calls``, the member extension for
    every other operation (any operation may be called inside a domain)."""
    calls = operation.tags.get("external_calls")
    if calls is None:
        return _MEMBER
    policy = str(operation.tags.get("digest_policy", "full"))
    names = tuple(str(name) for name in calls) if isinstance(calls, tuple | list) else ()
    return LeadExtension(names, policy, digest_for(policy))


@hookimpl
def tokengate_coordinator_stopped(coordinator: OperationsCoordinator) -> None:
    """Report conductor domains left open after every token of the coordinator ended."""
    leftovers = registry_of(coordinator).snapshot()
    if leftovers:
        described = (f"{k} (core {i.core_id}, pending {i.pending})" for k, i in leftovers.items())
        _log.error(
            "%s stopped with %d conductor domain(s) still open: %s",
            coordinator.name,
            len(leftovers),
            ", ".join(described),
        )
