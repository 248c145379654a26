"""The dashboard at /dashboard: server-rendered pages to manage an account's keys in a browser.

Signing in takes one of the account's management keys (`lr-mk-…`), checked like any management
request, and starts a session: a random session id in a signed, HttpOnly, SameSite=Strict cookie
(Secure over https). The cookie never holds the token. Sessions live in the database (so every
worker process of `lowrouter serve` knows them, and signing out ends one everywhere), and every
request checks both the session and that its management key is still active in the key lookup: a
revoked management key ends its sessions on their next request.

Every form carries a CSRF token derived from the session (sign-in: from a signed pre-session
cookie) and every POST checks it (403 otherwise, nothing changed). Every change goes through a
page that names the key and has an explicit confirm button, so it all works without JavaScript;
the only script copies a token to the clipboard. The usage chart is SVG drawn on the server.

A token is rendered in exactly one place: the page answering the POST that created or rotated
the key, marked `Cache-Control: no-store`, never behind a redirect. Resubmitting that form (a
browser reload of the result) is recognised by a one-time form id and creates nothing more.
"""

import hashlib
import hmac
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from application.keys import MAX_GRACE, IssuedKey
from application.retry import TooMuchContention
from domain.actor import Actor
from domain.errors import (
    DomainError,
    InvalidAmount,
    InvalidName,
    InvalidScope,
    KeyRevoked,
    NotFound,
)
from domain.keys import ApiKey
from domain.money import format_credits, parse_credits
from domain.scope import Scope as KeyScope
from domain.scope import check_name
from domain.tokens import TokenKind
from infrastructure.http.auth import authenticate
from infrastructure.http.errors import ApiError
from infrastructure.http.gateway import Gateway, durable
from projections.forensics import flags_for_keys
from projections.lookup import find_key
from projections.queries import last_used, usage_page
from projections.runner import ProjectionFailed, ProjectionLagging
from projections.schema import daily_spend, from_us, keys, to_us

T = TypeVar("T")

BASE = "/dashboard"
STATIC = BASE + "/static"
HERE = Path(__file__).parent
TEMPLATE_DIR = HERE / "templates" / "dashboard"
STATIC_DIR = HERE / "static"

COOKIE = "lr_dashboard"
SIGNIN_COOKIE = "lr_dashboard_signin"
SESSION_LIFETIME = timedelta(hours=12)
SIGNIN_FORM_LIFETIME = timedelta(hours=1)
ROTATE_AFTER = timedelta(days=90)
USAGE_PAGE_SIZE = 50
CHART_DAYS = 30
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 500
MAX_MANAGEMENT_KEY_FIELD = 200
MAX_GRACE_SECONDS = int(MAX_GRACE.total_seconds())

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
CHART_COLOURS = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#555555",
)

# --- the session tables --------------------------------------------------------------------------

# The dashboard's own tables, beside (not part of) the projections: sessions are not a function of
# the event log. Session ids and form ids are stored only as SHA-256 hashes.
session_metadata = MetaData()

sessions_table = Table(
    "lr_dashboard_sessions",
    session_metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("management_key_id", String(36), nullable=False),
    Column("management_key_display", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False, index=True),
    Column("ended_us", BigInteger),
)

