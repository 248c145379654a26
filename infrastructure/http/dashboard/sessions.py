"""Cookies, the signed-in session, CSRF checks on every POST and one-time form ids."""

import hmac
import secrets
from collections.abc import Mapping
from datetime import timedelta
from uuid import UUID

from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.dashboard_sessions import Session
from infrastructure.http.dashboard.constants import BASE, COOKIE, SESSION_LIFETIME
from infrastructure.http.dashboard.forms import read_form
from infrastructure.http.dashboard.rendering import Refusal, Stop, see_other
from infrastructure.http.dashboard.state import Dashboard


def csrf_refusal() -> Refusal:
    return Refusal(
        403,
        "Form refused",
        "This form's security token is missing or does not match your session, so nothing was "
        "changed. Go back, reload the page and try again.",
    )


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(
    request: Request, response: Response, name: str, value: str, lifetime: timedelta
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(lifetime.total_seconds()),
        path=BASE,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=BASE, secure=is_https(request), httponly=True, samesite="strict"
    )


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def current_session(request: Request, dashboard: Dashboard) -> Session | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = dashboard.cookies.loads(
            raw, max_age=int(SESSION_LIFETIME.total_seconds()), salt="session"
        )
        session_id, account, key = str(data["s"]), str(data["a"]), str(data["k"])
        account_id, key_id = UUID(account), UUID(key)
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    display = await run_in_threadpool(
        dashboard.sessions.find, session_id, account, key, dashboard.now()
    )
    if display is None:
        return None
    session = Session(
        session_id=session_id,
        account_id=account_id,
        management_key_id=key_id,
        display=display,
        csrf=dashboard.derive("csrf", session_id),
        address=client_address(request),
    )
    request.state.dashboard_session = session
    return session


async def signed_in(request: Request, dashboard: Dashboard) -> Session:
    """The request's live session, or a redirect to the sign-in page."""
    session = await current_session(request, dashboard)
    if session is not None:
        return session
    if request.cookies.get(COOKIE):
        response = see_other("/sign-in", notice="ended")
        clear_cookie(request, response, COOKIE)
    else:
        response = see_other("/sign-in")
    raise Stop(response)


async def posted(
    request: Request, dashboard: Dashboard
) -> tuple[Session, ImmutableMultiDict[str, str]]:
    """A signed-in POST whose CSRF token matches the session (else 403, nothing done)."""
    session = await signed_in(request, dashboard)
    form = await read_form(request)
    given = form.get("csrf_token", "")
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise csrf_refusal()
    return session, form


def new_form_id() -> str:
    return secrets.token_urlsafe(16)


async def use_form_once(dashboard: Dashboard, session: Session, form: Mapping[str, str]) -> bool:
    form_id = form.get("form_id", "")
    if not 8 <= len(form_id) <= 64:
        return True  # no id (an old form): allow, as the API would
    return await run_in_threadpool(
        dashboard.sessions.use_form, session.session_id, form_id, dashboard.now()
    )
