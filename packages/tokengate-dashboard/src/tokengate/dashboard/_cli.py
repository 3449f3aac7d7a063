"""``tokengate dashboard``: serve the dashboard over a demo workload to try it."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import webbrowser

from ._security import DashboardConfigurationError

__all__ = ("build_parser", "main")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tokengate dashboard``."""
    parser = argparse.ArgumentParser(
        prog="tokengate dashboard",
        description=(
            "Open the live dashboard over a synthetic workload. The dashboard watches a "
            "coordinator of its own process: in your program, call "
            "tokengate.dashboard.serve_dashboard(coordinator) or mount dashboard_app()."
        ),
    )
    parser.add_argument(
        "--demo", action="store_true", help="run a synthetic workload and serve its dashboard"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="port (0: any free port)")
    parser.add_argument(
        "--admin-token",
        default=None,
        help="token enabling the controls (default: a random one, printed)",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="no controls (no admin token at all)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (requires an admin token)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--cores", type=int, default=None, help="core domains of the demo")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Open the live browser dashboard over a synthetic workload (``--demo``).

    The ``tokengate dashboard`` subcommand (entry point ``tokengate.commands``); returns the
    exit status: 0 ok, 2 a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not args.demo:
        sys.stderr.write(
            "tokengate dashboard: nothing to watch. The dashboard serves a coordinator of the "
            "same process: run 'tokengate dashboard --demo' to try it over a synthetic "
            "workload, or call tokengate.dashboard.serve_dashboard(coordinator) in your "
            "program.\n"
        )
        return 2
    if args.read_only and args.admin_token:
        sys.stderr.write("tokengate dashboard: --read-only and --admin-token exclude each other\n")
        return 2
    if args.duration is not None and not args.duration > 0:
        sys.stderr.write(f"tokengate dashboard: --duration must be > 0, not {args.duration}\n")
        return 2
    token = None if args.read_only else (args.admin_token or secrets.token_urlsafe(24))

    from tokengate.core import ConfigurationError, OperationsCoordinator

    from ._demo import DemoWorkload
    from ._server import serve_dashboard

    try:
        coordinator = (
            OperationsCoordinator(cores=args.cores) if args.cores else OperationsCoordinator()
        )
    except ConfigurationError as exc:
        sys.stderr.write(f"tokengate dashboard: {exc}\n")
        return 2
    with coordinator:
        try:
            server = serve_dashboard(
                coordinator,
                host=args.host,
                port=args.port,
                admin_token=token,
                allow_remote=args.allow_remote,
            )
        except DashboardConfigurationError as exc:
            sys.stderr.write(f"tokengate dashboard: {exc}\n")
            return 2
        workload = DemoWorkload(coordinator).start()
        link = server.url if token is None else f"{server.url}#token={token}"
        print(f"dashboard: {server.url}")
        if token is not None:
            print(f"admin token: {token}")
            print(f"open with the token filled in: {link}")
        else:
            print("read-only: no controls")
        print("Ctrl-C to stop")
        sys.stdout.flush()
        if not args.no_browser:
            webbrowser.open(link)
        try:
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopping")
        finally:
            workload.stop()
            server.stop()
            # the demo's tokens are disposable: end them now rather than wait for slow ones
            for token_ in coordinator.in_flight():
                token_.kill("demo stopped")
            coordinator.stop(cancel_pending=True, timeout=2)
    return 0
