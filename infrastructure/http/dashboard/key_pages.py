"""The keys pages: the list, and creating, scoping, renaming, rotating and revoking a key."""

from collections.abc import Sequence
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.app import IssuedKey
from domain.keys import ApiKey
from infrastructure.dashboard_sessions import Session
from infrastructure.http.dashboard.constants import BASE, ROTATE_AFTER
from infrastructure.http.dashboard.forms import (
    ScopeForm,
    catalogue_models,
    catalogue_regions,
    scope_changes,
)
from infrastructure.http.dashboard.money import money
from infrastructure.http.dashboard.rendering import (
    Refusal,
    call,
    never_cached,
    not_found,
    render,
    see_other,
)
from infrastructure.http.dashboard.rows import KeyRow, key_row, when
from infrastructure.http.dashboard.sessions import new_form_id, posted, signed_in, use_form_once
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.http.gateway import durable
from infrastructure.http.grace import GRACE_FORM_ERROR, MAX_GRACE_SECONDS, BadGrace, grace_of_form
from projections.queries.forensics import flags_for_keys
from projections.queries.management import last_used, meters

# --- keys ----------------------------------------------------------------------------------------


def key_id_of(request: Request) -> UUID:
    try:
        return UUID(request.path_params["key_id"])
    except ValueError:
        raise not_found() from None


async def own_key(dashboard: Dashboard, session: Session, key_id: UUID) -> ApiKey:
    """A key of the session's account; another account's key is as missing as an unknown one."""
    return await call(dashboard.gateway.runtime.app.get_key, key_id, session.account_id)


KEY_NOTICES = {
    "created": "Key {name} created.",
    "scoped": "The scope of {name} ({display}) is changed; it applies from the next request.",
    "renamed": "The key {display} is now called {name}.",
    "revoked": "{name} ({display}) is revoked: its token stops working on the next request.",
    "unchanged": "Nothing changed for {name} ({display}).",
    "acknowledged": "The flag of {name} ({display}) is acknowledged; it stays in its history.",
    "already-done": "That form was already submitted; nothing more was done, and a token is "
    "never shown twice.",
}


