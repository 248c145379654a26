"""Acknowledging a key's unexpected-usage flag: the owner says "that was us"."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.flags import acknowledge_flag
from infrastructure.http.dashboard.key_pages import key_id_of, own_key
from infrastructure.http.dashboard.rendering import Refusal, call, see_other
from infrastructure.http.dashboard.sessions import posted
from infrastructure.http.dashboard.state import Dashboard
from projections.queries.forensics import flags_for_keys


async def acknowledge(request: Request, dashboard: Dashboard) -> Response:
    """POST: record the acknowledgement (an event on the key, shown in its history)."""
    session, form = await posted(request, dashboard)
    key = await own_key(dashboard, session, key_id_of(request))
    kind, subject = form.get("kind", ""), form.get("subject", "")
    runtime = dashboard.gateway.runtime
    flags = await run_in_threadpool(dashboard.reads.ask, flags_for_keys, [key.id])
    if not any(f.kind == kind and f.subject == subject for f in flags[str(key.id)]):
        raise Refusal(404, "No such flag", f"{key.name} ({key.display}) has no such flag.")
    await call(
        acknowledge_flag,
        runtime.app,
        key.id,
        kind,
        subject,
        session.actor,
        account_id=session.account_id,
    )
    return see_other("/keys", notice="acknowledged", key=str(key.id))
