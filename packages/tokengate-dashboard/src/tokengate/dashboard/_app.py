"""The dashboard as an ASGI application (Starlette): the page, its assets, the live feed and
the control API."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._sampler import Sampler
from ._security import (
    DashboardConfigurationError,
    check_admin_token,
    cross_origin_reason,
    token_matches,
)

if TYPE_CHECKING:
    from tokengate.core import OperationsCoordinator

__all__ = ("DashboardApp", "dashboard_app")

_log = logging.getLogger("tokengate.dashboard")

#: Largest control request body accepted, in bytes.
MAX_BODY = 4096
#: Longest operation name or token id a control request may carry.
MAX_NAME = 500
#: Live viewers served at once; more get 503 (each holds one open response).
MAX_VIEWERS = 32
#: Seconds between two samples.
DEFAULT_INTERVAL = 1.0

_STATIC_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_ACTIONS = ("pause", "resume", "drain", "kill")
#: What the dashboard calls on the coordinator: its public introspection and admin methods.
_COORDINATOR_API = (
    "stats",
    "sticky_snapshot",
    "recent_executions",
    "in_flight",
    "pause",
    "resume",
    "pause_operation",
    "resume_operation",
    "drain",
    "kill_token",
    "kill_operation",
)


def _asset(name: str) -> bytes:
    return (resources.files("tokengate.dashboard") / "static" / name).read_bytes()


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status, headers=headers)


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Guard:
    """ASGI middleware: Host and origin checks before any route, security headers after."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: frozenset[str] | None,
        trusted_origins: tuple[str, ...],
    ) -> None:
        self._app = app
        self._allowed_hosts = allowed_hosts
        self._trusted = trusted_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        refusal: tuple[int, str] | None = None
        if self._allowed_hosts is not None and (host or "").lower() not in self._allowed_hosts:
            refusal = (400, f"Host header {host!r} does not name this dashboard")
        else:
            reason = cross_origin_reason(
                host=host,
                origin=headers.get("origin"),
                fetch_site=headers.get("sec-fetch-site"),
                trusted_origins=self._trusted,
            )
            # the page and its assets hold no data; every API call (data and controls) must
            # come from the dashboard's own page or from a script (which sends no Origin)
            path: str = scope.get("path", "")
            root: str = scope.get("root_path", "")
            local = path[len(root) :] if root and path.startswith(root) else path
            if reason is not None and local.startswith("/api/"):
                refusal = (403, reason)
        if refusal is not None:
            status, message = refusal
            _log.warning(
                "dashboard: refused %s %s: %s", scope.get("method"), scope.get("path"), message
            )
            await _error(status, message)(scope, receive, self._secured(send))
            return
        await self._app(scope, receive, self._secured(send))

    @staticmethod
    def _secured(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        return wrapped


class DashboardApp(Starlette):
    """The dashboard's ASGI application (a :class:`starlette.applications.Starlette`).

    Serve it with :func:`tokengate.dashboard.serve_dashboard`, or mount it in your own
    Starlette or FastAPI service (``app.mount("/dashboard", dashboard_app(coordinator))``).
    :meth:`close` ends its live feeds.

    Args:
        coordinator: the coordinator to watch and steer.
        admin_token: enables the controls (see :func:`dashboard_app`).
        require_token_for_reads: the live data needs the token too.
        allowed_hosts: ``Host`` header values accepted (None: any); a loopback server lists
            its own addresses, against DNS rebinding.
        trusted_origins: extra origins allowed to call the API.
        interval: seconds between two samples.

    Attributes:
        sampler: the one sampler every viewer of this app reads from.
    """

    def __init__(
        self,
        coordinator: OperationsCoordinator,
        *,
        admin_token: str | None = None,
        require_token_for_reads: bool = False,
        allowed_hosts: Iterable[str] | None = None,
        trusted_origins: Iterable[str] = (),
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        missing = [
            name for name in _COORDINATOR_API if not callable(getattr(coordinator, name, None))
        ]
        if missing:
            raise TypeError(
                f"the dashboard needs an OperationsCoordinator, not {type(coordinator).__name__} "
                f"(it has no {', '.join(missing)})"
            )
        token = check_admin_token(admin_token)
        if require_token_for_reads and token is None:
            raise DashboardConfigurationError("require_token_for_reads=True needs an admin_token")
        if not interval > 0:
            raise DashboardConfigurationError(f"interval must be > 0 seconds, not {interval!r}")
        self._token = token
        self._reads_need_token = require_token_for_reads
        self._viewers = 0
        self.sampler = Sampler(coordinator, interval=interval, controls=token is not None)
        self._coordinator = coordinator
        self._interval = interval
        self._page = self._render_page()
        self._assets = {name: _asset(name) for name in _STATIC_TYPES}
        routes = [
            Route("/", self._index, methods=["GET"]),
            Route("/static/{name}", self._static, methods=["GET"]),
            Route("/api/snapshot", self._snapshot, methods=["GET"]),
            Route("/api/events", self._events, methods=["GET"]),
            *(Route(f"/api/{action}", self._control, methods=["POST"]) for action in _ACTIONS),
        ]

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            self.close()

        super().__init__(routes=routes, lifespan=lifespan)
        hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self._guarded: ASGIApp = _Guard(
            super().__call__, allowed_hosts=hosts, trusted_origins=tuple(trusted_origins)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (behind the Host and origin checks)."""
        await self._guarded(scope, receive, send)

    @property
    def controls(self) -> bool:
        """Whether controls are enabled (an admin token is configured)."""
        return self._token is not None

    def close(self) -> None:
        """End the live feeds and the sampling (safe from any thread, more than once)."""
        self.sampler.close()

    def _closing(self) -> bool:
        return self.sampler.closed

    # ------------------------------------------------------------------ pages
    def _render_page(self) -> bytes:
        page = _asset("index.html").decode()
        if self._token is None:
            start, end = "<!--controls-->", "<!--/controls-->"
            while start in page:
                head, _, rest = page.partition(start)
                _, _, tail = rest.partition(end)
                page = head + tail
        page = page.replace("{{controls}}", "1" if self._token is not None else "0")
        page = page.replace("{{interval}}", f"{self._interval:g}")
        page = page.replace("{{reads}}", "1" if self._reads_need_token else "0")
        return page.encode()

    async def _index(self, request: Request) -> Response:
        return Response(
            self._page,
            media_type="text/html; charset=utf-8",
            headers={"cache-control": "no-store"},
        )

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._assets.get(name)
        if body is None:
            return _error(404, f"no asset named {name!r}")
        return Response(body, media_type=_STATIC_TYPES[name], headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ data
    def _authorize(self, request: Request) -> Response | None:
        """None if the request carries the admin token, else the refusal."""
        if self._token is None:
            return _error(
                403,
                "this dashboard is read-only: start it with admin_token=... to enable controls",
            )
        verdict = token_matches(request.headers.get("authorization"), self._token)
        if verdict is None:
            return _error(
                401,
                "missing admin token: send the header 'Authorization: Bearer <admin token>'",
                **{"www-authenticate": 'Bearer realm="tokengate-dashboard"'},
            )
        if not verdict:
            _log.warning("dashboard: wrong admin token from %s", _client(request))
            return _error(403, "wrong admin token")
        return None

    async def _snapshot(self, request: Request) -> Response:
        if self._reads_need_token and (refusal := self._authorize(request)) is not None:
            return refusal
        self.sampler.ensure_running()
        tick = self.sampler.latest()
        body = {"snapshot": tick.snapshot, "history": self.sampler.history()}
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def _events(self, request: Request) -> Response:
        if self._reads_need_token and (refusal := self._authorize(request)) is not None:
            return refusal
        if self._viewers >= MAX_VIEWERS:
            return _error(503, f"too many live viewers (at most {MAX_VIEWERS})")
        self.sampler.ensure_running()
        return StreamingResponse(
            self._stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _stream(self) -> AsyncIterator[bytes]:
        self._viewers += 1
        try:
            hello = {
                "interval": self._interval,
                "controls": self.controls,
                "history": self.sampler.history(),
            }
            yield f"retry: 2000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode()
            tick = self.sampler.latest()
            yield tick.event
            last = tick.seq
            while not self.sampler.closed:
                nxt = await self.sampler.next_tick(last, timeout=max(15.0, 3 * self._interval))
                if nxt is not None:
                    last = nxt.seq
                    yield nxt.event
                elif not self._closing():
                    yield b": keep-alive\n\n"
        finally:
            self._viewers -= 1

    # ------------------------------------------------------------------ controls
    async def _control(self, request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        refusal = self._authorize(request)
        if refusal is not None:
            return refusal
        try:
            body = await _read_json(request)
            result = await run_in_threadpool(self._apply, action, body)
        except _ControlError as exc:
            return _error(exc.status, str(exc))
        _log.info("dashboard: %s %s from %s", action, body or "(all)", _client(request))
        return JSONResponse({"ok": True, "action": action, **result})

    def _apply(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        c = self._coordinator
        handlers: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
            "pause": lambda b: _pause(c, b, pause=True),
            "resume": lambda b: _pause(c, b, pause=False),
            "drain": lambda b: _drain(c, b),
            "kill": lambda b: _kill(c, b),
        }
        return handlers[action](body)


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown client"


def _name(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise _ControlError(
            400, f"'{key}' must be a non-empty string of at most {MAX_NAME} characters"
        )
    return value


def _only(body: Mapping[str, Any], allowed: tuple[str, ...], action: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _ControlError(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))} for {action}; "
            f"allowed: {', '.join(map(repr, allowed))}",
        )


def _pause(c: OperationsCoordinator, body: Mapping[str, Any], *, pause: bool) -> dict[str, Any]:
    action = "pause" if pause else "resume"
    _only(body, ("operation",), action)
    operation = _name(body, "operation")
    if operation is None:
        (c.pause if pause else c.resume)()
    elif pause:
        c.pause_operation(operation)
    else:
        c.resume_operation(operation)
    return {"operation": operation}


def _drain(c: OperationsCoordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    _only(body, ("operation",), "drain")
    operation = _name(body, "operation")
    return {"operation": operation, "killed": c.drain(operation)}


def _kill(c: OperationsCoordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    _only(body, ("token", "operation", "reason"), "kill")
    token = _name(body, "token")
    operation = _name(body, "operation")
    reason = _name(body, "reason") or "killed from the dashboard"
    if (token is None) == (operation is None):
        raise _ControlError(
            400, "kill needs exactly one of 'token' (a token id) or 'operation' (its name)"
        )
    if token is not None:
        if not c.kill_token(token, reason):
            raise _ControlError(404, f"no in-flight token {token!r} (unknown or already ended)")
        return {"token": token, "killed": 1}
    assert operation is not None
    return {"operation": operation, "killed": c.kill_operation(operation, reason)}


async def _read_json(request: Request) -> Mapping[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _ControlError(413, f"request body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _ControlError(413, f"request body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks).strip()
    if not raw:
        return {}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise _ControlError(415, "send the body as JSON with 'Content-Type: application/json'")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _ControlError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _ControlError(400, "the body must be a JSON object, for example {}")
    return body


def dashboard_app(
    coordinator: OperationsCoordinator,
    admin_token: str | None = None,
    *,
    require_token_for_reads: bool = False,
    trusted_origins: Iterable[str] = (),
    interval: float = DEFAULT_INTERVAL,
) -> DashboardApp:
    """The dashboard of ``coordinator`` as an ASGI app, to mount in a Starlette or FastAPI
    service: ``app.mount("/dashboard", dashboard_app(coordinator, admin_token=...))``.

    Args:
        coordinator: the coordinator to watch and steer (read through its public API only).
        admin_token: enables the controls, which then require
            ``Authorization: Bearer <admin_token>`` (at least 16 characters). Without it the
            dashboard is read-only.
        require_token_for_reads: the live data (``/api/snapshot``, ``/api/events``) needs the
            token too (the page asks for it); use it when the service is reachable from
            other machines.
        trusted_origins: extra origins (``"https://ops.example.com"``) allowed to call the
            API, for a dashboard behind a proxy that rewrites the ``Host`` header.
        interval: seconds between two samples (the live panels' refresh period).

    Raises:
        DashboardConfigurationError: a too short admin token or a bad setting.
    """
    return DashboardApp(
        coordinator,
        admin_token=admin_token,
        require_token_for_reads=require_token_for_reads,
        trusted_origins=trusted_origins,
        interval=interval,
    )
