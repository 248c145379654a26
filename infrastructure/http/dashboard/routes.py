"""The dashboard's routes, and installing them in an app."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from infrastructure.http.dashboard.constants import BASE, SECURITY_HEADERS, STATIC_DIR
from infrastructure.http.dashboard.flag_pages import acknowledge
from infrastructure.http.dashboard.history import key_history
from infrastructure.http.dashboard.key_pages import (
    create_key,
    keys_page,
    new_key_form,
    rename_key,
    revoke_key,
    rotate_key,
    scope_key,
)
from infrastructure.http.dashboard.management_key_pages import (
    issue_management_key,
    management_keys_page,
    revoke_management_key,
    rotate_management_key,
)
from infrastructure.http.dashboard.overview import overview_page
from infrastructure.http.dashboard.rendering import page, render
from infrastructure.http.dashboard.signin import home, sign_in, sign_in_form, sign_out
from infrastructure.http.dashboard.usage import usage_csv, usage_page_view
from infrastructure.http.dashboard.webhook_pages import (
    add_webhook,
    deliveries_page,
    remove_webhook,
    webhooks_page,
)

# --- routes --------------------------------------------------------------------------------------


async def not_found_page(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    response = render(
        request, "error.html", 404, title="Not found", message="There is no such dashboard page."
    )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    await response(scope, receive, send)


async def redirect_home(request: Request) -> Response:
    return RedirectResponse(BASE + "/", status_code=307)


_pages: list[BaseRoute] = [
    Route("/", page(home), methods=["GET"]),
    Route("/sign-in", page(sign_in_form), methods=["GET"]),
    Route("/sign-in", page(sign_in), methods=["POST"]),
    Route("/sign-out", page(sign_out), methods=["POST"]),
    Route("/overview", page(overview_page), methods=["GET"]),
    Route("/keys", page(keys_page), methods=["GET"]),
    Route("/keys/new", page(new_key_form), methods=["GET"]),
    Route("/keys/new", page(create_key), methods=["POST"]),
    Route("/keys/{key_id}/history", page(key_history), methods=["GET"]),
    Route("/keys/{key_id}/flags/acknowledge", page(acknowledge), methods=["POST"]),
    Route("/keys/{key_id}/scope", page(scope_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/rename", page(rename_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/rotate", page(rotate_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/revoke", page(revoke_key), methods=["GET", "POST"]),
    Route("/usage", page(usage_page_view), methods=["GET"]),
    Route("/webhooks", page(webhooks_page), methods=["GET"]),
    Route("/webhooks", page(add_webhook), methods=["POST"]),
    Route("/webhooks/{webhook_id}/remove", page(remove_webhook), methods=["POST"]),
    Route("/webhooks/{webhook_id}/deliveries", page(deliveries_page), methods=["GET"]),
    Route("/usage.csv", page(usage_csv), methods=["GET"]),
    Route("/management-keys", page(management_keys_page), methods=["GET"]),
    Route("/management-keys", page(issue_management_key), methods=["POST"]),
    Route("/management-keys/{key_id}/rotate", page(rotate_management_key), methods=["GET", "POST"]),
    Route("/management-keys/{key_id}/revoke", page(revoke_management_key), methods=["GET", "POST"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
]

dashboard_routes: list[BaseRoute] = [
    Route(BASE, redirect_home, methods=["GET"]),
    Mount(BASE, app=Router(_pages, default=not_found_page), name="dashboard"),
]


def install_dashboard(app: Starlette) -> None:
    """Add the dashboard's routes to an app from `create_app` (once; calling again is harmless)."""
    present = app.router.routes
    if not any(route is installed for route in dashboard_routes for installed in present):
        present.extend(dashboard_routes)
