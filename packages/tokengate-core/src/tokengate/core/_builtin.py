"""The built-in behaviour, registered through the same hooks a third-party plugin uses."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool

from tokengate.hashing import (
    DigestPolicy,
    HashPolicy,
    digest_function,
    fast_args_key,
    safe_args_key,
)

from ._enums import StorageSpeed, Weight
from ._executors import AUTO, ExecutorRegistry
from ._extensions import DefaultRoutingPolicy, OperationInfo, RoutingPolicy
from ._hookspecs import hookimpl
from ._policies import DigestPolicyRegistry, HashPolicyRegistry, TagRegistry, safe_repr

__all__ = ("BuiltinPlugin",)

OWNER = "tokengate-core"
_DEFAULT_POLICY = DefaultRoutingPolicy()

#: The built-in executors, imported only when a coordinator first uses them.
#: ``thread`` is the domain scheduler (shared queues, managed blocking, GIL-aware); the
#: name ``scheduler`` stays an alias of it for coordinators that opted in by that name.
THREAD_EXECUTOR = "tokengate.core._thread_executor:make_thread_executor"
SCHEDULER_EXECUTOR = THREAD_EXECUTOR
PROCESS_EXECUTOR = "tokengate.core._process:ProcessExecutor"


def _enum_parser(enum_type: Any) -> Callable[[object], object]:
    def parse(value: object) -> object:
        if value is None:
            return None
        try:
            return enum_type.parse(value)
        except Exception:  # also a value whose repr or str raises
            if isinstance(value, str):
                return value  # let pydantic report it with the allowed values
            # pydantic's own enum check would call the value's repr, which may raise
            raise ValueError(
                f"not a {enum_type.__name__} (a member, or its value in any case)"
            ) from None

    return parse


def _named(
    kind: str, names: Callable[[], tuple[str, ...]], default: str
) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value is None:  # like every other tag, None means "not given"
            return default
        try:
            name = str(getattr(value, "value", value)).strip().lower()
        except Exception:
            name = ""  # a value whose str raises names nothing
        if name not in names():
            raise ValueError(f"{safe_repr(value)} is not a {kind}; allowed: {', '.join(names())}")
        return name

    return check


def _executor_name(names: Callable[[], tuple[str, ...]]) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if value is None:  # not given: the coordinator's default executor
            return None
        if not isinstance(value, str):
            raise ValueError(
                f"{safe_repr(value)} is not an executor name; allowed: {', '.join(names())}"
            )
        name = value.strip().lower()
        if name not in names():
            raise ValueError(
                f"{safe_repr(value)} is not a registered executor; allowed: "
                f"{', '.join(names())} (install the plugin that provides it)"
            )
        return name

    return check


def _process_pool_agrees(tags: Mapping[str, object]) -> None:
    executor = tags.get("executor")
    if tags.get("process_pool") is True and executor not in (None, "process"):
        raise ValueError(
            f"process_pool=True means executor 'process', but executor is {executor!r}; "
            "drop one of the two tags"
        )


def _finite(value: float) -> float:
    if not math.isfinite(value) or value > threading.TIMEOUT_MAX:
        raise ValueError(
            f"must be a finite number of seconds, at most {threading.TIMEOUT_MAX:g} "
            "(threading.TIMEOUT_MAX); leave the tag out for no deadline"
        )
    return value


class BuiltinPlugin:
    """Core tags, weight classification, the default routing policy, the built-in hash and
    digest policies and the built-in ``thread`` and ``process`` executors."""

    def __init__(self) -> None:
        self._executors = ExecutorRegistry()

    @hookimpl(trylast=True)
    def tokengate_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.register("thread", THREAD_EXECUTOR)
        registry.register("process", PROCESS_EXECUTOR)
        registry.register("scheduler", SCHEDULER_EXECUTOR)
        # the registry being filled now: the executor tag validates against its names
        self._executors = registry

    @hookimpl(trylast=True)
    def tokengate_register_tags(self, registry: TagRegistry) -> None:
        hash_names = registry.hash_policy_names
        registry.add(
            "weight",
            Annotated[Weight | None, BeforeValidator(_enum_parser(Weight))],
            allowed="heavy, medium, light",
            description="routing class",
            owner=OWNER,
        )
        registry.add(
            "sticky_anchor",
            Annotated[str, Field(min_length=1, strict=True)] | None,
            allowed="a non-empty string",
            description="names the sticky key (defaults to the operation type)",
            owner=OWNER,
        )
        registry.add(
            "hash_policy",
            Annotated[
                str, BeforeValidator(_named("hash policy", hash_names, HashPolicy.STANDARD.value))
            ],
            HashPolicy.STANDARD.value,
            allowed="a registered hash policy (none, fast, standard, full, or a plugin's)",
            description="how arguments enter the sticky key; none = free routing",
            owner=OWNER,
        )
        executors = self._executors
        registry.add(
            "executor",
            Annotated[str | None, BeforeValidator(_executor_name(lambda: (AUTO, *executors)))],
            allowed=(
                f"a registered executor name (thread, scheduler, process, {AUTO}, or a plugin's)"
            ),
            description="where the body runs; default: the coordinator's executor",
            owner=OWNER,
        )
        registry.add_rule(OWNER, _process_pool_agrees)
        registry.add(
            "process_pool",
            StrictBool,
            False,
            allowed="True or False",
            description="run in the core domain's worker process (executor 'process')",
            owner=OWNER,
        )
        registry.add(
            "storage_speed",
            Annotated[StorageSpeed | None, BeforeValidator(_enum_parser(StorageSpeed))],
            allowed="slow, moderate, fast, insane",
            description="IO class: caps concurrent calls per tier; forces threads",
            owner=OWNER,
        )
        registry.add(
            "timeout",
            Annotated[float, Field(gt=0, strict=True), AfterValidator(_finite)] | None,
            allowed="a number of seconds > 0 and at most threading.TIMEOUT_MAX",
            description="deadline from submission; missed → TIMEOUT",
            owner=OWNER,
        )

    @hookimpl(trylast=True)
    def tokengate_classify_weight(
        self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
    ) -> Weight | None:
        name = operation_type.lower()
        if "heavy" in name:
            return Weight.HEAVY
        if "light" in name:
            return Weight.LIGHT
        return Weight.MEDIUM

    @hookimpl(trylast=True)
    def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
        return _DEFAULT_POLICY

    @hookimpl(trylast=True)
    def tokengate_register_hash_policies(self, registry: HashPolicyRegistry) -> None:
        registry.register(HashPolicy.NONE.value, None)
        registry.register(HashPolicy.FAST.value, fast_args_key)
        registry.register(HashPolicy.STANDARD.value, safe_args_key)
        registry.register(HashPolicy.FULL.value, safe_args_key)

    @hookimpl(trylast=True)
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        for policy in DigestPolicy:
            registry.register(policy.value, digest_function(policy))
