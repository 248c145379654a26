"""Signing in with a management key, and signing out."""

import hmac
import secrets
import time

from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from domain.tokens import TokenKind
from infrastructure.http.auth import authenticate
from infrastructure.http.dashboard.constants import (
    COOKIE,
    MAX_MANAGEMENT_KEY_FIELD,
    SESSION_LIFETIME,
    SIGNIN_COOKIE,
    SIGNIN_FORM_LIFETIME,
)
from infrastructure.http.dashboard.forms import read_form
from infrastructure.http.dashboard.rendering import render, see_other
from infrastructure.http.dashboard.sessions import (
    clear_cookie,
    csrf_refusal,
    current_session,
    posted,
    set_cookie,
    signed_in,
)
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.http.errors import ApiError
from infrastructure.observability.context import note_error
from projections.lookup import find_key

# --- sign-in and sign-out ------------------------------------------------------------------------


async def home(request: Request, dashboard: Dashboard) -> Response:
    await signed_in(request, dashboard)
    return see_other("/overview")


SIGNIN_NOTICES = {
    "signed-out": "You are signed out.",
    "ended": "Your session has ended (signed out, expired, or its management key was revoked). "
    "Sign in again.",
}


def sign_in_page(
    request: Request, dashboard: Dashboard, status: int = 200, error: str | None = None
) -> Response:
    nonce = signin_nonce(request, dashboard) or secrets.token_urlsafe(24)
    notice = SIGNIN_NOTICES.get(request.query_params.get("notice", ""))
    response = render(
        request,
        "sign_in.html",
        status,
        title="Sign in",
        error=error,
        notice=notice,
        signin_csrf=dashboard.derive("sign-in", nonce),
    )
    set_cookie(
        request,
        response,
        SIGNIN_COOKIE,
        dashboard.cookies.dumps(nonce, salt="sign-in"),
        SIGNIN_FORM_LIFETIME,
    )
    return response


def signin_nonce(request: Request, dashboard: Dashboard) -> str | None:
    """The nonce of the browser's sign-in cookie, if it carries a valid one (so two tabs showing
    the sign-in form both work)."""
    try:
        return str(
            dashboard.cookies.loads(
                request.cookies.get(SIGNIN_COOKIE, ""),
                max_age=int(SIGNIN_FORM_LIFETIME.total_seconds()),
                salt="sign-in",
            )
        )
    except BadSignature:
        return None


async def sign_in_form(request: Request, dashboard: Dashboard) -> Response:
    if await current_session(request, dashboard) is not None:
        return see_other("/overview")
    return sign_in_page(request, dashboard)


async def sign_in(request: Request, dashboard: Dashboard) -> Response:
    form = await read_form(request)
    nonce = signin_nonce(request, dashboard)
    if nonce is None:
        raise csrf_refusal()
    expected = dashboard.derive("sign-in", nonce)
    if not hmac.compare_digest(form.get("csrf_token", "").encode(), expected.encode()):
        raise csrf_refusal()
    text = form.get("management_key", "").strip()[:MAX_MANAGEMENT_KEY_FIELD]
    if not text:
        return sign_in_page(request, dashboard, 401, "Paste a management key (lr-mk-…).")
    runtime = dashboard.gateway.runtime
    engine, pepper = runtime.engine, runtime.settings.pepper
    # Guessing management keys here is throttled like the API's failed authentications.
    throttle = dashboard.gateway.throttle
    address, moment = dashboard.gateway.client_ip(request) or "", time.monotonic()
    if throttle.banned_for(address, moment) is not None:
        note_error(429, "auth_throttled")
        message = "Too many failed sign-ins from your address: try again in a minute."
        return sign_in_page(request, dashboard, 429, message)
    try:
        record = await run_in_threadpool(
            authenticate,
            f"Bearer {text}",
            pepper,
            lambda token_hash: find_key(engine, token_hash),
            dashboard.now(),
            TokenKind.MANAGEMENT,
        )
    except ApiError as error:
        throttle.failed(address, moment)
        return sign_in_page(request, dashboard, 401, error.message)
    session_id = secrets.token_urlsafe(32)
    await run_in_threadpool(
        dashboard.sessions.start,
        session_id,
        record.account_id,
        record.key_id,
        record.display,
        dashboard.now(),
    )
    response = see_other("/overview")
    value = dashboard.cookies.dumps(
        {"s": session_id, "a": str(record.account_id), "k": str(record.key_id)}, salt="session"
    )
    set_cookie(request, response, COOKIE, value, SESSION_LIFETIME)
    clear_cookie(request, response, SIGNIN_COOKIE)
    return response


async def sign_out(request: Request, dashboard: Dashboard) -> Response:
    session, _form = await posted(request, dashboard)
    await run_in_threadpool(dashboard.sessions.end, session.session_id, dashboard.now())
    response = see_other("/sign-in", notice="signed-out")
    clear_cookie(request, response, COOKIE)
    return response
