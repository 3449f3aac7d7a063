"""Lead seeds (routing layer 5): the digest of a lead's token id and its frozen call list."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tokengate.core import PluginError, plugin_manager
from tokengate.hashing import DigestPolicy

__all__ = ("compute_seed", "digest_for", "seed_payload")

DigestFunction = Callable[[bytes], str]

_SEPARATOR = "\x1f"  # ASCII unit separator: cannot be confused with text in a name


def seed_payload(token_id: str, external_calls: Sequence[str]) -> bytes:
    """The bytes a lead's seed is the digest of: its token id, then each declared call."""
    return _SEPARATOR.join((token_id, *external_calls)).encode("utf-8", "surrogatepass")


def digest_for(policy: DigestPolicy | str) -> DigestFunction:
    """The digest function registered under ``policy`` (an enum member or a name, any case).

    Raises:
        KeyError: no digest policy is registered under that name (the message lists them).
    """
    return plugin_manager().state().digest_policies.get(policy)


def checked_seed(digest: DigestFunction, policy: str, token_id: str, calls: Sequence[str]) -> str:
    """Apply ``digest`` to a lead's payload and check that it gave a usable seed.

    Raises:
        PluginError: the digest function raised or did not return a non-empty string.
    """
    try:
        seed = digest(seed_payload(token_id, calls))
    except Exception as exc:
        raise PluginError(
            f"digest policy {policy!r} raised while computing the seed of lead {token_id}: {exc!r}"
        ) from exc
    if not isinstance(seed, str) or not seed:
        raise PluginError(
            f"digest policy {policy!r} returned {seed!r} for lead {token_id}; a digest "
            "function must return a non-empty string"
        )
    return seed


def compute_seed(
    token_id: str,
    external_calls: Sequence[str],
    digest_policy: DigestPolicy | str = DigestPolicy.FULL,
) -> str:
    """The seed a lead with this token id and call list gets under ``digest_policy``.

    Built-in policies give 64 (``FULL``), 16 (``SHORT``, ``FAST``) or 8 (``MINIMAL``) hex
    characters; any digest policy registered by a plugin can be named too.

    Args:
        token_id: the lead token's id (``token.token_id``).
        external_calls: the lead's ``external_calls`` tag, in declaration order.
        digest_policy: a :class:`~tokengate.hashing.DigestPolicy` or a registered name.

    Raises:
        KeyError: no digest policy is registered under that name.
        PluginError: the digest function failed or returned no string.
    """
    name = str(getattr(digest_policy, "value", digest_policy)).strip().lower()
    return checked_seed(digest_for(name), name, token_id, tuple(external_calls))
