"""Hash policies (how arguments are fingerprinted) and digest policies (how text is digested)."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Final, Self, TypeVar

__all__ = ("DigestPolicy", "HashPolicy", "digest", "digest_function")

_E = TypeVar("_E", bound=enum.StrEnum)


def _parse(cls: type[_E], value: object) -> _E:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        wanted = value.strip().lower()
        for member in cls:
            if member.value == wanted:
                return member
    allowed = ", ".join(repr(member.value) for member in cls)
    raise ValueError(f"{value!r} is not a {cls.__name__}; use one of {allowed}")


class HashPolicy(enum.StrEnum):
    """How a call's arguments become its routing fingerprint.

    * ``NONE`` — no fingerprint; the call is routed freely.
    * ``FAST`` — builtins and the standard library only (``fast_args_key``); any other
      unhashable object is keyed by identity.
    * ``STANDARD`` — the full pipeline with plugin handlers (``safe_args_key``). Default.
    * ``FULL`` — as ``STANDARD`` (reserved for a stricter variant).
    """

    NONE = "none"
    FAST = "fast"
    STANDARD = "standard"
    FULL = "full"

    @classmethod
    def parse(cls, value: object) -> Self:
        """Return the member for a member or a case-insensitive name such as ``"Fast"``.

        Raises:
            ValueError: the value names no member; the message lists the allowed values.
        """
        return _parse(cls, value)


class DigestPolicy(enum.StrEnum):
    """How :func:`digest` turns bytes into a hex digest.

    * ``FULL`` — SHA-256, 64 hex characters.
    * ``SHORT`` — SHA-256 cut to 16 hex characters.
    * ``FAST`` — BLAKE2s with an 8-byte digest, 16 hex characters.
    * ``MINIMAL`` — SHA-256 cut to 8 hex characters.

    A collision only merges two routing domains onto one core: load shifts, nothing is
    corrupted.
    """

    FULL = "full"
    SHORT = "short"
    FAST = "fast"
    MINIMAL = "minimal"

    @classmethod
    def parse(cls, value: object) -> Self:
        """Return the member for a member or a case-insensitive name such as ``"SHORT"``.

        Raises:
            ValueError: the value names no member; the message lists the allowed values.
        """
        return _parse(cls, value)


def _sha256_full(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _blake2s_8(data: bytes) -> str:
    return hashlib.blake2s(data, digest_size=8).hexdigest()


def _sha256_minimal(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


_DIGESTS: Final[dict[DigestPolicy, Callable[[bytes], str]]] = {
    DigestPolicy.FULL: _sha256_full,
    DigestPolicy.SHORT: _sha256_short,
    DigestPolicy.FAST: _blake2s_8,
    DigestPolicy.MINIMAL: _sha256_minimal,
}


def digest_function(policy: DigestPolicy | str) -> Callable[[bytes], str]:
    """Return the bytes → hex-digest function of a built-in digest policy.

    Raises:
        ValueError: ``policy`` names no built-in digest policy.
    """
    return _DIGESTS[DigestPolicy.parse(policy)]


def digest(data: bytes | str, policy: DigestPolicy | str = DigestPolicy.FULL) -> str:
    """Return the hex digest of ``data`` under ``policy`` (a ``str`` is UTF-8 encoded).

    Lengths: FULL 64, SHORT 16, FAST 16, MINIMAL 8 hex characters. Deterministic across
    processes and machines.

    Raises:
        TypeError: ``data`` is neither bytes-like nor str.
        ValueError: ``policy`` names no built-in digest policy.
    """
    raw: object = data
    if isinstance(raw, str):
        payload = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes | bytearray | memoryview):
        payload = bytes(raw)
    else:
        raise TypeError(f"digest: data must be bytes or str, got {type(raw).__name__}")
    function = _DIGESTS.get(policy) if isinstance(policy, DigestPolicy) else None
    if function is None:
        function = digest_function(policy)
    return function(payload)