used_forms_table = Table(
    "lr_dashboard_used_forms",
    session_metadata,
    Column("form_hash", String(64), primary_key=True),
    Column("session_hash", String(64), nullable=False),
    Column("used_us", BigInteger, nullable=False, index=True),
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in browser: which account, through which management key."""

    session_id: str
    account_id: UUID
    management_key_id: UUID
    display: str  # the management key's `lr-mk-AbCd…wXyZ`
    csrf: str
    address: str | None

    @property
    def actor(self) -> Actor:
        return Actor("dashboard", f"session of {self.display}", self.address)


class SessionStore:
    """Sessions in the database, so every worker process sees sign-in and sign-out alike."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ready = False
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                session_metadata.create_all(self.engine, checkfirst=True)
            except SQLAlchemyError:
                # Another process created them at the same moment; fine if they exist now.
                tables = inspect(self.engine).get_table_names()
                if not all(t in tables for t in session_metadata.tables):
                    raise
            self._ready = True

    def start(
        self, session_id: str, account_id: UUID, key_id: UUID, display: str, now: datetime
    ) -> None:
        now_us = to_us(now)
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_table).where(sessions_table.c.expires_us < now_us))
            conn.execute(
                delete(used_forms_table).where(
                    used_forms_table.c.used_us < now_us - to_us_delta(SESSION_LIFETIME)
                )
            )
            conn.execute(
                insert(sessions_table).values(
                    session_hash=_sha256(session_id),
                    account_id=str(account_id),
                    management_key_id=str(key_id),
                    management_key_display=display,
                    created_us=now_us,
                    expires_us=now_us + to_us_delta(SESSION_LIFETIME),
                )
            )

    def find(self, session_id: str, account_id: str, key_id: str, now: datetime) -> str | None:
        """The management key's display if the session is live and its key still active."""
        query = (
            select(sessions_table.c.management_key_display)
            .join(keys, keys.c.key_id == sessions_table.c.management_key_id)
            .where(
                sessions_table.c.session_hash == _sha256(session_id),
                sessions_table.c.account_id == account_id,
                sessions_table.c.management_key_id == key_id,
                sessions_table.c.ended_us.is_(None),
                sessions_table.c.expires_us > to_us(now),
                keys.c.kind == "mk",
                keys.c.status == "active",
                keys.c.account_id == account_id,
            )
        )
        with self.engine.connect() as conn:
            display = conn.execute(query).scalar_one_or_none()
        return str(display) if display is not None else None

    def end(self, session_id: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.session_hash == _sha256(session_id))
                .values(ended_us=to_us(now))
            )

    def use_form(self, session_id: str, form_id: str, now: datetime) -> bool:
        """Mark a one-time form as used; False if it already was (a resubmission)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(used_forms_table).values(
                        form_hash=_sha256(f"{session_id}:{form_id}"),
                        session_hash=_sha256(session_id),
                        used_us=to_us(now),
                    )
                )
        except IntegrityError:
            return False
        return True


def to_us_delta(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


# --- per-app state -------------------------------------------------------------------------------


@dataclass
class Dashboard:
    """What the dashboard keeps per running app: the gateway, sessions and signing secrets."""

    gateway: Gateway
    sessions: SessionStore
    secret: bytes
    cookies: URLSafeTimedSerializer

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> "Dashboard":
        # Derived from the pepper, so every worker process signs and checks alike.
        secret = hmac.new(
            gateway.runtime.settings.pepper, b"lowrouter dashboard cookies v1", hashlib.sha256
        ).digest()
        return cls(
            gateway=gateway,
            sessions=SessionStore(gateway.runtime.engine),
            secret=secret,
            cookies=URLSafeTimedSerializer(secret, salt="lowrouter-dashboard"),
        )

    def now(self) -> datetime:
        return self.gateway.clock()

    def derive(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


_STATE_LOCK = threading.Lock()


async def dashboard_of(request: Request) -> Dashboard:
    gateway: Gateway = request.app.state.gateway
    with _STATE_LOCK:
        current: Dashboard | None = getattr(request.app.state, "dashboard", None)
        if current is None or current.gateway is not gateway:
            current = Dashboard.for_gateway(gateway)
            request.app.state.dashboard = current
    await run_in_threadpool(current.sessions.ensure_schema)
    return current


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


def not_found() -> Refusal:
    return Refusal(404, "Not found", "There is no key with this id in your account.")


def see_other(path: str, **query: str) -> RedirectResponse:
    url = BASE + path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(url, status_code=303)


Handler = Callable[[Request, Dashboard], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A dashboard endpoint: refusals become pages, and every response gets the security headers."""

    async def endpoint(request: Request) -> Response:
        try:
            dashboard = await dashboard_of(request)
            if dashboard.gateway.runtime.projections.failure is not None:
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


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking application call in a worker thread; refusals become pages."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except NotFound:
        raise not_found() from None
    except KeyRevoked as error:
        raise Refusal(409, "Key revoked", f"{error}.") from None
    except (InvalidName, InvalidScope, InvalidAmount) as error:
        raise Refusal(422, "Not accepted", f"{error}.") from None
    except DomainError as error:
        raise Refusal(409, "Not possible", f"{error}.") from None
    except TooMuchContention:
        raise Refusal(503, "Busy", "The account is busy; try again in a moment.") from None
    except ProjectionLagging:
        raise Refusal(
            503,
            "Recorded, not yet in effect",
            "The change was recorded, but the key lookup has not caught up with it yet; it takes "
            "effect once it does. Reload the keys page in a moment before trying again.",
        ) from None


