"""Compile an operation once, at decoration, into the small plan the hot path follows."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from ._enums import StorageSpeed, Weight
from ._errors import PluginError
from ._extensions import OperationInfo, RoutingPolicy, TokenExtension, overrides
from ._plugins import PluginHost
from ._policies import KeyFunction

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("OperationPlan", "compile_plan", "plan_of")


@dataclass(slots=True, eq=False)
class OperationPlan:
    """Everything decided once per operation. Per call only the argument fingerprint, the
    extensions' checks and the enqueue remain."""

    func: Callable[..., Any]
    operation_type: str
    module: str
    qualname: str
    tags: Mapping[str, object]
    public_tags: Mapping[str, object]
    weight: Weight
    policy: RoutingPolicy
    chooses_cores: bool
    key_fn: KeyFunction | None
    anchor: str
    #: The executor named by the tags (``executor``, or ``process_pool``), or None for the
    #: coordinator's default.
    executor: str | None
    storage: StorageSpeed | None
    timeout: float | None
    ext_create: tuple[TokenExtension, ...]
    ext_route: tuple[TokenExtension, ...]
    ext_around: tuple[TokenExtension, ...]
    ext_terminal: tuple[TokenExtension, ...]
    ext_remote: tuple[TokenExtension, ...]
    on_created: Callable[..., Any] | None
    on_started: Callable[..., Any] | None
    on_finished: Callable[..., Any] | None
    broken: PluginError | None
    generation: int
    #: True when running a token is only running its body: no storage tier, no extension
    #: around the body, no start hook (the runner's fast path).
    plain: bool = False
    #: True when the operation runs on the process executor (``executor: process``).
    process: bool = False
    #: True when the terminal move needs no plugin step (the release fast path).
    plain_terminal: bool = False
    #: The phases for a token that carries no extension state: the extensions marked
    #: ``only_with_state`` are left out (the hot path picks these when ``token._ext`` is None).
    ext_route_free: tuple[TokenExtension, ...] = ()
    ext_around_free: tuple[TokenExtension, ...] = ()
    ext_terminal_free: tuple[TokenExtension, ...] = ()
    ext_remote_free: tuple[TokenExtension, ...] = ()
    #: ``plain`` and ``plain_terminal`` for a token that carries no extension state.
    plain_free: bool = False
    plain_terminal_free: bool = False

    def __post_init__(self) -> None:
        self.plain = self.storage is None and not self.ext_around and self.on_started is None
        self.process = self.executor == "process"
        self.plain_terminal = (
            not self.ext_terminal and self.on_finished is None and self.storage is None
        )

        def free(exts: tuple[TokenExtension, ...]) -> tuple[TokenExtension, ...]:
            return tuple(ext for ext in exts if not ext.only_with_state)

        self.ext_route_free = free(self.ext_route)
        self.ext_around_free = free(self.ext_around)
        self.ext_terminal_free = free(self.ext_terminal)
        self.ext_remote_free = free(self.ext_remote)
        self.plain_free = (
            self.storage is None and not self.ext_around_free and self.on_started is None
        )
        self.plain_terminal_free = (
            not self.ext_terminal_free and self.on_finished is None and self.storage is None
        )


if TYPE_CHECKING:

    def plan_of(token: TaskToken[Any]) -> OperationPlan:
        """The compiled plan of ``token``. The token reads it only through
        :class:`~._protocols.PlanView`; every token is made from an :class:`OperationPlan`,
        so the layers above the token get the full plan back here, in this one place."""
        return cast(OperationPlan, token._plan)

else:
    # At run time a C attribute getter: it is on the hot path of every token, twice.
    plan_of = operator.attrgetter("_plan")


def compile_plan(
    host: PluginHost,
    func: Callable[..., Any],
    operation_type: str,
    tags: Mapping[str, object] | None,
    *,
    warn_stacklevel: int = 3,
) -> OperationPlan:
    """Validate the tags and ask the plugins everything that can be asked once.

    Raises:
        TagValidationError: a tag is unknown, malformed or conflicts with another.
    """
    where = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    model, user_tags = host.validate_tags(where, tags)
    state = host.state()
    broken: PluginError | None = None

    executor: str | None = getattr(model, "executor", None)
    by_alias = bool(getattr(model, "process_pool", False))
    if by_alias:
        executor = "process"
    storage: StorageSpeed | None = getattr(model, "storage_speed", None)
    if storage is not None and executor not in (None, "thread"):
        tag = "process_pool=True" if by_alias else f"executor={executor!r}"
        warnings.warn(
            f"{where}: storage_speed with {tag} runs in threads "
            "(storage tiers cap threads); drop one of the two tags",
            UserWarning,
            stacklevel=warn_stacklevel,
        )
        executor = "thread"

    weight: Weight = getattr(model, "weight", None) or Weight.MEDIUM
    policy: RoutingPolicy = RoutingPolicy()
    extensions: tuple[TokenExtension, ...] = ()
    try:
        if getattr(model, "weight", None) is None:
            weight = host.classify_weight(operation_type, func, MappingProxyType(user_tags))
        info = OperationInfo(operation_type, func, MappingProxyType(dict(user_tags)), weight)
        policy = host.routing_policy(info)
        extensions = host.token_extensions(info)
    except Exception as exc:
        broken = exc if isinstance(exc, PluginError) else PluginError(f"{where}: {exc!r}")

    hash_policy = getattr(model, "hash_policy", "standard")
    key_fn: KeyFunction | None = None
    try:
        key_fn = state.hash_policies.get(hash_policy)
    except KeyError as exc:
        broken = broken or PluginError(str(exc))

    anchor = getattr(model, "sticky_anchor", None) or operation_type
    timeout = getattr(model, "timeout", None)

    def phase(name: str) -> tuple[TokenExtension, ...]:
        return tuple(ext for ext in extensions if overrides(ext, name))

    return OperationPlan(
        func=func,
        operation_type=operation_type,
        module=getattr(func, "__module__", "") or "",
        qualname=getattr(func, "__qualname__", "") or "",
        tags=MappingProxyType({name: getattr(model, name) for name in type(model).model_fields}),
        public_tags=MappingProxyType(dict(user_tags)),
        weight=weight,
        policy=policy,
        chooses_cores=bool(policy.chooses_cores),
        key_fn=key_fn,
        anchor=anchor,
        executor=executor,
        storage=storage,
        timeout=timeout,
        ext_create=phase("on_create"),
        ext_route=phase("route"),
        ext_around=tuple(
            ext
            for ext in extensions
            if overrides(ext, "before_execute") or overrides(ext, "after_execute")
        ),
        ext_terminal=phase("on_terminal"),
        ext_remote=phase("remote_context"),
        on_created=host.token_created_notifier(),
        on_started=host.token_started_notifier(),
        on_finished=host.token_finished_notifier(),
        broken=broken,
        generation=state.generation,
    )
