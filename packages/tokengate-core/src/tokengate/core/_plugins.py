"""The typed plugin host: one method per hook over a pluggy ``PluginManager``.

Every hook is called through a method of :class:`PluginHost` named for it; nothing else in the
core names a hook by string. Registration checks a plugin before pluggy sees it: a
``tokengate_*`` attribute that is not a hook, a hook not marked ``@hookimpl``, or a parameter
the hook does not have is a :class:`~tokengate.core.PluginError` naming the plugin and the
hook.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from tokengate.hashing import Handler, HandlerRegistry, default_registry

from . import _hookspecs
from ._builtin import BuiltinPlugin
from ._enums import Weight
from ._errors import PluginError, TagValidationError
from ._executors import ExecutorRegistry
from ._extensions import OperationInfo, RoutingPolicy, TokenExtension
from ._hookspecs import HOOK_NAMES, HookSpecs
from ._policies import DigestPolicyRegistry, HashPolicyRegistry, TagRegistry, safe_repr

__all__ = (
    "PluginHost",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginResultError",
    "TokenNotifier",
    "check_plugin",
    "plugin_manager",
)

_log = logging.getLogger("tokengate.plugins")

ENTRY_POINT_GROUP: Final = "tokengate"
AUTOLOAD_ENV: Final = "TOKENGATE_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV: Final = "TOKENGATE_STRICT_PLUGINS"
DISABLED_ENV: Final = "TOKENGATE_DISABLED_PLUGINS"
BUILTIN_NAME: Final = "tokengate.core.builtin"

#: Tags owned by plugins that may not be installed, and the distribution that provides them.
KNOWN_PLUGIN_TAGS: Mapping[str, str] = {
    "external_calls": "tokengate-conductor",
    "digest_policy": "tokengate-conductor",
}

#: Set on the methods of ``tokengate.core.plugin.Plugin``: the unimplemented base of a hook.
BASE_HOOK_ATTRIBUTE: Final = "__tokengate_base_hook__"

TokenNotifier = Callable[..., None]
"""A resolved lifecycle notification, called as ``notify(token=token)``."""


class PluginLoadWarning(UserWarning):
    """An installed plugin (an entry point) could not be loaded or registered; it is skipped.

    Set ``TOKENGATE_STRICT_PLUGINS=1`` to make this an error, or name the plugin in
    ``TOKENGATE_DISABLED_PLUGINS`` to stop loading it.
    """


class PluginResultError(PluginError):
    """A hook returned a value of the wrong kind. Raised where the hook is called (at
    decoration for the per-operation hooks), naming the plugin and the hook."""


def _first_frame_outside_tokengate() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside ``tokengate``
    (the application line that first used the plugin host)."""
    frame = sys._getframe(1)  # our caller: the function that warns (stacklevel 1)
    level = 1
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("tokengate."):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def disabled_plugins() -> frozenset[str]:
    """The plugin names listed in ``TOKENGATE_DISABLED_PLUGINS`` (comma-separated)."""
    raw = os.environ.get(DISABLED_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _params(fn: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """(required parameter names, keyword-only parameter names) of a callable, without
    ``self``/``cls`` of a bound method."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], []
    required: list[str] = []
    keyword_only: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            if param.default is param.empty:
                required.append(param.name)
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            keyword_only.append(param.name)
    return required, keyword_only


#: hook name → its parameters, in order (from the specifications).
HOOK_PARAMETERS: Final[Mapping[str, tuple[str, ...]]] = {
    name: tuple(_params(getattr(HookSpecs(), name))[0]) for name in sorted(HOOK_NAMES)
}


def _did_you_mean(name: str) -> str:
    candidates = [name, f"tokengate_{name}"] if not name.startswith("tokengate_") else [name]
    for candidate in candidates:
        matches = difflib.get_close_matches(candidate, sorted(HOOK_NAMES), n=1, cutoff=0.6)
        if matches:
            return f"did you mean {matches[0]!r}?"
    return "the hooks are: " + ", ".join(sorted(HOOK_NAMES))


def plugin_label(plugin: object, name: str | None = None) -> str:
    """How messages name a plugin: its registered name, a module's name, or its class."""
    if name:
        return name
    module_name = getattr(plugin, "__name__", None)
    if isinstance(plugin, type(os)) and isinstance(module_name, str):
        return module_name
    cls = type(plugin) if not isinstance(plugin, type) else plugin
    return f"{cls.__module__}.{cls.__qualname__}"


def check_plugin(plugin: object, label: str) -> None:
    """Check what pluggy would accept silently, before the plugin is registered.

    Raises:
        PluginError: naming the plugin and the hook, for a ``tokengate_*`` callable that is
            not a hook (with the closest hook name), a hook implementation not marked
            ``@hookimpl``, or one whose parameters are not the hook's.
    """
    for attr in sorted(dir(plugin)):
        if not attr.startswith("tokengate_"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:
            continue
        if not callable(value):
            continue
        if attr not in HOOK_NAMES:
            raise PluginError(
                f"plugin {label!r}: {attr!r} is not a tokengate hook, so it would never be "
                f"called; {_did_you_mean(attr)}"
            )
        if getattr(value, f"{_hookspecs.PROJECT}_impl", None) is None:
            if getattr(value, BASE_HOOK_ATTRIBUTE, False):
                continue  # inherited from the Plugin base class unchanged: not an implementation
            raise PluginError(
                f"plugin {label!r}, hook {attr}: the implementation is not marked @hookimpl, "
                "so it would never be called; decorate it with @hookimpl "
                "(from tokengate.core.plugin import hookimpl)"
            )
        required, keyword_only = _params(value)
        expected = HOOK_PARAMETERS[attr]
        unknown = [name for name in required + keyword_only if name not in expected]
        if unknown:
            raise PluginError(
                f"plugin {label!r}, hook {attr}: parameter(s) {', '.join(unknown)} are not "
                f"parameters of this hook; it passes ({', '.join(expected)}) by these names "
                "(an implementation may take any of them)"
            )


class _PluginHandlers(HandlerRegistry):
    """The registry plugins fill in ``tokengate_register_hash_handlers``: a scratch registry
    that remembers what was registered, so the host can apply exactly that to the default
    registry (without wiping handlers registered there directly)."""

    __slots__ = ("entries_seen",)

    def __init__(self) -> None:
        super().__init__()
        self.entries_seen: dict[type | str, Handler] = {}

    def register(self, cls: type, handler: Handler) -> None:
        super().register(cls, handler)
        self.entries_seen[cls] = handler

    def register_lazy(self, qualified_name: str, handler: Handler) -> None:
        super().register_lazy(qualified_name, handler)
        self.entries_seen[qualified_name] = handler


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
class _Failure:
    plugin: str
    hook: str
    message: str


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

    Obtain it with :func:`plugin_manager`. ``register`` / ``unregister`` apply to every
    operation from its next call (its plan is re-derived once per change of the plugin set)
    and at once to fingerprint handlers.
    """

    def __init__(self, *, autoload: bool | None = None) -> None:
        self._pm = pluggy.PluginManager(_hookspecs.PROJECT)
        self._pm.add_hookspecs(HookSpecs)
        self._hook = self._pm.hook
        self._lock = threading.RLock()
        self._generation = 0
        self._state: HostState | None = None
        self._distributions: dict[str, str] = {}
        self._load_errors: list[str] = []
        self._plugin_handlers: dict[type | str, Handler] = {}
        self._handler_failures: list[_Failure] = []
        self._failures: tuple[_Failure, ...] = ()
        self._pm.register(BuiltinPlugin(), name=BUILTIN_NAME)
        for name in sorted(disabled_plugins()):
            if name == BUILTIN_NAME:
                _log.warning("%s cannot disable the core's built-in plugin %r", DISABLED_ENV, name)
                continue
            self._pm.set_blocked(name)
        if autoload is None:
            autoload = not _truthy(AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        self._changed()
        # an installed plugin whose registration hook raised failed to load, too
        failures: tuple[_Failure, ...] = self._failures
        for failure in failures:
            if failure.plugin in self._distributions:
                self._load_failed(failure.message, "what it registered there is left out")

    # ------------------------------------------------------------------ registration
    def _load_failed(self, message: str, consequence: str = "the plugin is skipped") -> None:
        self._load_errors.append(message)
        _log.error("%s", message)
        if _truthy(STRICT_ENV):
            raise PluginError(f"{message} ({STRICT_ENV}=1 makes a plugin that fails an error)")
        warnings.warn(
            f"{message}; {consequence} (set {STRICT_ENV}=1 to make this an error, or "
            f"{DISABLED_ENV}=<name> to stop loading it)",
            PluginLoadWarning,
            stacklevel=_first_frame_outside_tokengate(),
        )

    def _load_entry_points(self) -> None:
        try:
            entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:
            self._load_failed(
                f"the {ENTRY_POINT_GROUP!r} entry points could not be listed: {exc!r}"
            )
            return
        for ep in entry_points:
            if self._pm.has_plugin(ep.name) or self._pm.is_blocked(ep.name):
                if self._pm.is_blocked(ep.name):
                    _log.info("plugin %r not loaded: listed in %s", ep.name, DISABLED_ENV)
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else ""
            where = f"entry point {ep.value}" + (f" of {dist_name}" if dist_name else "")
            try:
                plugin = ep.load()
            except Exception as exc:
                self._load_failed(f"plugin {ep.name!r} ({where}) failed to load: {exc!r}")
                continue
            try:
                self._register_checked(plugin, ep.name)
            except PluginError as exc:
                self._load_failed(f"{exc} ({where})")
                continue
            self._distributions[ep.name] = dist_name
            if self._hook.tokengate_register_hash_handlers.get_hookimpls() and any(
                impl.plugin_name == ep.name
                for impl in self._hook.tokengate_register_hash_handlers.get_hookimpls()
            ):
                self._check_handlers_entry_point(ep.name, dist)
            _log.debug("loaded plugin %s from %s", ep.name, where)
        for message in default_registry().load_errors:
            self._load_failed(message)

    @staticmethod
    def _check_handlers_entry_point(name: str, dist: object) -> None:
        group = "tokengate.hash_handlers"
        entry_points = getattr(dist, "entry_points", None)
        try:
            declared = any(ep.group == group for ep in entry_points or ())
        except Exception:
            return
        if not declared:
            _log.warning(
                "plugin %r registers fingerprint handlers but its distribution declares no %r "
                "entry point: fingerprints made before the plugin host is first used differ "
                "from later ones; declare the same function in that group",
                name,
                group,
            )

    def _register_checked(self, plugin: object, name: str | None) -> str:
        """Check and register one plugin; on any problem nothing stays registered."""
        label = plugin_label(plugin, name)
        check_plugin(plugin, label)
        try:
            registered = self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {label!r}: {exc}") from None
        if registered is None:
            raise PluginError(
                f"plugin {label!r} is disabled ({DISABLED_ENV}); remove it from that list to "
                "register it"
            )
        for caller in self._pm.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                self._pm.unregister(plugin)
                raise PluginError(
                    f"plugin {label!r}: {caller.name!r} is marked @hookimpl but is not a "
                    f"tokengate hook, so it would never be called; {_did_you_mean(caller.name)}"
                )
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(plugin)
            raise PluginError(f"plugin {label!r}: {exc}") from None
        return registered

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (a module, a ``Plugin`` subclass instance or any object with
        ``@hookimpl`` methods) and return the name it is registered under.

        Every operation sees it from its next call; its fingerprint handlers apply at once;
        its registration hooks (tags, policies, executors, handlers) run now — one that
        raises is logged on ``tokengate.plugins`` and listed in :attr:`load_errors`.

        Raises:
            PluginError: a ``tokengate_*`` attribute is not a hook (the message names the
                closest hook), a hook is not marked ``@hookimpl`` or takes parameters the hook
                does not have, or the name is listed in ``TOKENGATE_DISABLED_PLUGINS``.
            ValueError: the plugin or the name is already registered.
        """
        with self._lock:
            if name is not None and self._pm.is_blocked(name):
                raise PluginError(
                    f"plugin {name!r} is disabled ({DISABLED_ENV}); remove it from that list "
                    "to register it"
                )
            registered = self._register_checked(plugin, name)
            self._changed()
            return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object:
        """Unregister a plugin by object or name; returns the plugin object.

        Every operation stops seeing it from its next call.

        Raises:
            ValueError: no such plugin is registered.
        """
        with self._lock:
            if name is not None and not self._pm.has_plugin(name):
                raise ValueError(f"no plugin {name!r} is registered")
            if plugin is not None and not self._pm.is_registered(plugin):
                raise ValueError(f"no plugin {plugin_label(plugin)!r} is registered")
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
        """A new plugin set: bump the generation, apply the handlers, rebuild the registries
        now (so a failing registration hook is reported at registration)."""
        self._generation += 1
        self._state = None
        self._refresh_hash_handlers()
        self.state()

    @property
    def generation(self) -> int:
        """Increases every time a plugin is registered or unregistered; a decorated operation
        re-derives its plan on its next call when this changed."""
        return self._generation

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for tools; prefer the typed methods)."""
        return self._pm

    # ------------------------------------------------------------------ isolated calls
    def _call_each(
        self, caller: pluggy.HookCaller, *, builtin_first: bool = False, **kwargs: Any
    ) -> list[_Failure]:
        """Call every implementation of a registration hook, isolating failures.

        The order is pluggy's (the built-in plugin last) unless ``builtin_first``.
        """
        failures: list[_Failure] = []
        impls = list(reversed(caller.get_hookimpls()))
        if builtin_first:
            impls.sort(key=lambda impl: impl.plugin_name != BUILTIN_NAME)
        for impl in impls:
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                message = f"plugin {impl.plugin_name!r} failed in {caller.name}: {exc!r}"
                failures.append(_Failure(impl.plugin_name, caller.name, message))
                _log.error("%s", message)
        return failures

    def _first_result(
        self, caller: pluggy.HookCaller, where: str, kwargs: dict[str, Any]
    ) -> tuple[str, object] | None:
        """The first non-None answer of a first-result hook and the plugin that gave it."""
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            result = caller(**kwargs)
            names = ", ".join(sorted({impl.plugin_name for impl in impls}))
            return None if result is None else (f"one of {names}", result)
        for impl in reversed(impls):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {caller.name} for {where}: {exc!r}"
                ) from exc
            if result is not None:
                return impl.plugin_name, result
        return None

    def _each_result(
        self, caller: pluggy.HookCaller, where: str, kwargs: dict[str, Any]
    ) -> list[tuple[str, object]]:
        """Every non-None answer of a hook, in pluggy's order, with the plugin that gave it."""
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            names = ", ".join(sorted({impl.plugin_name for impl in impls}))
            return [(f"one of {names}", r) for r in caller(**kwargs) if r is not None]
        results: list[tuple[str, object]] = []
        for impl in reversed(impls):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {caller.name} for {where}: {exc!r}"
                ) from exc
            if result is not None:
                results.append((impl.plugin_name, result))
        return results

    def _refresh_hash_handlers(self) -> None:
        """Apply the plugins' fingerprint handlers to the default registry.

        Only handlers that plugins registered before and no longer do are removed; handlers
        registered in the default registry by hand are kept, and the registry is never empty
        in between (routing on other threads keeps its fingerprints).
        """
        scratch = _PluginHandlers()
        failures = self.register_hash_handlers(scratch)
        self._handler_failures = failures
        registry: HandlerRegistry = default_registry()
        previous, current = self._plugin_handlers, scratch.entries_seen
        for key, handler in previous.items():
            if key not in current and registry.get(key) is handler:
                registry.unregister(key)
        for key, handler in current.items():
            if registry.get(key) is handler:
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
            failures: list[_Failure] = list(self._handler_failures)
            hash_policies = HashPolicyRegistry()
            failures += self._register_hash_policies(hash_policies)
            executors = ExecutorRegistry()
            failures += self._register_executors(executors)
            digest_policies = DigestPolicyRegistry()
            failures += self._register_digest_policies(digest_policies)
            tags = TagRegistry(
                hash_policy_names=hash_policies.names,
                digest_policy_names=digest_policies.names,
            )
            failures += self._register_tags(tags)
            self._failures = tuple(failures)
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
                tuple(self._load_errors) + tuple(f.message for f in failures),
                executors,
            )
            return self._state

    # ------------------------------------------------------------------ typed hooks
    def register_hash_handlers(self, registry: HandlerRegistry) -> list[_Failure]:
        """Call ``tokengate_register_hash_handlers`` of every plugin with ``registry``;
        returns the failures (each also logged)."""
        return self._call_each(self._hook.tokengate_register_hash_handlers, registry=registry)

    def _register_hash_policies(self, registry: HashPolicyRegistry) -> list[_Failure]:
        return self._call_each(self._hook.tokengate_register_hash_policies, registry=registry)

    def _register_executors(self, registry: ExecutorRegistry) -> list[_Failure]:
        # the built-in executors first: a plugin cannot take the name "thread" or "process"
        return self._call_each(
            self._hook.tokengate_register_executors, builtin_first=True, registry=registry
        )

    def _register_digest_policies(self, registry: DigestPolicyRegistry) -> list[_Failure]:
        return self._call_each(self._hook.tokengate_register_digest_policies, registry=registry)

    def _register_tags(self, registry: TagRegistry) -> list[_Failure]:
        # The core's tags are registered first, so a plugin contributing a tag of the same
        # name is the one that fails (and is reported), never the core.
        return self._call_each(
            self._hook.tokengate_register_tags, builtin_first=True, registry=registry
        )

    def hash_policies(self) -> HashPolicyRegistry:
        """The hash policies every plugin registered (``tokengate_register_hash_policies``)."""
        return self.state().hash_policies

    def digest_policies(self) -> DigestPolicyRegistry:
        """The digest policies every plugin registered
        (``tokengate_register_digest_policies``)."""
        return self.state().digest_policies

    def tags(self) -> TagRegistry:
        """The tags and cross-tag rules every plugin contributed (``tokengate_register_tags``)."""
        return self.state().tags

    def executors(self) -> ExecutorRegistry:
        """The executor backends every plugin registered (``tokengate_register_executors``)."""
        return self.state().executors

    # ------------------------------------------------------------------ per-operation hooks
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
                got = safe_repr(tags.get(name))
                if error.get("type") == "value_error":  # a validator's own sentence
                    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
                    allowed = (
                        f"; allowed: {spec.allowed}"
                        if spec and spec.allowed and "allowed:" not in message
                        else ""
                    )
                    problems.append(f"tag {name!r} on {where}: {message} (got {got}){allowed}")
                    continue
                if spec and spec.allowed:  # one sentence: what it must be, what it was
                    allowed = spec.allowed
                    listed = "," in allowed and not allowed.startswith(("a ", "an "))
                    problems.append(
                        f"tag {name!r} on {where} must be {'one of ' if listed else ''}"
                        f"{allowed} (got {got})"
                    )
                    continue
                message = str(error.get("msg", "invalid"))
                problems.append(f"tag {name!r} on {where}: {message} (got {got})")
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
        """The weight of an operation without a ``weight`` tag (first plugin answer wins).

        Raises:
            PluginResultError: the answer is not a weight (naming the plugin and the hook).
            PluginError: a classifier raised (naming the plugin and the hook).
        """
        answer = self._first_result(
            self._hook.tokengate_classify_weight,
            operation_type,
            {"operation_type": operation_type, "func": func, "tags": tags},
        )
        if answer is None:
            return Weight.MEDIUM
        plugin, result = answer
        try:
            return Weight.parse(result)
        except (ValueError, TypeError) as exc:
            raise PluginResultError(
                f"plugin {plugin!r}, hook tokengate_classify_weight: returned "
                f"{safe_repr(result)} for {operation_type}; expected a tokengate.core.Weight "
                f"or None ({exc})"
            ) from None

    def routing_policy(self, operation: OperationInfo) -> RoutingPolicy:
        """The routing policy of an operation (first plugin answer wins).

        Raises:
            PluginResultError: the answer is not a ``RoutingPolicy``.
            PluginError: a plugin raised.
        """
        answer = self._first_result(
            self._hook.tokengate_routing_policy, operation.operation_type, {"operation": operation}
        )
        plugin, policy = answer if answer is not None else ("(no plugin)", None)
        if not isinstance(policy, RoutingPolicy):
            raise PluginResultError(
                f"plugin {plugin!r}, hook tokengate_routing_policy: returned "
                f"{safe_repr(policy)} for {operation.operation_type}; expected a "
                "tokengate.core.RoutingPolicy or None"
            )
        return policy

    def token_extensions(self, operation: OperationInfo) -> tuple[TokenExtension, ...]:
        """Every extension plugins return for an operation, in hook order.

        Raises:
            PluginResultError: an answer is not a ``TokenExtension``.
            PluginError: a plugin raised.
        """
        extensions: list[TokenExtension] = []
        for plugin, ext in self._each_result(
            self._hook.tokengate_token_extension, operation.operation_type, {"operation": operation}
        ):
            if not isinstance(ext, TokenExtension):
                raise PluginResultError(
                    f"plugin {plugin!r}, hook tokengate_token_extension: returned "
                    f"{safe_repr(ext)} for {operation.operation_type}; expected a "
                    "tokengate.core.TokenExtension or None"
                )
            extensions.append(ext)
        return tuple(extensions)

    def _notifier(self, caller: pluggy.HookCaller) -> TokenNotifier | None:
        """A direct caller of a token lifecycle hook (``notify(token=token)``), or None when
        no plugin implements it.

        The implementations are resolved now, in pluggy's call order, so a notification per
        token costs plain function calls and no pluggy dispatch. Only hook wrappers, which
        need pluggy's machinery, make it fall back to the pluggy caller. As with pluggy, the
        first exception stops the notification; it propagates as a ``PluginError`` naming
        the plugin, the hook and the token.
        """
        impls = caller.get_hookimpls()
        if not impls:
            return None
        hook = caller.name
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            names = ", ".join(sorted({impl.plugin_name for impl in impls}))

            def through_pluggy(*, token: object) -> None:
                try:
                    caller(token=token)
                except Exception as exc:
                    raise PluginError(
                        f"plugin {names} failed in {hook} for {getattr(token, 'token_id', token)}"
                        f": {exc!r}"
                    ) from exc

            return through_pluggy
        calls = tuple(
            (impl.function, bool(impl.argnames), impl.plugin_name) for impl in reversed(impls)
        )

        def notify(*, token: object) -> None:
            for function, wants_token, plugin in calls:
                try:
                    if wants_token:
                        function(token)
                    else:
                        function()
                except Exception as exc:
                    raise PluginError(
                        f"plugin {plugin!r} failed in {hook} for "
                        f"{getattr(token, 'token_id', token)}: {exc!r}"
                    ) from exc

        return notify

    def token_created_notifier(self) -> TokenNotifier | None:
        """The ``tokengate_token_created`` notification, resolved now, or None when no
        plugin implements it (then operations pay nothing for it)."""
        return self._notifier(self._hook.tokengate_token_created)

    def token_started_notifier(self) -> TokenNotifier | None:
        """The ``tokengate_token_started`` notification, resolved now, or None."""
        return self._notifier(self._hook.tokengate_token_started)

    def token_finished_notifier(self) -> TokenNotifier | None:
        """The ``tokengate_token_finished`` notification, resolved now, or None."""
        return self._notifier(self._hook.tokengate_token_finished)

    def coordinator_started(self, coordinator: object) -> None:
        """Call ``tokengate_coordinator_started`` on every plugin, logging failures (a
        failing plugin never stops the coordinator)."""
        self._call_each(self._hook.tokengate_coordinator_started, coordinator=coordinator)

    def coordinator_stopped(self, coordinator: object) -> None:
        """Call ``tokengate_coordinator_stopped`` on every plugin, logging failures."""
        self._call_each(self._hook.tokengate_coordinator_stopped, coordinator=coordinator)

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution and the hooks it implements."""
        infos = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:  # blocked (TOKENGATE_DISABLED_PLUGINS)
                continue
            hooks = sorted(
                caller.name for caller in self._pm.get_hookcallers(plugin) or () if caller.name
            )
            dist = self._distributions.get(name, "tokengate-core" if name == BUILTIN_NAME else "")
            infos.append(PluginInfo(name, dist, tuple(hooks)))
        return sorted(infos, key=lambda info: info.name)

    @property
    def load_errors(self) -> tuple[str, ...]:
        """Messages of plugins that failed to load, and of registration hooks that raised."""
        return self.state().errors


_HOST: PluginHost | None = None
_HOST_LOCK = threading.Lock()


def plugin_manager() -> PluginHost:
    """The process-wide plugin host, created on first use.

    It loads the entry-point plugins of the ``tokengate`` group unless
    ``TOKENGATE_DISABLE_PLUGIN_AUTOLOAD=1``, skipping those named in
    ``TOKENGATE_DISABLED_PLUGINS=a,b``. A plugin that fails to load is skipped with a
    :class:`PluginLoadWarning` (and logged on ``tokengate.plugins``); with
    ``TOKENGATE_STRICT_PLUGINS=1`` it is a ``PluginError`` instead.
    """
    global _HOST
    host = _HOST
    if host is None:
        with _HOST_LOCK:
            if _HOST is None:
                _HOST = PluginHost()
            host = _HOST
    return host