# --- forms, cookies, sessions --------------------------------------------------------------------


async def read_form(request: Request) -> ImmutableMultiDict[str, str]:
    """An application/x-www-form-urlencoded body of bounded size (the only kind our forms send)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Refusal(415, "Unsupported form", "Send the form from the dashboard's own pages.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise Refusal(413, "Form too large", "The form is larger than the dashboard accepts.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refusal(413, "Form too large", "The form is larger than the dashboard accepts.")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "Unreadable form", "The form could not be read.") from None
    return ImmutableMultiDict(pairs)


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


# --- how things look -----------------------------------------------------------------------------


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def credits_text(micro: int) -> str:
    """Credits for people: "0.000123", "5", "12.5" (no trailing zeros)."""
    text = format_credits(micro)
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def models_text(models: Sequence[str] | None) -> str:
    return "every model" if models is None else ", ".join(models)


def region_text(region: str | None) -> str:
    return region or "any region"


def limit_text(limit: int | None) -> str:
    return "no limit" if limit is None else f"{credits_text(limit)} credits a day"


def age_text(age: timedelta) -> str:
    days = age.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(age.total_seconds() // 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else "less than an hour"


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    display: str
    status: str
    models: str
    region: str
    daily_limit: str
    spent_today: str
    created: str
    created_iso: str
    last_used: str
    age: str
    rotate_warning: bool
    grace_until: str | None
    changeable: bool
    rotated: bool
    flags: tuple[str, ...] = ()  # unexpected usage, described for people


def key_row(
    key: ApiKey,
    now: datetime,
    spent_today: int = 0,
    last_used_at: datetime | None = None,
    flags: Sequence[str] = (),
) -> KeyRow:
    status = key.status_at(now)
    age = now - key.created_on
    return KeyRow(
        id=str(key.id),
        name=key.name,
        display=key.display,
        status=status,
        models=models_text(key.scope.models),
        region=region_text(key.scope.region),
        daily_limit=limit_text(key.scope.daily_limit),
        spent_today=credits_text(spent_today),
        created=when(key.created_on),
        created_iso=iso(key.created_on),
        last_used=when(last_used_at),
        age=age_text(age),
        rotate_warning=status != "revoked" and age > ROTATE_AFTER,
        grace_until=when(key.grace_deadline) if status == "rotating" else None,
        changeable=status != "revoked" and key.successor_id is None,
        rotated=key.successor_id is not None,
        flags=tuple(flags),
    )


# --- the catalogue as form choices ---------------------------------------------------------------


def catalogue_models(dashboard: Dashboard) -> list[tuple[str, str]]:
    """(id, label) of every model, demo models labelled."""
    return [
        (entry.id, f"{entry.id} (demo)" if entry.demo else entry.id)
        for entry in dashboard.gateway.catalogue.models.values()
    ]


def catalogue_regions(dashboard: Dashboard) -> list[str]:
    return sorted({p.region for p in dashboard.gateway.catalogue.providers.values()})


@dataclass
class ScopeForm:
    """What a scope form said, and what was wrong with it (by field)."""

    name: str
    models: list[str]
    region: str
    daily_limit: str
    errors: dict[str, str]

    @classmethod
    def of_key(cls, key: ApiKey) -> "ScopeForm":
        scope = key.scope
        return cls(
            name=key.name,
            models=list(scope.models or []),
            region=scope.region or "",
            daily_limit=credits_text(scope.daily_limit) if scope.daily_limit is not None else "",
            errors={},
        )

    @classmethod
    def read(cls, form: ImmutableMultiDict[str, str]) -> "ScopeForm":
        return cls(
            name=form.get("name", ""),
            models=list(dict.fromkeys(form.getlist("models"))),
            region=form.get("region", "").strip(),
            daily_limit=form.get("daily_limit", "").strip(),
            errors={},
        )

    def scope(self, dashboard: Dashboard, current: KeyScope | None = None) -> KeyScope | None:
        """The scope, or None with `errors` filled. Models and regions must be the catalogue's
        (or already in the key's scope, so an edit can keep what the catalogue no longer has)."""
        known_models = set(dashboard.gateway.catalogue.models)
        known_regions = set(catalogue_regions(dashboard))
        if current is not None:
            known_models.update(current.models or ())
            if current.region:
                known_regions.add(current.region)
        unknown = [m for m in self.models if m not in known_models]
        if unknown:
            self.errors["models"] = f"{unknown[0]!r} is not a model of this gateway."
        if self.region and self.region not in known_regions:
            self.errors["region"] = f"No provider of this gateway serves region {self.region!r}."
        limit: int | None = None
        if self.daily_limit:
            try:
                limit = parse_credits(self.daily_limit)
            except InvalidAmount as error:
                self.errors["daily_limit"] = f"{error}."
        if self.errors:
            return None
        try:
            return KeyScope(tuple(self.models) or None, self.region or None, limit)
        except InvalidScope as error:
            self.errors["models"] = f"{error}."
            return None

    def checked_name(self) -> str | None:
        try:
            return check_name(self.name)
        except InvalidName as error:
            self.errors["name"] = f"{error}."
            return None


def scope_changes(old: KeyScope, new: KeyScope) -> list[tuple[str, str, str]]:
    """(what, before, after) for the confirmation page."""
    return [
        ("Models", models_text(old.models), models_text(new.models)),
        ("Region", region_text(old.region), region_text(new.region)),
        ("Daily limit", limit_text(old.daily_limit), limit_text(new.daily_limit)),
    ]


# --- sign-in and sign-out ------------------------------------------------------------------------


async def home(request: Request, dashboard: Dashboard) -> Response:
    await signed_in(request, dashboard)
    return see_other("/keys")


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
        return see_other("/keys")
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
    response = see_other("/keys")
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


# --- keys ----------------------------------------------------------------------------------------


def key_id_of(request: Request) -> UUID:
    try:
        return UUID(request.path_params["key_id"])
    except ValueError:
        raise not_found() from None


async def own_key(dashboard: Dashboard, session: Session, key_id: UUID) -> ApiKey:
    """A key of the session's account; another account's key is as missing as an unknown one."""
    return await call(dashboard.gateway.runtime.ledger.get_key, key_id, session.account_id)


async def catch_up_usage(dashboard: Dashboard) -> None:
    """Bring the usage tables up to date (read-your-writes); a busy SQLite may leave them a
    moment behind, which a page can live with."""
    try:
        await run_in_threadpool(
            dashboard.gateway.runtime.projections.catch_up, ["usage", "forensics"]
        )
    except OperationalError:
        pass
    except ProjectionFailed as failure:
        raise Refusal(503, "Usage unavailable", str(failure)) from None


KEY_NOTICES = {
    "created": "Key {name} created.",
    "scoped": "The scope of {name} ({display}) is changed; it applies from the next request.",
    "renamed": "The key {display} is now called {name}.",
    "revoked": "{name} ({display}) is revoked: its token stops working on the next request.",
    "unchanged": "Nothing changed for {name} ({display}).",
    "already-done": "That form was already submitted; nothing more was done, and a token is "
    "never shown twice.",
}


async def keys_page(request: Request, dashboard: Dashboard) -> Response:
    """Every key of the account, newest first; revoked ones stay listed, greyed."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    api_keys = await call(runtime.ledger.list_keys, session.account_id)
    view = await durable(runtime.spend.view(session.account_id))
    await catch_up_usage(dashboard)
    key_ids = [key.id for key in api_keys]
    used = await run_in_threadpool(last_used, runtime.engine, key_ids)
    flags = await run_in_threadpool(flags_for_keys, runtime.engine, key_ids)
    now = dashboard.now()
    rows = [
        key_row(
            key,
            now,
            view.spent_today.get(str(key.id), 0),
            used.get(str(key.id)),
            [flag.describe() for flag in flags.get(str(key.id), [])],
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
        balance=credits_text(view.balance),
        held=credits_text(view.held),
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
    if name is None or scope is None:
        return new_key_page(request, dashboard, form, 422)
    if not await use_form_once(dashboard, session, posted_form):
        return see_other("/keys", notice="already-done")
    ledger = dashboard.gateway.runtime.ledger
    issued = await call(ledger.create_key, session.account_id, name, scope, session.actor)
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
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Pragma"] = "no-cache"
    return response


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
    if scope is None:
        return scope_page(request, dashboard, key, form, 422)
    if scope == key.scope:
        return see_other("/keys", notice="unchanged", key=str(key.id))
    if posted_form.get("confirm") != "yes":
        return render(
            request,
            "confirm.html",
            title=f"Change the scope of {key.name}?",
            nav="keys",
            key=key_row(key, dashboard.now()),
            action=f"{BASE}/keys/{key.id}/scope",
            changes=scope_changes(key.scope, scope),
            hidden=[("models", m) for m in form.models]
            + [("region", form.region), ("daily_limit", form.daily_limit)],
            button="Change scope",
            warning="Requests through this key are judged by the new scope from the next one.",
        )
    ledger = dashboard.gateway.runtime.ledger
    await call(ledger.scope_key, key.id, scope, session.actor, account_id=session.account_id)
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


async def changeable_key(dashboard: Dashboard, session: Session, key_id: UUID) -> ApiKey:
    key = await own_key(dashboard, session, key_id)
    if key.status_at(dashboard.now()) == "revoked":
        raise Refusal(
            409,
            "Key revoked",
            f"{key.name} ({key.display}) is revoked; it cannot be "
            "changed any more. Its history stays on the keys page.",
        )
    if key.successor_id is not None:
        raise Refusal(
            409,
            "Key rotated",
            f"{key.name} ({key.display}) was rotated; change its successor instead.",
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
    ledger = dashboard.gateway.runtime.ledger
    await call(ledger.rename_key, key.id, name, session.actor, account_id=session.account_id)
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
        key = await changeable_key(dashboard, session, key_id)
        return rotate_page(request, dashboard, key, "0", None)
    session, form = await posted(request, dashboard)
    text = form.get("grace_seconds", "0").strip() or "0"
    if not text.isdigit() or int(text) > MAX_GRACE_SECONDS:
        key = await changeable_key(dashboard, session, key_id)
        error = f"Enter a whole number of seconds from 0 to {MAX_GRACE_SECONDS} (30 days)."
        return rotate_page(request, dashboard, key, text[:20], error, 422)
    if not await use_form_once(dashboard, session, form):
        return see_other("/keys", notice="already-done")
    key = await changeable_key(dashboard, session, key_id)
    ledger = dashboard.gateway.runtime.ledger
    issued = await call(
        ledger.rotate_key,
        key.id,
        session.actor,
        timedelta(seconds=int(text)),
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
        if key.status_at(dashboard.now()) == "revoked":
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
    ledger = dashboard.gateway.runtime.ledger
    await call(
        ledger.revoke_key,
        key.id,
        session.actor,
        "revoked from the dashboard",
        account_id=session.account_id,
    )
    return see_other("/keys", notice="revoked", key=str(key.id))


# --- key history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRow:
    version: int
    at: str
    at_iso: str
    what: str
    who: str
    address: str
    details: list[tuple[str, str, str | None]]  # (label, text, link)


EVENT_NAMES = {
    "Created": "Created",
    "Scoped": "Scope changed",
    "Renamed": "Renamed",
    "Rotated": "Rotated",
    "Revoked": "Revoked",
}


def history_row(event: Any) -> HistoryRow:
    """One event for people. Fields are chosen by name (never the token's hash)."""
    kind = type(event).__qualname__.rsplit(".", 1)[-1]
    actor = getattr(event, "actor", None) or {}
    details: list[tuple[str, str, str | None]] = []
    if kind in ("Created", "Renamed"):
        details.append(("Name", str(event.name), None))
    if kind in ("Created", "Scoped"):
        details += [
            ("Models", models_text(event.models), None),
            ("Region", region_text(event.region), None),
            ("Daily limit", limit_text(event.daily_limit), None),
        ]
    if kind == "Created" and event.predecessor_id is not None:
        details.append(
            (
                "Rotated from",
                str(event.predecessor_id),
                f"{BASE}/keys/{event.predecessor_id}/history",
            )
        )
    if kind == "Rotated":
        details += [
            ("Successor", str(event.successor_id), f"{BASE}/keys/{event.successor_id}/history"),
            ("Old token works until", when(event.grace_deadline), None),
        ]
    if kind == "Revoked":
        details.append(("Reason", str(event.reason), None))
    return HistoryRow(
        version=int(event.originator_version),
        at=when(event.timestamp),
        at_iso=iso(event.timestamp),
        what=EVENT_NAMES.get(kind, kind),
        who=f"{actor.get('name', '')} ({actor.get('kind', '')})" if actor else "lowrouter",
        address=str(actor.get("address") or ""),
        details=details,
    )


async def key_history(request: Request, dashboard: Dashboard) -> Response:
    """The key's events, oldest first: what changed, who did it and when."""
    session = await signed_in(request, dashboard)
    key = await own_key(dashboard, session, key_id_of(request))
    ledger = dashboard.gateway.runtime.ledger
    events = await run_in_threadpool(lambda: list(ledger.events.get(key.id)))
    return render(
        request,
        "history.html",
        title=f"History of {key.name}",
        nav="keys",
        key=key_row(key, dashboard.now()),
        events=[history_row(event) for event in events],
    )


# --- usage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    legend: list[tuple[str, str, str, str]]  # (name, display, colour, total)
    days: list[tuple[str, list[str], str]]  # (day, cost per legend key, total)
    total: str
    summary: str


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (micro-credits)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def daily_chart(
    spend: Mapping[tuple[str, str], int],
    names: Mapping[str, tuple[str, str]],
    days: Sequence[str],
) -> Chart:
    """Stacked bars of each key's spend per day. `spend`: (key id, day) -> micro-credits;
    `names`: key id -> (name, display)."""
    width, height, left, top, bottom, right = 760, 260, 70, 12, 36, 12
    plot_width, plot_height = width - left - right, height - top - bottom
    key_ids = sorted(
        {key for key, _ in spend},
        key=lambda k: (-sum(v for (kk, _), v in spend.items() if kk == k), k),
    )
    colours = {k: CHART_COLOURS[i % len(CHART_COLOURS)] for i, k in enumerate(key_ids)}
    totals = {day: sum(spend.get((k, day), 0) for k in key_ids) for day in days}
    step = nice_ceiling(-(-max([*totals.values(), 1]) // 4))  # four gridlines of a round step
    top_value = 4 * step
    slot = plot_width / len(days)
    bars: list[Bar] = []
    for index, day in enumerate(days):
        base = 0
        for key in key_ids:
            cost = spend.get((key, day), 0)
            if cost <= 0:
                continue
            y0 = plot_height * base / top_value
            h = max(plot_height * cost / top_value, 1.0)
            name = names.get(key, (key[:8], ""))[0]
            bars.append(
                Bar(
                    x=round(left + index * slot + slot * 0.15, 2),
                    y=round(top + plot_height - y0 - h, 2),
                    width=round(slot * 0.7, 2),
                    height=round(h, 2),
                    colour=colours[key],
                    label=f"{day} · {name}: {credits_text(cost)} credits",
                )
            )
            base += cost
    y_ticks = [
        (round(top + plot_height - plot_height * i / 4, 2), credits_text(step * i))
        for i in range(5)
    ]
    x_ticks = [
        (round(left + i * slot + slot / 2, 2), days[i][5:])
        for i in range(len(days))
        if i % 5 == 0 or i == len(days) - 1
    ]
    legend = [
        (
            names.get(k, (k[:8], ""))[0],
            names.get(k, ("", ""))[1],
            colours[k],
            credits_text(sum(spend.get((k, d), 0) for d in days)),
        )
        for k in key_ids
    ]
    table = [
        (day, [credits_text(spend.get((k, day), 0)) for k in key_ids], credits_text(totals[day]))
        for day in reversed(days)
        if totals[day]
    ]
    total = sum(totals.values())
    summary = (
        f"Daily spend per key from {days[0]} to {days[-1]}: {credits_text(total)} credits in all"
        + (f", across {len(key_ids)} key{'s' if len(key_ids) != 1 else ''}." if key_ids else ".")
    )
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=legend,
        days=table,
        total=credits_text(total),
        summary=summary,
    )


def spend_by_day(engine: Engine, account_id: UUID, first_day: str) -> dict[tuple[str, str], int]:
    query = select(daily_spend.c.key_id, daily_spend.c.day, daily_spend.c.cost).where(
        daily_spend.c.account_id == str(account_id), daily_spend.c.day >= first_day
    )
    with engine.connect() as conn:
        return {(row.key_id, row.day): int(row.cost) for row in conn.execute(query)}


def parse_since(text: str) -> datetime | None:
    """A day (2026-01-31) or an ISO time; a time without a zone is UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = (
            datetime.combine(date.fromisoformat(text), datetime.min.time())
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise ValueError("'since' must be a day (2026-01-31) or an ISO time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class UsageRow:
    at: str
    at_iso: str
    key_id: str
    key_name: str
    key_display: str
    name_then: str | None
    model: str
    provider: str
    region: str
    prompt_tokens: int
    completion_tokens: int
    cost: str
    status: str
    latency_ms: int
    streamed: bool


async def usage_page_view(request: Request, dashboard: Dashboard) -> Response:
    """The chart of daily spend per key (30 days) and the usage history, newest first."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    params = request.query_params
    api_keys = await call(runtime.ledger.list_keys, session.account_id)
    names = {str(k.id): (k.name, k.display) for k in api_keys}
    errors: list[str] = []

    key_filter = params.get("key", "")
    key_id: UUID | None = None
    if key_filter:
        if key_filter in names:
            key_id = UUID(key_filter)
        else:
            errors.append("No such key in this account; showing every key.")
            key_filter = ""
    model_filter = params.get("model", "").strip()[:128]
    since_text = params.get("since", "").strip()[:40]
    since: datetime | None = None
    try:
        since = parse_since(since_text)
    except ValueError as error:
        errors.append(f"{error}; showing every day.")
        since_text = ""
    before_text = params.get("before", "")
    before = int(before_text) if before_text.isdigit() else None

    await catch_up_usage(dashboard)
    rows = await run_in_threadpool(
        usage_page,
        runtime.engine,
        session.account_id,
        key_id=key_id,
        model=model_filter or None,
        since_us=to_us(since) if since else None,
        before_position=before,
        limit=USAGE_PAGE_SIZE + 1,
    )
    more = len(rows) > USAGE_PAGE_SIZE
    rows = rows[:USAGE_PAGE_SIZE]
    filters = {"key": key_filter, "model": model_filter, "since": since_text}
    kept = {k: v for k, v in filters.items() if v}
    next_url = (
        f"{BASE}/usage?{urlencode({**kept, 'before': str(rows[-1]['position'])})}"
        if more and rows
        else None
    )
    first_url = f"{BASE}/usage?{urlencode(kept)}" if before is not None else None

    today = dashboard.now().astimezone(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(CHART_DAYS - 1, -1, -1)]
    spend = await run_in_threadpool(spend_by_day, runtime.engine, session.account_id, days[0])
    chart = daily_chart(spend, names, days)

    return render(
        request,
        "usage.html",
        title="Usage",
        nav="usage",
        chart=chart,
        rows=[usage_row(row, names) for row in rows],
        keys=sorted(
            ((key_id, name, display) for key_id, (name, display) in names.items()),
            key=lambda item: item[1].casefold(),
        ),
        models=[model_id for model_id, _ in catalogue_models(dashboard)],
        filters=filters,
        errors=errors,
        next_url=next_url,
        first_url=first_url,
        page_size=USAGE_PAGE_SIZE,
    )


def usage_row(row: Mapping[str, Any], names: Mapping[str, tuple[str, str]]) -> UsageRow:
    name, display = names.get(row["key_id"], (row["key_name"], ""))
    at = from_us(row["at_us"])
    return UsageRow(
        at=when(at),
        at_iso=iso(at),
        key_id=row["key_id"],
        key_name=name,
        key_display=display,
        name_then=row["key_name"] if row["key_name"] != name else None,
        model=row["model"],
        provider=row["provider"] or "",
        region=row["region"] or "",
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        cost=credits_text(int(row["cost"])),
        status=row["status"],
        latency_ms=int(row["latency_ms"]),
        streamed=bool(row["streamed"]),
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
    Route("/keys", page(keys_page), methods=["GET"]),
    Route("/keys/new", page(new_key_form), methods=["GET"]),
    Route("/keys/new", page(create_key), methods=["POST"]),
    Route("/keys/{key_id}/history", page(key_history), methods=["GET"]),
    Route("/keys/{key_id}/scope", page(scope_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/rename", page(rename_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/rotate", page(rotate_key), methods=["GET", "POST"]),
    Route("/keys/{key_id}/revoke", page(revoke_key), methods=["GET", "POST"]),
    Route("/usage", page(usage_page_view), methods=["GET"]),
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
