"""A key's history: its events, oldest first."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.http.dashboard.key_pages import key_id_of, own_key
from infrastructure.http.dashboard.rendering import render
from infrastructure.http.dashboard.rows import history_row, key_row
from infrastructure.http.dashboard.sessions import signed_in
from infrastructure.http.dashboard.state import Dashboard


async def key_history(request: Request, dashboard: Dashboard) -> Response:
    """The key's events, oldest first: what changed, who did it and when."""
    session = await signed_in(request, dashboard)
    key = await own_key(dashboard, session, key_id_of(request))
    app = dashboard.gateway.runtime.app
    events = await run_in_threadpool(lambda: list(app.events.get(key.id)))
    return render(
        request,
        "history.html",
        title=f"History of {key.name}",
        nav="keys",
        key=key_row(key, dashboard.now()),
        events=[history_row(event) for event in events],
    )
