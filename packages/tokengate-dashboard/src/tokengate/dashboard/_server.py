"""``serve_dashboard``: the dashboard on its own uvicorn server, in a background thread."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from ._app import DEFAULT_INTERVAL, DashboardApp
from ._security import (
    DashboardConfigurationError,
    check_admin_token,
    check_bind,
    is_loopback,
    loopback_hosts,
)

if TYPE_CHECKING:
    from typing import Self

    from tokengate.core import OperationsCoordinator

__all__ = ("DashboardServer", "serve_dashboard")

_log = logging.getLogger("tokengate.dashboard")

#: Seconds ``serve_dashboard`` waits for the server to accept connections.
STARTUP_TIMEOUT = 10.0
#: Seconds ``stop()`` waits for the server thread before giving up on it.
STOP_TIMEOUT = 5.0


class DashboardServer:
    """A running dashboard: its :attr:`url`, and :meth:`stop` (also a context manager).

    Made by :func:`serve_dashboard`; the server runs in a daemon thread of this process.
    """

    def __init__(
        self, app: DashboardApp, server: uvicorn.Server, thread: threading.Thread, url: str
    ) -> None:
        self._app = app
        self._server = server
        self._thread = thread
        self._url = url
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        """The dashboard's address, ``http://host:port/`` (the page; the API is under
        ``api/``)."""
        return self._url

    @property
    def app(self) -> DashboardApp:
        """The ASGI application being served."""
        return self._app

    @property
    def running(self) -> bool:
        """Whether the server thread still serves."""
        return self._thread.is_alive() and not self._stopped

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close the live feeds and stop the server; waits at most ``timeout`` seconds.

        Safe to call more than once and from any thread. Never hangs: open connections are
        cut when the graceful period ends.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._app.close()
        self._server.should_exit = True
        self._thread.join(timeout / 2)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout / 2)
        if self._thread.is_alive():
            _log.warning("dashboard server thread did not stop within %.1f s", timeout)
        else:
            _log.info("dashboard at %s stopped", self._url)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DashboardServer {self._url} {state}>"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DashboardConfigurationError(
                f"port {port} on {host} is in use: pass another port, or port=0 to pick a free one"
            ) from exc
        raise DashboardConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.setblocking(False)
    return sock


def serve_dashboard(
    coordinator: OperationsCoordinator,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    admin_token: str | None = None,
    allow_remote: bool = False,
    interval: float = DEFAULT_INTERVAL,
) -> DashboardServer:
    """Serve the dashboard of ``coordinator`` in a background thread; returns at once.

    Args:
        coordinator: the coordinator to watch and steer.
        host: the address to listen on; loopback (``127.0.0.1``, ``::1``, ``localhost``)
            unless ``allow_remote`` is set.
        port: the TCP port; 0 picks a free one (read it from the handle's ``url``).
        admin_token: enables the controls, which then require
            ``Authorization: Bearer <admin_token>`` (at least 16 characters). Without it the
            dashboard is read-only.
        allow_remote: allow a non-loopback ``host``; requires ``admin_token``, and then the
            live data needs the token too.
        interval: seconds between two samples (the panels' refresh period).

    Returns:
        A :class:`DashboardServer` with ``.url`` and ``.stop()``.

    Raises:
        DashboardConfigurationError: a non-loopback host without ``allow_remote=True`` and an
            admin token, a too short admin token, or a port that cannot be bound.
    """
    if not isinstance(host, str) or not host.strip():
        raise DashboardConfigurationError(f"host must be a non-empty str, not {host!r}")
    token = check_admin_token(admin_token)
    check_bind(host, admin_token=token, allow_remote=allow_remote)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise DashboardConfigurationError(f"port must be an int in 0..65535, not {port!r}")
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    loopback = is_loopback(host)
    try:
        app = DashboardApp(
            coordinator,
            admin_token=admin_token,
            require_token_for_reads=not loopback,
            allowed_hosts=loopback_hosts(bound_port) if loopback else None,
            interval=interval,
        )
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        ws="none",
        server_header=False,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def _serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller while it waits for startup
            failure.append(exc)
            _log.exception("dashboard server failed")
        finally:
            sock.close()

    thread = threading.Thread(target=_serve, name=f"tokengate-dashboard-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if failure or not thread.is_alive():
            raise DashboardConfigurationError(
                f"the dashboard server did not start: {failure[0] if failure else 'it exited'}"
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise DashboardConfigurationError(
                f"the dashboard server did not start within {STARTUP_TIMEOUT:g} s"
            )
        time.sleep(0.01)
    shown = host if ":" not in host or host.startswith("[") else f"[{host}]"
    url = f"http://{shown}:{bound_port}/"
    _log.info(
        "dashboard of %r at %s (%s)",
        coordinator,
        url,
        "controls enabled" if token is not None else "read-only",
    )
    return DashboardServer(app, server, thread, url)
