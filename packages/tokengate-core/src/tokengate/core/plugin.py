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

from tokengate.hashing import Handler as Handler
from tokengate.hashing import HandlerRegistry as HandlerRegistry

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
from ._hookspecs import Plugin as Plugin
from ._hookspecs import hookimpl as hookimpl
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
