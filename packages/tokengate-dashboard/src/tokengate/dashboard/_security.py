"""The dashboard's security rules, in one place.

* Controls need ``Authorization: Bearer <admin token>``, compared in constant time
  (:func:`hmac.compare_digest`); a header, not a cookie, so a page on another site cannot
  make the browser send it (no CSRF).
* Cross-origin requests are refused: a browser marks them with ``Sec-Fetch-Site`` and
  ``Origin``; the dashboard answers no CORS preflight, so no other site can read or steer it.
* The ``Host`` header must name the dashboard when it listens on loopback (DNS rebinding).
* Listening on anything but loopback needs an explicit opt-in and an admin token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from tokengate.core import TokenGateError

__all__ = (
    "MIN_TOKEN_LENGTH",
    "DashboardConfigurationError",
    "check_admin_token",
    "check_bind",
    "cross_origin_reason",
    "is_loopback",
    "loopback_hosts",
    "token_matches",
)

#: Shortest admin token accepted: a guessable token is no protection.
MIN_TOKEN_LENGTH = 16

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class DashboardConfigurationError(TokenGateError, ValueError):
    """The dashboard was asked for an unsafe or impossible setup (the message says which
    setting and what to do): a non-loopback address without ``allow_remote=True`` and an
    admin token, a too short admin token, a port in use."""


def check_admin_token(admin_token: str | None) -> bytes | None:
    """Validate an admin token; returns its UTF-8 bytes (None: read-only dashboard)."""
    if admin_token is None:
        return None
    if not isinstance(admin_token, str):
        raise DashboardConfigurationError(
            f"admin_token must be a str or None, not {type(admin_token).__name__}"
        )
    if len(admin_token) < MIN_TOKEN_LENGTH or admin_token != admin_token.strip():
        raise DashboardConfigurationError(
            f"admin_token must be at least {MIN_TOKEN_LENGTH} characters without surrounding "
            "whitespace; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'"
        )
    if any(ch in admin_token for ch in "\r\n\t"):
        raise DashboardConfigurationError("admin_token must not contain control characters")
    return admin_token.encode()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or a name) can only be reached from this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, admin_token: bytes | None, allow_remote: bool) -> None:
    """Refuse to listen on a non-loopback address unless explicitly allowed with a token."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise DashboardConfigurationError(
            f"refusing to serve the dashboard on {host!r}: it is not a loopback address, so "
            "other machines could reach it. Use host='127.0.0.1', or pass allow_remote=True "
            "together with an admin_token"
        )
    if admin_token is None:
        raise DashboardConfigurationError(
            f"refusing to serve the dashboard on {host!r} without an admin_token: a "
            "dashboard reachable from other machines must require a token "
            "(allow_remote=True needs admin_token=...)"
        )


def loopback_hosts(port: int) -> frozenset[str]:
    """The ``Host`` header values a loopback dashboard on ``port`` accepts."""
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset({*names, *(f"{name}:{port}" for name in names)})


def token_matches(header: str | None, expected: bytes) -> bool | None:
    """Check an ``Authorization`` header: None if it carries no bearer token, else whether
    the token equals ``expected`` (constant-time comparison)."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    # digests of equal length: the comparison reveals neither the token nor its length
    given = hashlib.sha256(credentials.strip().encode()).digest()
    return hmac.compare_digest(given, hashlib.sha256(expected).digest())


def cross_origin_reason(
    *,
    host: str | None,
    origin: str | None,
    fetch_site: str | None,
    trusted_origins: Iterable[str] = (),
) -> str | None:
    """Why a request is cross-origin (a message), or None if it is same-origin or not from a
    browser at all (scripts send neither ``Origin`` nor ``Sec-Fetch-Site``)."""
    trusted = {o.rstrip("/").lower() for o in trusted_origins}
    if origin is not None and origin != "null":
        if origin.rstrip("/").lower() in trusted:
            return None
        if host is None or urlsplit(origin).netloc.lower() != host.lower():
            return f"cross-origin request from {origin!r} refused"
    elif origin == "null":
        return "request from an opaque origin refused"
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        if origin is not None and origin.rstrip("/").lower() in trusted:
            return None
        return f"cross-site request (Sec-Fetch-Site: {fetch_site}) refused"
    return None
