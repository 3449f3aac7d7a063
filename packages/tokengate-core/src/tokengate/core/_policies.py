"""Registries that plugins fill through hooks: hash policies, digest policies and tags."""

from __future__ import annotations

import difflib
import reprlib
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = (
    "DigestFunction",
    "DigestPolicyRegistry",
    "HashPolicyRegistry",
    "KeyFunction",
    "TagRegistry",
    "TagRule",
    "TagSpec",
    "safe_repr",
)

_value_repr = reprlib.Repr()
_value_repr.maxstring = 80
_value_repr.maxother = 80


def safe_repr(value: object) -> str:
    """A bounded ``repr`` for error messages that never raises (a value's own ``__repr__``
    may fail or be huge)."""
    try:
        return _value_repr.repr(value)
    except Exception:
        return f"<{type(value).__name__} object with a failing repr>"


KeyFunction = Callable[[tuple[Any, ...], Mapping[str, Any]], Hashable]
"""``key(args, kwargs) -> fingerprint`` of a hash policy; None as a policy means free routing."""

DigestFunction = Callable[[bytes], str]
"""``digest(data) -> hex string`` of a digest policy."""


class _NamedRegistry(Generic[T]):
    """Names (case-insensitive) → values, with helpful errors for unknown names."""

    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        self._lock = threading.Lock()

    def register(self, name: str, value: T) -> None:
        """Register ``value`` under ``name`` (case-insensitive); registering again replaces it."""
        key = str(name).strip().lower()
        if not key:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        with self._lock:
            self._entries[key] = value

    def get(self, name: object) -> T:
        """The value registered under ``name`` (an enum member or a string, any case).

        Raises:
            KeyError: nothing is registered under that name; the message lists what is.
        """
        key = str(getattr(name, "value", name)).strip().lower()
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        allowed = ", ".join(sorted(self._entries))
        return f"{name!r} is not a registered {self.kind}; registered: {allowed}"

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return str(getattr(name, "value", name)).strip().lower() in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class HashPolicyRegistry(_NamedRegistry[KeyFunction | None]):
    """Named hash policies: how a call's arguments enter its sticky key.

    ``register(name, key_function)`` where ``key_function(args, kwargs)`` returns the argument
    fingerprint, or ``register(name, None)`` for a policy that routes freely (like ``NONE``).
    """

    kind = "hash policy"


class DigestPolicyRegistry(_NamedRegistry[DigestFunction]):
    """Named digest policies: ``register(name, fn)`` where ``fn(data: bytes) -> str``."""

    kind = "digest policy"


TagRule = Callable[[Mapping[str, object]], None]
"""A cross-tag rule: receives the validated tags, raises ``ValueError`` to reject them."""


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag a plugin contributes.

    Attributes:
        name: the tag's key.
        annotation: the pydantic type the value is validated as.
        default: the default value (None: absent).
        allowed: a human description of allowed values, used in error messages.
        description: what the tag means.
        owner: the plugin (distribution) that contributes it.
    """

    name: str
    annotation: Any
    default: Any = None
    allowed: str = ""
    description: str = ""
    owner: str = "tokengate-core"


@dataclass
class TagRegistry:
    """Tags contributed by plugins (``tokengate_register_tags``) and cross-tag rules."""

    specs: dict[str, TagSpec] = field(default_factory=dict)
    rules: list[tuple[str, TagRule]] = field(default_factory=list)
    #: Names of the registered hash policies (for validators of policy-naming tags).
    hash_policy_names: Callable[[], tuple[str, ...]] = tuple
    #: Names of the registered digest policies.
    digest_policy_names: Callable[[], tuple[str, ...]] = tuple

    def add(
        self,
        name: str,
        annotation: Any,
        default: Any = None,
        *,
        allowed: str = "",
        description: str = "",
        owner: str = "tokengate-core",
    ) -> None:
        """Contribute the tag ``name``, validated as ``annotation`` (pydantic)."""
        if name in self.specs and self.specs[name].owner != owner:
            raise ValueError(
                f"tag {name!r} is already contributed by {self.specs[name].owner}; "
                f"{owner} cannot contribute it too"
            )
        self.specs[name] = TagSpec(name, annotation, default, allowed, description, owner)

    def add_rule(self, owner: str, rule: TagRule) -> None:
        """Add a cross-tag rule; it raises ``ValueError`` with a message to reject a tag set."""
        self.rules.append((owner, rule))

    def suggest(self, name: str) -> str | None:
        """The closest known tag name to a misspelled ``name``, if any."""
        matches = difflib.get_close_matches(name, list(self.specs), n=1, cutoff=0.6)
        return matches[0] if matches else None