async def keys_page(request: Request, dashboard: Dashboard) -> Response:
    """Every key of the account, newest first; revoked ones stay listed, greyed."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    api_keys = await call(runtime.app.list_keys, session.account_id)
    view = await durable(runtime.spend.view(session.account_id))
    key_ids = [key.id for key in api_keys]
    reads = dashboard.reads
    used = await run_in_threadpool(reads.ask, last_used, key_ids)
    metered = await run_in_threadpool(reads.ask, meters, key_ids)
    flags = await run_in_threadpool(reads.ask, flags_for_keys, key_ids)
    now = dashboard.now()
    rows = [
        key_row(
            key,
            now,
            view.limits_of(metered[str(key.id)]).spent_today,  # the lineage's, as its limit
            used.get(str(key.id)),
            flags.get(str(key.id), []),
        )
        for key in reversed(api_keys)  # the account lists them in creation order
    ]
    return render(
        request,
        "keys.html",
        title="Keys",
        nav="keys",
        keys=rows,
        notice=key_notice(request, rows),
        balance=money(view.balance),
        held=money(view.held),
        rotate_days=ROTATE_AFTER.days,
    )


def key_notice(request: Request, rows: Sequence[KeyRow]) -> str | None:
    template = KEY_NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    row = next((r for r in rows if r.id == request.query_params.get("key")), None)
    if row is None:
        return None if "{" in template else template
    return template.format(name=row.name, display=row.display)


async def new_key_form(request: Request, dashboard: Dashboard) -> Response:
    await signed_in(request, dashboard)
    form = ScopeForm(name="", models=[], region="", daily_limit="", errors={})
    return new_key_page(request, dashboard, form)


def new_key_page(
    request: Request, dashboard: Dashboard, form: ScopeForm, status: int = 200
) -> Response:
    return render(
        request,
        "new_key.html",
        status,
        title="New key",
        nav="keys",
        form=form,
        models=catalogue_models(dashboard),
        regions=catalogue_regions(dashboard),
        form_id=new_form_id(),
    )


async def create_key(request: Request, dashboard: Dashboard) -> Response:
    session, posted_form = await posted(request, dashboard)
    form = ScopeForm.read(posted_form)
    name = form.checked_name()
    scope = form.scope(dashboard)
    policy = form.policy(dashboard.now())
    if name is None or scope is None or policy is None:
        return new_key_page(request, dashboard, form, 422)
    if not await use_form_once(dashboard, session, posted_form):
        return see_other("/keys", notice="already-done")
    app = dashboard.gateway.runtime.app
    issued = await call(app.create_key, session.account_id, name, scope, session.actor, policy)
    return token_page(request, dashboard, issued, rotated_from=None)


def token_page(
    request: Request, dashboard: Dashboard, issued: IssuedKey, rotated_from: ApiKey | None
) -> Response:
    """The one page that ever shows a token: the answer to the POST that issued it."""
    now = dashboard.now()
    response = render(
        request,
        "token.html",
        title="Key rotated" if rotated_from else "Key created",
        nav="keys",
        key=key_row(issued.key, now),
        token=issued.token.value,
        old=key_row(rotated_from, now) if rotated_from else None,
        old_until=when(rotated_from.grace_deadline) if rotated_from else None,
        old_still_works=bool(
            rotated_from and rotated_from.grace_deadline and rotated_from.grace_deadline > now
        ),
    )
    return never_cached(response)


async def scope_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the scope form. POST: the confirmation naming the key; POST confirmed: the change."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await changeable_key(dashboard, session, key_id)
        return scope_page(request, dashboard, key, ScopeForm.of_key(key))
    session, posted_form = await posted(request, dashboard)
    key = await changeable_key(dashboard, session, key_id)
    form = ScopeForm.read(posted_form)
    form.name = key.name
    scope = form.scope(dashboard, key.scope)
    policy = form.policy(dashboard.now(), key.policy)
    if scope is None or policy is None:
        return scope_page(request, dashboard, key, form, 422)
    if scope == key.scope and policy == key.policy:
        return see_other("/keys", notice="unchanged", key=str(key.id))
    if posted_form.get("confirm") != "yes":
        return render(
            request,
            "confirm.html",
            title=f"Change the scope of {key.name}?",
            nav="keys",
            key=key_row(key, dashboard.now()),
            action=f"{BASE}/keys/{key.id}/scope",
            changes=scope_changes(key.scope, scope, key.policy, policy),
            hidden=form.hidden(),
            button="Change scope",
            warning="Requests through this key are judged by the new scope from the next one.",
        )
    app = dashboard.gateway.runtime.app
    await call(
        app.update_key,
        key.id,
        session.actor,
        scope_changes=scope.as_parts(),
        policy_changes=policy.as_parts(),
        account_id=session.account_id,
    )
    return see_other("/keys", notice="scoped", key=str(key.id))


def scope_page(
    request: Request, dashboard: Dashboard, key: ApiKey, form: ScopeForm, status: int = 200
) -> Response:
    models = catalogue_models(dashboard)
    known = {model_id for model_id, _label in models}
    models += [(m, f"{m} (no longer in the catalogue)") for m in form.models if m not in known]
    regions = catalogue_regions(dashboard)
    if key.scope.region and key.scope.region not in regions:
        regions.append(key.scope.region)
    return render(
        request,
        "scope.html",
        status,
        title=f"Scope of {key.name}",
        nav="keys",
        key=key_row(key, dashboard.now()),
        form=form,
        models=models,
        regions=regions,
    )


async def changeable_key(
    dashboard: Dashboard, session: Session, key_id: UUID, *, rotating: bool = False
) -> ApiKey:
    """The key, if the access policy (domain.access) lets it be changed (`rotating`: rotated)."""
    key = await own_key(dashboard, session, key_id)
    access = key.access_at(dashboard.now())
    if not access.changeable:
        raise Refusal(
            409,
            "Key revoked",
            f"{key.name} ({key.display}) is revoked; it cannot be "
            "changed any more. Its history stays on the keys page.",
        )
    if rotating and not access.rotatable:
        raise Refusal(
            409,
            "Key rotated",
            f"{key.name} ({key.display}) was rotated; rotate its successor instead.",
        )
    return key


async def rename_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the rename form. POST: the confirmation naming the key; POST confirmed: the change."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await changeable_key(dashboard, session, key_id)
        return rename_page(request, dashboard, key, key.name, None)
    session, posted_form = await posted(request, dashboard)
    key = await changeable_key(dashboard, session, key_id)
    form = ScopeForm(posted_form.get("name", ""), [], "", "", {})
    name = form.checked_name()
    if name is None:
        return rename_page(request, dashboard, key, form.name, form.errors["name"], 422)
    if name == key.name:
        return see_other("/keys", notice="unchanged", key=str(key.id))
    if posted_form.get("confirm") != "yes":
        return render(
            request,
            "confirm.html",
            title=f"Rename {key.name}?",
            nav="keys",
            key=key_row(key, dashboard.now()),
            action=f"{BASE}/keys/{key.id}/rename",
            changes=[("Name", key.name, name)],
            hidden=[("name", name)],
            button="Rename",
            warning="Usage already recorded keeps the name the key had at the time.",
        )
    app = dashboard.gateway.runtime.app
    await call(app.rename_key, key.id, name, session.actor, account_id=session.account_id)
    return see_other("/keys", notice="renamed", key=str(key.id))


def rename_page(
    request: Request,
    dashboard: Dashboard,
    key: ApiKey,
    name: str,
    error: str | None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "rename.html",
        status,
        title=f"Rename {key.name}",
        nav="keys",
        key=key_row(key, dashboard.now()),
        name=name,
        error=error,
    )


async def rotate_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the confirmation naming the key, with the grace period. POST: the new token, once."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await changeable_key(dashboard, session, key_id, rotating=True)
        return rotate_page(request, dashboard, key, "0", None)
    session, form = await posted(request, dashboard)
    text = form.get("grace_seconds", "0")
    try:
        grace = grace_of_form(text)
    except BadGrace:
        key = await changeable_key(dashboard, session, key_id, rotating=True)
        return rotate_page(request, dashboard, key, text.strip()[:20], GRACE_FORM_ERROR, 422)
    if not await use_form_once(dashboard, session, form):
        return see_other("/keys", notice="already-done")
    key = await changeable_key(dashboard, session, key_id, rotating=True)
    app = dashboard.gateway.runtime.app
    issued = await call(
        app.rotate_key,
        key.id,
        session.actor,
        grace,
        account_id=session.account_id,
    )
    old = await own_key(dashboard, session, key.id)
    return token_page(request, dashboard, issued, rotated_from=old)


def rotate_page(
    request: Request,
    dashboard: Dashboard,
    key: ApiKey,
    grace: str,
    error: str | None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "rotate.html",
        status,
        title=f"Rotate {key.name}?",
        nav="keys",
        key=key_row(key, dashboard.now()),
        grace=grace,
        error=error,
        max_grace=MAX_GRACE_SECONDS,
        form_id=new_form_id(),
    )


async def revoke_key(request: Request, dashboard: Dashboard) -> Response:
    """GET: the confirmation naming the key. POST: revoke it (the dashboard's "Delete")."""
    key_id = key_id_of(request)
    if request.method == "GET":
        session = await signed_in(request, dashboard)
        key = await own_key(dashboard, session, key_id)
        if not key.access_at(dashboard.now()).revocable:
            raise Refusal(409, "Already revoked", f"{key.name} ({key.display}) is already revoked.")
        return render(
            request,
            "revoke.html",
            title=f"Revoke {key.name}?",
            nav="keys",
            key=key_row(key, dashboard.now()),
        )
    session, _form = await posted(request, dashboard)
    key = await own_key(dashboard, session, key_id)
    app = dashboard.gateway.runtime.app
    await call(
        app.revoke_key,
        key.id,
        session.actor,
        "revoked from the dashboard",
        account_id=session.account_id,
    )
    return see_other("/keys", notice="revoked", key=str(key.id))
