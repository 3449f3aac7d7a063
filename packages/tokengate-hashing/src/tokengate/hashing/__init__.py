"""TokenGate fingerprints, hash and digest policies, and the fingerprint handler registry.

Standard library only. See ``docs/hashing.md`` for the pipeline and its guarantees.
"""

from __future__ import annotations

from ._fingerprint import fast_args_key as fast_args_key
from ._fingerprint import fast_make_hashable as fast_make_hashable
from ._fingerprint import is_hashable as is_hashable
from ._fingerprint import make_hashable as make_hashable
from ._fingerprint import safe_args_key as safe_args_key
from ._policies import DigestPolicy as DigestPolicy
from ._policies import HashPolicy as HashPolicy
from ._policies import digest as digest
from ._policies import digest_function as digest_function
from ._registry import HANDLERS_ENTRY_POINT_GROUP as HANDLERS_ENTRY_POINT_GROUP
from ._registry import Handler as Handler
from ._registry import HandlerRegistry as HandlerRegistry
from ._registry import default_registry as default_registry

__all__: tuple[str, ...] = (
    "HANDLERS_ENTRY_POINT_GROUP",
    "DigestPolicy",
    "Handler",
    "HandlerRegistry",
    "HashPolicy",
    "default_registry",
    "digest",
    "digest_function",
    "fast_args_key",
    "fast_make_hashable",
    "is_hashable",
    "make_hashable",
    "safe_args_key",
)
