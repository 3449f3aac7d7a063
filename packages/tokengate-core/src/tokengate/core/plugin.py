"""Everything a plugin author needs, typed: ``hookimpl``, the hooks and the registries.

Write a plugin as a subclass of :class:`Plugin` and mark each hook you implement with
``@hookimpl``; mypy (``--strict``) then checks every override against the hook's signature,
and registration checks the rest (see ``docs/plugins.md``).

A module with ``@hookimpl`` functions named like the hooks works too (the entry-point way);
check such a module with :func:`check_plugin` in its tests. ``PluginHost.register`` rejects a
``tokengate_*`` name that is not a hook (with the closest hook's name), a hook not marked
``@hookimpl`` and parameters a hook does not have, each as a ``PluginError`` naming the plugin
and the hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tokengate.hashing import Handler as Handler
from tokengate.hashing import HandlerRegistry as HandlerRegistry

from ._coordinator import OperationsCoordinator
from ._enums import Weight as Weight
from ._errors import PluginError as PluginError
from ._executors import ExecutorBackend as ExecutorBackend
from ._executors import ExecutorDomain as ExecutorDomain
from ._executors import ExecutorRegistry as ExecutorRegistry
from ._extensions import DefaultRoutingPolicy as DefaultRoutingPolicy
from ._extensions import OperationInfo as OperationInfo
from ._extensions import RoutingPolicy as RoutingPolicy
from ._extensions import TokenExtension as TokenExtension
from ._hookspecs import HOOK_NAMES as HOOK_NAMES
from ._hookspecs import hookimpl as hookimpl
from ._plugins import BASE_HOOK_ATTRIBUTE
from ._plugins import HOOK_PARAMETERS as HOOK_PARAMETERS
from ._plugins import PluginHost as PluginHost
from ._plugins import PluginLoadWarning as PluginLoadWarning
from ._plugins import PluginResultError as PluginResultError
from ._plugins import check_plugin as check_plugin
from ._plugins import plugin_manager as plugin_manager
from ._policies import DigestFunction as DigestFunction
from ._policies import DigestPolicyRegistry as DigestPolicyRegistry
from ._policies import HashPolicyRegistry as HashPolicyRegistry
from ._policies import KeyFunction as KeyFunction
from ._policies import TagRegistry as TagRegistry
from ._policies import TagRule as TagRule
from ._token import TaskToken

__all__ = (
    "HOOK_NAMES",
    "HOOK_PARAMETERS",
    "DefaultRoutingPolicy",
    "DigestFunction",
    "DigestPolicyRegistry",
    "ExecutorBackend",
    "ExecutorDomain",
    "ExecutorRegistry",
    "Handler",
    "HandlerRegistry",
    "HashPolicyRegistry",
    "KeyFunction",
    "OperationInfo",
    "Plugin",
    "PluginError",
    "PluginHost",
    "PluginLoadWarning",
    "PluginResultError",
    "RoutingPolicy",
    "TagRegistry",
    "TagRule",
    "TokenExtension",
    "Weight",
    "check_plugin",
    "hookimpl",
    "plugin_manager",
)

_F = TypeVar("_F", bound=Callable[..., Any])


def _base_hook(method: _F) -> _F:
    """Mark a method of :class:`Plugin` as the unimplemented base of a hook: registration
    skips it (a subclass implements a hook by overriding it with ``@hookimpl``)."""
    setattr(method, BASE_HOOK_ATTRIBUTE, True)
    return method


class Plugin:
    """The typed base class of a plugin: its methods are the hooks TokenGate calls.

    Subclass it and override the hooks you implement, keeping their parameters (names and
    types) and return types, each marked ``@hookimpl``; ``mypy --strict`` reports an override
    whose types differ from the hook's, and registration reports one whose parameter names
    differ. The methods you leave alone are not registered, so a subclass costs nothing for
    them. Decorate each override with ``typing_extensions.override`` too, and mypy also
    reports a misspelled hook name. Register an instance with
    ``plugin_manager().register(MyPlugin(), name="my-plugin")``, or name one in a
    ``tokengate`` entry point.

    The methods here do nothing: they are the specifications (names, parameters, return
    types and guarantees). A plugin that is a module (or any other object) may implement a
    hook with a subset of its parameters.
    """

    @_base_hook
    def tokengate_classify_weight(
        self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
    ) -> Weight | None:
        """Decide the weight of an operation that has no ``weight`` tag.

        Called once per operation, at decoration (and again after the set of plugins
        changes). The first non-None result wins; the built-in classifier (registered last)
        looks for ``heavy``/``light`` in the operation name and otherwise answers ``MEDIUM``.
        A result that is not a :class:`~tokengate.core.Weight` (or its name) fails the
        decoration with a ``PluginError`` naming the plugin.
        """

    @_base_hook
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        """Return the routing policy of an operation: its weight → cores map and, optionally,
        a per-token core choice (``RoutingPolicy.choose_core``).

        Called once per operation, at decoration. The first non-None result wins; the
        built-in :class:`~tokengate.core.DefaultRoutingPolicy` is registered last.
        """

    @_base_hook
    def tokengate_register_hash_handlers(self, registry: HandlerRegistry) -> None:
        """Register fingerprint handlers: ``registry.register(cls, handler)`` or
        ``registry.register_lazy("module.QualName", handler)`` with
        ``handler(obj) -> Hashable``.

        Called for every plugin when plugins change. Once a plugin is registered,
        ``tokengate.hashing.make_hashable`` uses its handlers. A distribution should also
        declare the same function in the ``tokengate.hash_handlers`` entry-point group, so
        its handlers apply from the very first fingerprint of a process.
        """

    @_base_hook
    def tokengate_register_hash_policies(self, registry: HashPolicyRegistry) -> None:
        """Register named hash policies with ``registry.register(name, key_function)``.

        ``key_function(args, kwargs)`` returns the argument fingerprint of a call; ``None`` as
        the function makes a free-routing policy. The built-ins ``none``, ``fast``,
        ``standard`` and ``full`` are registered the same way. A ``hash_policy`` tag may name
        any registered policy.
        """

    @_base_hook
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        """Register named digest policies with ``registry.register(name, fn)``,
        ``fn(data: bytes) -> str``. The built-ins ``full``, ``short``, ``fast`` and
        ``minimal`` are registered the same way; a ``digest_policy`` tag may name any
        registered policy.
        """

    @_base_hook
    def tokengate_register_tags(self, registry: TagRegistry) -> None:
        """Contribute tags with ``registry.add(name, annotation, default, allowed=...,
        owner=...)`` and cross-tag rules with ``registry.add_rule(owner, rule)``.

        The core's own tags are registered the same way. Tags are validated by one frozen
        pydantic model built from every contribution, with unknown keys forbidden.
        """

    @_base_hook
    def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
        """Register executor backends with ``registry.register(name, factory)``, where
        ``factory(domain: ExecutorDomain) -> ExecutorBackend`` makes the backend of one core
        domain.

        The built-in ``thread`` and ``process`` executors are registered the same way. An
        ``executor`` tag (or ``OperationsCoordinator(executor=...)``) may name any registered
        one.
        """

    @_base_hook
    def tokengate_token_extension(self, operation: OperationInfo) -> TokenExtension | None:
        """Return a :class:`~tokengate.core.TokenExtension` taking part in the life of every
        token of this operation, or None. All non-None results are used, in hook order.

        Called once per operation, at decoration.
        """

    @_base_hook
    def tokengate_token_created(self, token: TaskToken[Any]) -> None:
        """Lifecycle notification: a token was created (calling thread, before routing).

        Only operations compiled while some plugin implements this hook pay for it.
        """

    @_base_hook
    def tokengate_token_started(self, token: TaskToken[Any]) -> None:
        """Lifecycle notification: a token's body is about to run (on its worker)."""

    @_base_hook
    def tokengate_token_finished(self, token: TaskToken[Any]) -> None:
        """Lifecycle notification: a token reached its terminal state (exactly once)."""

    @_base_hook
    def tokengate_coordinator_started(self, coordinator: OperationsCoordinator) -> None:
        """A coordinator started. Set up per-coordinator state here."""

    @_base_hook
    def tokengate_coordinator_stopped(self, coordinator: OperationsCoordinator) -> None:
        """A coordinator stopped; every one of its tokens is terminal."""
