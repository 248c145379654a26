"""Rendering pages, refusals and redirects, and the wrapper every dashboard endpoint goes
through."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from domain.errors import NotFound
from infrastructure.dashboard_sessions import Session
from infrastructure.error_table import ANSWERED, KEY, AnsweredError, Subject, answer_to
from infrastructure.http.dashboard.constants import (
    BASE,
    NAV,
    SECURITY_HEADERS,
    STATIC,
    TEMPLATE_DIR,
)
from infrastructure.http.dashboard.state import Dashboard, dashboard_of

T = TypeVar("T")


# --- rendering -----------------------------------------------------------------------------------

templates = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(
    request: Request,
    template: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    session: Session | None = getattr(request.state, "dashboard_session", None)
    context.setdefault("notice", None)
    context.setdefault("nav", None)
    html = templates.get_template(template).render(
        base=BASE,
        static=STATIC,
        nav_items=NAV,
        session=session,
        csrf=session.csrf if session else "",
        **context,
    )
    return HTMLResponse(html, status_code=status)


class Stop(Exception):
    """Stop handling a request with this response (a refusal page or a redirect)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


class Refusal(Exception):
    """Stop handling a request with an error page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def never_cached(response: Response) -> Response:
    """A page that shows a secret once (a token, a signing secret): no cache may keep it."""
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Pragma"] = "no-cache"
    return response


def refusal_for(error: AnsweredError, about: Subject | None = KEY) -> Refusal:
    """The dashboard's page for a refusal, from the one error table (infrastructure.error_table):
    the API's status, the table's title, the message as a sentence."""
    answer = answer_to(error, about)
    return Refusal(answer.status, answer.title, answer.page_text)


def not_found(about: Subject = KEY) -> Refusal:
    return refusal_for(NotFound(), about)


def see_other(path: str, **query: str) -> RedirectResponse:
    url = BASE + path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(url, status_code=303)


Handler = Callable[[Request, Dashboard], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A dashboard endpoint: refusals become pages, and every response gets the security headers."""

    async def endpoint(request: Request) -> Response:
        try:
            dashboard = await dashboard_of(request)
            if dashboard.gateway.lookup_trouble() is not None:
                raise Refusal(
                    503,
                    "Unavailable",
                    "The gateway's key lookup has stopped; the dashboard is unavailable until the "
                    "operator restarts it (`lowrouter projections status`).",
                )
            response = await handler(request, dashboard)
        except Stop as stop:
            response = stop.response
        except Refusal as refusal:
            response = render(
                request,
                "error.html",
                refusal.status,
                title=refusal.title,
                message=refusal.message,
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def call(function: Callable[..., T], *args: Any, about: Subject = KEY, **kwargs: Any) -> T:
    """Run a blocking application call in a worker thread; refusals become pages (`about`
    names what the path's id is of)."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except ANSWERED as error:
        raise refusal_for(error, about) from None
