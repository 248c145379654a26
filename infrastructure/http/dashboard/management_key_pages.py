"""The Management keys page: the account's `lr-mk-` keys, issuing one (its token shown once),
rotating one with a grace period and revoking one, each after a confirmation naming the key.
The use cases are application.management_keys, as the management API and the CLI call them."""

from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from application import management_keys as use_cases
from application.management_keys import IssuedManagementKey, ManagementKey
from domain.accounts import DEFAULT_MANAGEMENT_KEY_NAME
from infrastructure.dashboard_sessions import Session
from infrastructure.error_table import MANAGEMENT_KEY
from infrastructure.http.dashboard.rendering import (
    Refusal,
    call,
    never_cached,
    not_found,
    render,
    see_other,
)
from infrastructure.http.dashboard.rows import when
from infrastructure.http.dashboard.sessions import new_form_id, posted, signed_in, use_form_once
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.http.grace import GRACE_FORM_ERROR, MAX_GRACE_SECONDS, BadGrace, grace_of_form

PATH = "/management-keys"
NOTICES = {
    "revoked": "The management key was revoked: it fails on the next request, and its "
    "dashboard sessions have ended.",
    "already-done": "That form was already submitted; a token is never shown twice.",
}


def key_id_of(request: Request) -> UUID:
    try:
        return UUID(request.path_params["key_id"])
    except ValueError:
        raise missing() from None


def missing() -> Refusal:
    return not_found(MANAGEMENT_KEY)


def row(key: ManagementKey, session: Session) -> dict[str, object]:
    """What the page shows of a key: never its token or hash."""
    return {
        "id": str(key.id),
        "name": key.name,
        "display": key.display,
        "status": key.status,
        "created": when(key.created_at),
        "revoked": when(key.revoked_at) if key.revoked_at else None,
        "grace_until": when(key.grace_deadline) if key.status == "rotating" else None,
        "this_session": key.id == session.management_key_id,
        "active": key.status == "active",
    }


async def own_key(dashboard: Dashboard, session: Session, key_id: UUID) -> ManagementKey:
    app = dashboard.gateway.runtime.app
    return await call(
        use_cases.get_management_key, app, session.account_id, key_id, about=MANAGEMENT_KEY
    )


async def management_keys_page(request: Request, dashboard: Dashboard) -> Response:
    session = await signed_in(request, dashboard)
    return await listing(request, dashboard, session)


async def listing(
    request: Request,
    dashboard: Dashboard,
    session: Session,
    name: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    app = dashboard.gateway.runtime.app
    keys = await call(use_cases.list_management_keys, app, session.account_id)
    return render(
        request,
        "management_keys.html",
        status,
        title="Management keys",
        nav="management-keys",
        keys=[row(key, session) for key in keys],
        name=name,
        error=error,
        form_id=new_form_id(),
        notice=NOTICES.get(request.query_params.get("notice", "")),
    )


async def issue_management_key(request: Request, dashboard: Dashboard) -> Response:
    session, form = await posted(request, dashboard)
    name = form.get("name", "").strip() or DEFAULT_MANAGEMENT_KEY_NAME
    if not await use_form_once(dashboard, session, form):
        return see_other(PATH, notice="already-done")
    app = dashboard.gateway.runtime.app
    try:
        issued = await call(
            use_cases.issue_management_key, app, session.account_id, session.actor, name
        )
    except Refusal as refusal:  # the name was not accepted (the domain's rule): say so here
        if refusal.status != 422:
            raise
        return await listing(request, dashboard, session, name[:200], refusal.message, 422)
    return token_page(request, session, issued, rotated_from=None)


def token_page(
    request: Request,
    session: Session,
    issued: IssuedManagementKey,
    rotated_from: ManagementKey | None,
) -> Response:
    """The one page that ever shows a management key's token: the answer to the POST."""
    response = render(
        request,
        "management_key_token.html",
        title="Management key rotated" if rotated_from else "Management key issued",
        nav="management-keys",
        key=row(issued.key, session),
        token=issued.token.value,
        old=row(rotated_from, session) if rotated_from else None,
    )
    return never_cached(response)


async def rotate_management_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the confirmation naming the key, with the grace period. POST: the new token, once."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await own_key(dashboard, session, key_id)
        return confirm_page(request, session, key, "rotate", "0", None)
    session, form = await posted(request, dashboard)
    key = await own_key(dashboard, session, key_id)
    text = form.get("grace_seconds", "0")
    try:
        grace = grace_of_form(text)
    except BadGrace:
        shown = text.strip()[:20]
        return confirm_page(request, session, key, "rotate", shown, GRACE_FORM_ERROR, 422)
    if not await use_form_once(dashboard, session, form):
        return see_other(PATH, notice="already-done")
    app = dashboard.gateway.runtime.app
    issued = await call(
        use_cases.rotate_management_key,
        app,
        session.account_id,
        key.id,
        session.actor,
        grace,
        about=MANAGEMENT_KEY,
    )
    old = await own_key(dashboard, session, key.id)
    return token_page(request, session, issued, rotated_from=old)


async def revoke_management_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the confirmation naming the key. POST: revoke it."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await own_key(dashboard, session, key_id)
        return confirm_page(request, session, key, "revoke", "", None)
    session, _form = await posted(request, dashboard)
    key = await own_key(dashboard, session, key_id)
    app = dashboard.gateway.runtime.app
    await call(
        use_cases.revoke_management_key,
        app,
        session.account_id,
        key.id,
        session.actor,
        using=session.management_key_id,  # never lock the owner out with the last active key
        about=MANAGEMENT_KEY,
    )
    return see_other(PATH, notice="revoked")


def confirm_page(
    request: Request,
    session: Session,
    key: ManagementKey,
    action: str,
    grace: str,
    error: str | None,
    status: int = 200,
) -> Response:
    if key.status != "active" and (action == "rotate" or key.status == "revoked"):
        raise Refusal(409, "Not possible", f"Management key {key.display} is {key.status}.")
    return render(
        request,
        "management_key_confirm.html",
        status,
        title=f"{action.capitalize()} {key.name}?",
        nav="management-keys",
        key=row(key, session),
        action=action,
        grace=grace,
        error=error,
        max_grace=MAX_GRACE_SECONDS,
        form_id=new_form_id(),
    )
