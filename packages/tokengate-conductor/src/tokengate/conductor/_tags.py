"""The conductor's tags (``external_calls``, ``digest_policy``) and its cross-tag rule."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator

from tokengate.core import TagRegistry
from tokengate.hashing import DigestPolicy

__all__ = ("OWNER", "register_tags", "reject_sticky_anchor_with_leads")

OWNER = "tokengate-conductor"


def _external_calls(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError(f"must be a non-empty list of operation names, not {type(value).__name__}")
    if not value:
        raise ValueError("must name at least one operation (an empty list makes no lead)")
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(
                f"item {index} is {type(item).__name__} {item!r}; operation names are strings"
            )
        name = item.strip()
        if not name:
            raise ValueError(f"item {index} is an empty operation name")
        names.append(name)
    return tuple(names)


def _digest_policy(names: Callable[[], tuple[str, ...]]) -> Callable[[object], str]:
    def check(value: object) -> str:
        raw = value.value if isinstance(value, enum.Enum) else value
        if not isinstance(raw, str):
            raise ValueError(
                f"{value!r} is not a digest policy name; allowed: {', '.join(names())}"
            )
        name = raw.strip().lower()
        if name not in names():
            raise ValueError(f"{value!r} is not a digest policy; allowed: {', '.join(names())}")
        return name

    return check


def reject_sticky_anchor_with_leads(tags: Mapping[str, object]) -> None:
    """Tag rule: a lead routes by its domain, so it cannot also name a sticky key."""
    if tags.get("external_calls") is not None and tags.get("sticky_anchor") is not None:
        raise ValueError(
            "'sticky_anchor' cannot be combined with 'external_calls': a lead is routed by its "
            "conductor domain, not by a sticky key; drop one of the two tags"
        )


def register_tags(registry: TagRegistry) -> None:
    """Contribute ``external_calls`` and ``digest_policy`` and the sticky-anchor rule."""
    calls: Any = Annotated[tuple[str, ...], BeforeValidator(_external_calls)]
    policy: Any = Annotated[str, BeforeValidator(_digest_policy(registry.digest_policy_names))]
    registry.add(
        "external_calls",
        calls,
        None,
        allowed="a non-empty list of non-empty operation names",
        description="makes the operation a conductor lead: its tokens open a domain",
        owner=OWNER,
    )
    registry.add(
        "digest_policy",
        policy,
        DigestPolicy.FULL.value,
        allowed=(
            "a registered digest policy (full, short, fast, minimal, or a plugin's), "
            "as a name in any case or a DigestPolicy member"
        ),
        description="the digest of a lead's seed (only used with external_calls)",
        owner=OWNER,
    )
    registry.add_rule(OWNER, reject_sticky_anchor_with_leads)
