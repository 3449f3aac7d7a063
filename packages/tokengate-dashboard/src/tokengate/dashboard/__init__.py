"""TokenGate dashboard: watch and steer a running coordinator from the browser.

:func:`serve_dashboard` serves it in a background thread and returns a handle with ``.url``
and ``.stop()``; :func:`dashboard_app` returns the ASGI app to mount in a Starlette or
FastAPI service. Read-only unless an admin token is configured; every control then requires
``Authorization: Bearer <admin token>``. Every script and style ships in the package: the page
makes no request outside the dashboard.
"""

from __future__ import annotations

from ._app import DashboardApp as DashboardApp
from ._app import dashboard_app as dashboard_app
from ._security import DashboardConfigurationError as DashboardConfigurationError
from ._server import DashboardServer as DashboardServer
from ._server import serve_dashboard as serve_dashboard

__all__ = (
    "DashboardApp",
    "DashboardConfigurationError",
    "DashboardServer",
    "dashboard_app",
    "serve_dashboard",
)
