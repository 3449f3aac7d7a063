"""The plugin contract: every hook TokenGate calls, with its guarantees.

pluggy's specifications of the hooks (:class:`HookSpecs`), low in the layers: nothing here
imports the token or the coordinator. The typed contract plugin authors see and subclass is
``tokengate.core.plugin.Plugin``. Hooks are called when an operation is decorated or when
plugins change — never per call.
"""

from __future__ import annotations

from typing import Any, Final

import pluggy

__all__ = ("HOOK_NAMES", "PROJECT", "HookSpecs", "hookimpl", "hookspec")

PROJECT = "tokengate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Mark a plugin's function or method as the implementation of a ``tokengate_*`` hook.

``@hookimpl`` alone, or with pluggy's options: ``@hookimpl(tryfirst=True)``,
``@hookimpl(trylast=True)``, ``@hookimpl(wrapper=True)``.
"""


class HookSpecs:
    """The pluggy specifications of every hook: names, parameters, call options.

    The typed contract — parameter and return types, guarantees — is the public
    ``tokengate.core.plugin.Plugin``, whose methods mirror these (a test keeps the two equal).
    """

    @hookspec(firstresult=True)
    def tokengate_classify_weight(self, operation_type: Any, func: Any, tags: Any) -> Any:
        """Decide the weight of an operation that has no ``weight`` tag.

        Called once per operation, at decoration (and again after the set of plugins
        changes). The first non-None result wins; the built-in classifier (registered last)
        looks for ``heavy``/``light`` in the operation name and otherwise answers ``MEDIUM``.
        A result that is not a :class:`~tokengate.core.Weight` (or its name) fails the
        decoration with a ``PluginError`` naming the plugin.
        """

    @hookspec(firstresult=True)
    def tokengate_routing_policy(self, operation: Any) -> Any:
        """Return the routing policy of an operation: its weight → cores map and, optionally,
        a per-token core choice (``RoutingPolicy.choose_core``).

        Called once per operation, at decoration. The first non-None result wins; the
        built-in :class:`~tokengate.core.DefaultRoutingPolicy` is registered last.
        """

    @hookspec
    def tokengate_register_hash_handlers(self, registry: Any) -> None:
        """Register fingerprint handlers: ``registry.register(cls, handler)`` or
        ``registry.register_lazy("module.QualName", handler)`` with
        ``handler(obj) -> Hashable``.

        Called for every plugin when plugins change. Once a plugin is registered,
        ``tokengate.hashing.make_hashable`` uses its handlers. A distribution should also
        declare the same function in the ``tokengate.hash_handlers`` entry-point group, so
        its handlers apply from the very first fingerprint of a process.
        """

    @hookspec
    def tokengate_register_hash_policies(self, registry: Any) -> None:
        """Register named hash policies with ``registry.register(name, key_function)``.

        ``key_function(args, kwargs)`` returns the argument fingerprint of a call; ``None`` as
        the function makes a free-routing policy. The built-ins ``none``, ``fast``,
        ``standard`` and ``full`` are registered the same way. A ``hash_policy`` tag may name
        any registered policy.
        """

    @hookspec
    def tokengate_register_digest_policies(self, registry: Any) -> None:
        """Register named digest policies with ``registry.register(name, fn)``,
        ``fn(data: bytes) -> str``. The built-ins ``full``, ``short``, ``fast`` and
        ``minimal`` are registered the same way; a ``digest_policy`` tag may name any
        registered policy.
        """

    @hookspec
    def tokengate_register_tags(self, registry: Any) -> None:
        """Contribute tags with ``registry.add(name, annotation, default, allowed=...,
        owner=...)`` and cross-tag rules with ``registry.add_rule(owner, rule)``.

        The core's own tags are registered the same way. Tags are validated by one frozen
        pydantic model built from every contribution, with unknown keys forbidden.
        """

    @hookspec
    def tokengate_register_executors(self, registry: Any) -> None:
        """Register executor backends with ``registry.register(name, factory)``, where
        ``factory(domain: ExecutorDomain) -> ExecutorBackend`` makes the backend of one core
        domain.

        The built-in ``thread`` and ``process`` executors are registered the same way. An
        ``executor`` tag (or ``OperationsCoordinator(executor=...)``) may name any registered
        one.
        """

    @hookspec
    def tokengate_token_extension(self, operation: Any) -> Any:
        """Return a :class:`~tokengate.core.TokenExtension` taking part in the life of every
        token of this operation, or None. All non-None results are used, in hook order.

        Called once per operation, at decoration.
        """

    @hookspec
    def tokengate_token_created(self, token: Any) -> None:
        """Lifecycle notification: a token was created (calling thread, before routing).

        Only operations compiled while some plugin implements this hook pay for it.
        """

    @hookspec
    def tokengate_token_started(self, token: Any) -> None:
        """Lifecycle notification: a token's body is about to run (on its worker)."""

    @hookspec
    def tokengate_token_finished(self, token: Any) -> None:
        """Lifecycle notification: a token reached its terminal state (exactly once)."""

    @hookspec
    def tokengate_coordinator_started(self, coordinator: Any) -> None:
        """A coordinator started. Set up per-coordinator state here."""

    @hookspec
    def tokengate_coordinator_stopped(self, coordinator: Any) -> None:
        """A coordinator stopped; every one of its tokens is terminal."""


HOOK_NAMES: Final[frozenset[str]] = frozenset(
    name for name in vars(HookSpecs) if name.startswith("tokengate_")
)
"""The name of every hook."""
