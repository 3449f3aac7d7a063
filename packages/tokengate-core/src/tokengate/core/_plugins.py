"""The typed plugin host: one method per hook over a pluggy ``PluginManager``."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from tokengate.hashing import Handler, HandlerRegistry, default_registry

from . import _hookspecs
from ._builtin import BuiltinPlugin
from ._enums import Weight
from ._errors import PluginError, TagValidationError
from ._executors import ExecutorRegistry
from ._extensions import OperationInfo, RoutingPolicy, TokenExtension
from ._policies import DigestPolicyRegistry, HashPolicyRegistry, TagRegistry, safe_repr

__all__ = ("PluginHost", "PluginInfo", "plugin_manager")

_log = logging.getLogger("tokengate.plugins")

ENTRY_POINT_GROUP = "tokengate"
AUTOLOAD_ENV = "TOKENGATE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_NAME = "tokengate.core.builtin"

#: Tags owned by plugins that may not be installed, and the distribution that provides them.
KNOWN_PLUGIN_TAGS: Mapping[str, str] = {
    "external_calls": "tokengate-conductor",
    "digest_policy": "tokengate-conductor",
}


class _PluginHandlers(HandlerRegistry):
    """The registry plugins fill in ``tokengate_register_hash_handlers``: a scratch registry
    that remembers what was registered, so the host can apply exactly that to the default
    registry (without wiping handlers registered there directly)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[type | str, Handler] = {}

    def register(self, cls: type, handler: Handler) -> None:
        super().register(cls, handler)
        self.entries[cls] = handler

    def register_lazy(self, qualified_name: str, handler: Handler) -> None:
        super().register_lazy(qualified_name, handler)
        self.entries[qualified_name] = handler


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered plugin, as listed by ``tokengate plugins``.

    Attributes:
        name: the name it is registered under.
        distribution: the installed distribution that provides it ("" when registered by hand).
        hooks: the ``tokengate_*`` hooks it implements, sorted.
    """

    name: str
    distribution: str
    hooks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostState:
    """Everything built from the current set of plugins (rebuilt when plugins change)."""

    generation: int
    hash_policies: HashPolicyRegistry
    digest_policies: DigestPolicyRegistry
    tags: TagRegistry
    tag_model: type[BaseModel]
    errors: tuple[str, ...]
    executors: ExecutorRegistry


class PluginHost:
    """The process-wide plugin host: a typed wrapper around pluggy.

    Obtain it with :func:`plugin_manager`. ``register`` / ``unregister`` take effect for
    operations decorated afterwards (and at once for fingerprint handlers).
    """

    def __init__(self, *, autoload: bool | None = None) -> None:
        self._pm = pluggy.PluginManager(_hookspecs.PROJECT)
        self._pm.add_hookspecs(_hookspecs)
        self._lock = threading.RLock()
        self._generation = 0
        self._state: HostState | None = None
        self._distributions: dict[str, str] = {}
        self._load_errors: list[str] = []
        self._plugin_handlers: dict[type | str, Handler] = {}
        self._pm.register(BuiltinPlugin(), name=BUILTIN_NAME)
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes"}
        if autoload:
            self._load_entry_points()
        self._refresh_hash_handlers()

    # ------------------------------------------------------------------ registration
    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self._pm.has_plugin(ep.name) or self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                self._pm.register(plugin, name=ep.name)
            except Exception as exc:
                message = f"plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}"
                self._load_errors.append(message)
                _log.error("%s", message)
                continue
            dist = getattr(ep, "dist", None)
            self._distributions[ep.name] = dist.name if dist is not None else ""
            _log.debug("loaded plugin %s from entry point %s", ep.name, ep.value)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (a module or an object with ``@hookimpl`` methods).

        Returns the name it is registered under. Operations decorated afterwards see it;
        its fingerprint handlers apply at once.

        Raises:
            ValueError: the plugin or name is already registered.
        """
        with self._lock:
            registered = self._pm.register(plugin, name=name)
            if registered is None:
                raise ValueError(f"plugin {name or plugin!r} is blocked and cannot be registered")
            self._changed()
            return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object:
        """Unregister a plugin by object or name; returns the plugin object."""
        with self._lock:
            removed = self._pm.unregister(plugin=plugin, name=name)
            if removed is None:
                raise ValueError(f"no plugin {name or plugin!r} is registered")
            self._changed()
            return removed

    def has_plugin(self, name: str) -> bool:
        """True when a plugin is registered under ``name``."""
        return self._pm.has_plugin(name)

    def get_plugin(self, name: str) -> object | None:
        """The plugin registered under ``name``, or None."""
        return self._pm.get_plugin(name)

    def _changed(self) -> None:
        self._generation += 1
        self._state = None
        self._refresh_hash_handlers()

    @property
    def generation(self) -> int:
        """Increases every time a plugin is registered or unregistered."""
        return self._generation

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for tools; prefer the typed methods)."""
        return self._pm

    # ------------------------------------------------------------------ isolated calls
    def _call_each(
        self, hook_name: str, *, builtin_first: bool = False, **kwargs: Any
    ) -> list[str]:
        """Call every implementation of a registration hook, isolating failures.

        The order is pluggy's (the built-in plugin last) unless ``builtin_first``.
        """
        errors: list[str] = []
        caller = getattr(self._pm.hook, hook_name)
        impls = list(reversed(caller.get_hookimpls()))
        if builtin_first:
            impls.sort(key=lambda impl: impl.plugin_name != BUILTIN_NAME)
        for impl in impls:
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                message = f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc!r}"
                errors.append(message)
                _log.error("%s", message)
        return errors

    def _refresh_hash_handlers(self) -> None:
        """Apply the plugins' fingerprint handlers to the default registry.

        Only handlers that plugins registered before and no longer do are removed; handlers
        registered in the default registry by hand are kept, and the registry is never empty
        in between (routing on other threads keeps its fingerprints).
        """
        scratch = _PluginHandlers()
        self._call_each("tokengate_register_hash_handlers", registry=scratch)
        registry: HandlerRegistry = default_registry()
        previous, current = self._plugin_handlers, scratch.entries
        for key, handler in previous.items():
            if key not in current and _handler_of(registry, key) is handler:
                registry.unregister(key)
        for key, handler in current.items():
            if previous.get(key) is handler and _handler_of(registry, key) is handler:
                continue
            if isinstance(key, str):
                registry.register_lazy(key, handler)
            else:
                registry.register(key, handler)
        self._plugin_handlers = dict(current)

    def state(self) -> HostState:
        """The registries and the tag model for the current plugins (built once per change)."""
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is not None:
                return self._state
            errors: list[str] = list(self._load_errors)
            hash_policies = HashPolicyRegistry()
            errors += self._call_each("tokengate_register_hash_policies", registry=hash_policies)
            # the built-in executors first: a plugin cannot take the name "thread" or "process"
            executors = ExecutorRegistry()
            errors += self._call_each(
                "tokengate_register_executors", builtin_first=True, registry=executors
            )
            digest_policies = DigestPolicyRegistry()
            errors += self._call_each(
                "tokengate_register_digest_policies", registry=digest_policies
            )
            tags = TagRegistry(
                hash_policy_names=hash_policies.names,
                digest_policy_names=digest_policies.names,
            )
            # The core's tags are registered first, so a plugin contributing a tag of the same
            # name is the one that fails (and is reported), never the core.
            errors += self._call_each("tokengate_register_tags", builtin_first=True, registry=tags)
            fields: dict[str, Any] = {
                spec.name: (spec.annotation, spec.default) for spec in tags.specs.values()
            }
            model = create_model(
                "TokenGateTags",
                __config__=ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
            self._state = HostState(
                self._generation,
                hash_policies,
                digest_policies,
                tags,
                model,
                tuple(errors),
                executors,
            )
            return self._state

    # ------------------------------------------------------------------ typed hooks
    def validate_tags(
        self, where: str, tags: Mapping[str, object] | None
    ) -> tuple[BaseModel, dict[str, object]]:
        """Validate ``tags`` for the function named ``where``.

        Returns the frozen model and the user's tags, normalised.

        Raises:
            TagValidationError: naming the function, the tag and what is allowed.
        """
        state = self.state()
        registry = state.tags
        if tags is None:
            tags = {}
        if not isinstance(tags, Mapping):
            raise TagValidationError(
                f"tags on {where} must be a mapping of tag name to value, not {type(tags).__name__}"
            )
        try:
            items = list(tags.items())
        except Exception as exc:
            raise TagValidationError(
                f"tags on {where} could not be read: {safe_repr(exc)}"
            ) from None
        plain: dict[str, object] = {}
        for key, value in items:
            if not isinstance(key, str):
                raise TagValidationError(f"tag {safe_repr(key)} on {where}: tag names are strings")
            plain[str.__str__(key)] = value
        tags = plain
        for key in tags:
            if not isinstance(key, str):
                raise TagValidationError(f"tag {key!r} on {where}: tag names are strings")
            if key not in registry.specs:
                if key in KNOWN_PLUGIN_TAGS:
                    dist = KNOWN_PLUGIN_TAGS[key]
                    raise TagValidationError(
                        f"tag {key!r} on {where} needs the plugin distribution {dist!r}, which "
                        f"is not installed (or not registered); install it: pip install {dist}"
                    )
                hint = registry.suggest(key)
                known = ", ".join(sorted(registry.specs))
                suggestion = f"did you mean {hint!r}?" if hint else f"known tags: {known}"
                raise TagValidationError(f"tag {key!r} on {where} is not a tag; {suggestion}")
        try:
            model = state.tag_model.model_validate(dict(tags))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                loc = error.get("loc", ())
                name = str(loc[0]) if loc else "?"
                spec = registry.specs.get(name)
                message = str(error.get("msg", "invalid"))
                allowed = (
                    f"; allowed: {spec.allowed}"
                    if spec and spec.allowed and "allowed:" not in message
                    else ""
                )
                problems.append(
                    f"tag {name!r} on {where}: {message} (got {safe_repr(tags.get(name))}){allowed}"
                )
            raise TagValidationError("; ".join(problems)) from None
        except Exception as exc:
            raise TagValidationError(
                f"tags on {where} could not be validated: {safe_repr(exc)}"
            ) from None
        values = {key: getattr(model, key) for key in tags}
        for owner, rule in registry.rules:
            try:
                rule(values)
            except Exception as exc:
                raise TagValidationError(f"tags on {where}: {exc} (rule of {owner})") from None
        return model, values

    def classify_weight(
        self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
    ) -> Weight:
        """The weight of an operation without a ``weight`` tag (first plugin answer wins)."""
        result = self._pm.hook.tokengate_classify_weight(
            operation_type=operation_type, func=func, tags=tags
        )
        if result is None:
            return Weight.MEDIUM
        try:
            return Weight.parse(result)
        except ValueError as exc:
            raise PluginError(f"tokengate_classify_weight returned {result!r}: {exc}") from None

    def routing_policy(self, operation: OperationInfo) -> RoutingPolicy:
        """The routing policy of an operation (first plugin answer wins)."""
        policy = self._pm.hook.tokengate_routing_policy(operation=operation)
        if not isinstance(policy, RoutingPolicy):
            raise PluginError(
                f"tokengate_routing_policy returned {policy!r} for {operation.operation_type}; "
                "expected a tokengate.core.RoutingPolicy"
            )
        return policy

    def token_extensions(self, operation: OperationInfo) -> tuple[TokenExtension, ...]:
        """Every extension plugins return for an operation, in hook order."""
        results = self._pm.hook.tokengate_token_extension(operation=operation)
        extensions = []
        for ext in results:
            if ext is None:
                continue
            if not isinstance(ext, TokenExtension):
                raise PluginError(
                    f"tokengate_token_extension returned {ext!r} for "
                    f"{operation.operation_type}; expected a tokengate.core.TokenExtension"
                )
            extensions.append(ext)
        return tuple(extensions)

    def lifecycle_caller(self, hook_name: str) -> Callable[..., Any] | None:
        """A direct caller of a token lifecycle hook (``notify(token=token)``), or None when no
        plugin implements it.

        The implementations are resolved now, in pluggy's call order, so a notification per
        token costs plain function calls and no pluggy dispatch. Only hook wrappers, which need
        pluggy's machinery, make it fall back to the pluggy caller. As with pluggy, the first
        exception stops the notification and propagates.
        """
        caller = getattr(self._pm.hook, hook_name)
        impls = caller.get_hookimpls()
        if not impls:
            return None
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            return cast(Callable[..., Any], caller)
        calls = tuple((impl.function, bool(impl.argnames)) for impl in reversed(impls))

        def notify(*, token: object) -> None:
            for function, wants_token in calls:
                if wants_token:
                    function(token)
                else:
                    function()

        return notify

    def notify_coordinator(self, hook_name: str, coordinator: object) -> None:
        """Call a coordinator lifecycle hook on every plugin, logging failures."""
        self._call_each(hook_name, coordinator=coordinator)

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution and the hooks it implements."""
        infos = []
        for name, plugin in self._pm.list_name_plugin():
            hooks = sorted(
                caller.name for caller in self._pm.get_hookcallers(plugin) or () if caller.name
            )
            dist = self._distributions.get(name, "tokengate-core" if name == BUILTIN_NAME else "")
            infos.append(PluginInfo(name, dist, tuple(hooks)))
        return sorted(infos, key=lambda info: info.name)

    @property
    def load_errors(self) -> tuple[str, ...]:
        """Messages of plugins that failed to load or register."""
        state = self.state()
        return state.errors


def _handler_of(registry: HandlerRegistry, key: type | str) -> Handler | None:
    """The handler registered under exactly ``key`` (a class or a qualified name), or None."""
    if key not in registry:
        return None
    if isinstance(key, str):
        return registry._by_name.get(key)
    return registry._by_type.get(key)


_HOST: PluginHost | None = None
_HOST_LOCK = threading.Lock()


def plugin_manager() -> PluginHost:
    """The process-wide plugin host, created on first use (loading entry-point plugins from the
    ``tokengate`` group unless ``TOKENGATE_DISABLE_PLUGIN_AUTOLOAD=1``)."""
    global _HOST
    host = _HOST
    if host is None:
        with _HOST_LOCK:
            if _HOST is None:
                _HOST = PluginHost()
            host = _HOST
    return host
