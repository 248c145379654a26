"""The management API under /api/v1 (API.md, Management): an account's keys, their history and
usage, and the account's credits, for the holder of one of the account's management keys.

A key of another account is reported exactly like a missing one (404 `key_not_found`). Bodies are
JSON objects of known fields only: nothing a client sends can set a key's status, id or spend.
Handlers parse, call one application method in a worker thread, and render (infrastructure.views).
"""

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from application.app import IssuedKey, Lowrouter
from application.audit import key_history
from application.spend import PageView
from domain.actor import Actor
from domain.errors import (
    InvalidAmount,
    InvalidName,
    InvalidPolicy,
    InvalidScope,
    NotFound,
    UnknownScopePart,
)
from domain.keys import ApiKey
from domain.money import format_credits, parse_credits
from domain.policy import POLICY_FIELDS, KeyPolicy, PolicyChanges
from domain.rotation import MAX_GRACE
from domain.scope import SCOPE_FIELDS, Scope, ScopeChanges, check_name
from domain.tokens import TokenKind
from infrastructure.catalogue import Catalogue
from infrastructure.error_table import ANSWERED, KEY, Subject
from infrastructure.http.errors import ApiError, api_error
from infrastructure.http.gateway import Gateway, durable
from infrastructure.http.grace import MAX_GRACE_SECONDS, BadGrace, grace_of
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.limits import parse_json, whole_number
from infrastructure.served import served
from infrastructure.times import parse_time_text
from infrastructure.views import key_event_json, key_json, key_state_json, usage_json
from projections.queries.management import last_used, meters, usage_page
from projections.runner import ProjectionFailed
from projections.schema import to_us

T = TypeVar("T")

DEFAULT_USAGE_LIMIT = 100
MAX_USAGE_LIMIT = 500

CREATE_FIELDS = frozenset({"name", *SCOPE_FIELDS, *POLICY_FIELDS})
PATCH_FIELDS = CREATE_FIELDS
ROTATE_FIELDS = frozenset({"grace_seconds"})
REVOKE_FIELDS = frozenset({"reason"})
# Fields of the KEY shape a client may read but never write (named in the 422's message).
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "display",
        "prefix",
        "last4",
        "status",
        "created_at",
        "last_used_at",
        "revoked_at",
        "rotation_grace_until",
        "predecessor_id",
        "successor_id",
        "spent_today",
        "account_id",
        "key",
        "token",
    }
)
MAX_REASON = 200


# --- who is calling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated management request: the account it acts for, and who to record."""

    gateway: Gateway
    account_id: UUID
    actor: Actor

    @property
    def app(self) -> Lowrouter:
        return self.gateway.runtime.app

    def now(self) -> datetime:
        return self.gateway.clock()


async def authenticate(request: Request) -> Caller:
    gateway: Gateway = request.app.state.gateway
    record = await gateway.authenticate(request, TokenKind.MANAGEMENT)
    address = gateway.client_ip(request)
    return Caller(gateway, record.account_id, Actor("management_key", record.display, address))


# --- running application commands -------------------------------------------------------------


async def call(function: Callable[..., T], *args: Any, about: Subject = KEY, **kwargs: Any) -> T:
    """Run a blocking application call in a worker thread; refusals become API errors (the one
    error table, infrastructure.error_table; `about` names what the path's id is of)."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except ANSWERED as error:
        raise api_error(error, about) from None


def key_not_found() -> ApiError:
    return api_error(NotFound(), KEY)


def parse_key_id(request: Request) -> UUID:
    """The path's key id; a malformed one is as missing as an unknown one."""
    try:
        return UUID(request.path_params["key_id"])
    except ValueError:
        raise key_not_found() from None


# --- reading requests -------------------------------------------------------------------------


async def read_object(caller: Caller, request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object body (an empty body is `{}`), with only `allowed` fields."""
    raw = await caller.gateway.read_body(request)
    if not raw.strip():
        return {}
    body = await parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
    check_fields(body, allowed)
    return body


def check_fields(given: Iterable[str], allowed: frozenset[str], what: str = "field") -> None:
    unknown = sorted(set(given) - allowed)
    if not unknown:
        return
    name = unknown[0]
    why = "is read-only" if name in READ_ONLY_FIELDS else f"is not a known {what}"
    accepted = ", ".join(sorted(allowed)) or "none"
    raise ApiError(
        422,
        "unknown_field" if what == "field" else "unknown_parameter",
        f"{name!r} {why}; this request accepts: {accepted}.",
        param=name,
    )


def check_query(request: Request, allowed: frozenset[str]) -> QueryParams:
    check_fields(request.query_params.keys(), allowed, "query parameter")
    return request.query_params


def wrong_type(field: str, expected: str) -> NoReturn:
    raise ApiError(422, "invalid_type", f"{field!r} must be {expected}.", param=field)


def name_field(body: Mapping[str, Any]) -> str:
    if "name" not in body:
        raise ApiError(422, "missing_field", "'name' is required.", param="name")
    name = body["name"]
    if not isinstance(name, str):
        wrong_type("name", "a string")
    try:
        return check_name(name)
    except InvalidName as error:
        raise api_error(error) from None


def scope_parts(body: Mapping[str, Any], catalogue: Catalogue) -> ScopeChanges:
    """The scope fields present in the body, each checked on its own (so a 422 names it), and
    the models and region against what the gateway serves (domain.scope.Served)."""
    parsers: dict[str, Callable[[Any], Any]] = {
        "models": models_field,
        "region": region_field,
        "daily_limit": lambda value: credits_field("daily_limit", value),
    }
    parts: ScopeChanges = {}
    for name in SCOPE_FIELDS:
        if name in body:
            parts[name] = parsers[name](body[name])
    try:
        served(catalogue).check(parts.get("models"), parts.get("region"))
    except UnknownScopePart as error:
        raise api_error(error) from None
    return parts


def models_field(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(model, str) for model in value):
        wrong_type("models", "a list of model ids, or null for every model")
    models = tuple(value)
    check_scope_part("models", models)
    return models


def region_field(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        wrong_type("region", "a string, or null for any region")
    check_scope_part("region", value)
    return value


def credits_field(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        wrong_type(name, "an amount of credits (a decimal string or number), or null")
    try:
        return parse_credits(value)
    except InvalidAmount as error:
        raise api_error(error, param=name) from None


def policy_parts(body: Mapping[str, Any], now: datetime) -> PolicyChanges:
    """The key policy's fields present in the body (null clears one), each checked on its own
    by the domain's rules (so a 422 names it)."""
    parts: PolicyChanges = {}
    for name in POLICY_FIELDS:
        if name not in body:
            continue
        value = body[name]  # JSON: checked by the domain's rules below
        if value is None:
            pass
        elif name == "expires_at":
            value = expiry_field(value, now)
        elif name == "monthly_limit":
            value = credits_field(name, value)
        elif name == "allowed_ips" and isinstance(value, list):
            value = tuple(value)
        try:
            KeyPolicy(**{name: value})
        except InvalidPolicy as error:
            raise ApiError(422, "invalid_policy", f"{error}.", param=name) from None
        parts[name] = value
    return parts


def expiry_field(value: Any, now: datetime) -> datetime:
    if not isinstance(value, str):
        wrong_type("expires_at", "an ISO 8601 time (e.g. 2026-12-31T00:00:00Z), or null")
    try:
        moment = parse_time_text(value)
    except ValueError:
        wrong_type("expires_at", "an ISO 8601 time (e.g. 2026-12-31T00:00:00Z), or null")
    if moment <= now:
        raise ApiError(
            422,
            "invalid_policy",
            "'expires_at' is in the past; revoke the key to stop it now.",
            param="expires_at",
        )
    return moment.astimezone(UTC)


def check_scope_part(field: str, value: Any) -> None:
    """The domain's scope rules for one part alone, so the 422 names the field."""
    try:
        Scope(**{field: value})
    except InvalidScope as error:
        raise api_error(error, param=field) from None


def grace_field(body: Mapping[str, Any]) -> timedelta:
    try:
        return grace_of(body.get("grace_seconds", 0))
    except BadGrace as bad:
        if bad.wrong_type:
            wrong_type("grace_seconds", "a number of seconds")
        raise ApiError(
            422,
            "invalid_value",
            f"'grace_seconds' must be between 0 and {MAX_GRACE_SECONDS} ({MAX_GRACE.days} days).",
            param="grace_seconds",
        ) from None


def reason_field(body: Mapping[str, Any]) -> str:
    reason = body.get("reason", "revoked through the management API")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        wrong_type("reason", f"a non-blank string of at most {MAX_REASON} characters")
    return reason


def time_param(params: QueryParams, name: str) -> datetime | None:
    """An ISO 8601 time (a time without a zone is UTC); None when absent."""
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_time_text(text)
    except ValueError:
        raise ApiError(
            422,
            "invalid_value",
            f"{name!r} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z.",
            param=name,
        ) from None


# --- cursors ----------------------------------------------------------------------------------

_CURSOR_PREFIX = "p:"


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position = whole_number(text.removeprefix(_CURSOR_PREFIX))
        if text.startswith(_CURSOR_PREFIX) and position is not None:
            return position
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(
        422,
        "invalid_cursor",
        "'cursor' must be a next_cursor from a previous page.",
        param="cursor",
    )


# --- rendering --------------------------------------------------------------------------------


async def page_view(caller: Caller) -> PageView:
    return await durable(caller.gateway.spend.view(caller.account_id))


async def render_keys(caller: Caller, keys: list[ApiKey]) -> list[dict[str, Any]]:
    """KEY shapes with today's spend (the ledger's, of the key's rotation lineage: what its
    daily limit counts) and last use (the usage history)."""
    view = await page_view(caller)
    # Best effort: a key's change must never look refused after it was applied, so a failed
    # usage history leaves last_used_at behind, and a failed keys projection leaves a key it
    # does not hold yet with its own figures.
    reads = caller.gateway.runtime.reads.best_effort
    ids = [key.id for key in keys]
    used = await run_in_threadpool(reads.ask, last_used, ids)
    metered = await run_in_threadpool(reads.ask, meters, ids)
    now = caller.now()
    return [
        key_json(
            key,
            now,
            spent_today=view.limits_of(metered[str(key.id)]).spent_today,
            last_used_at=used.get(str(key.id)),
        )
        for key in keys
    ]


async def render_key(caller: Caller, key: ApiKey) -> dict[str, Any]:
    return (await render_keys(caller, [key]))[0]


def issued_response(
    caller: Caller, issued: IssuedKey, data: dict[str, Any] | None = None
) -> Response:
    """201 with the token: the one and only time it is shown. `data`: the KEY when it is not
    fresh (a rotation's successor has its lineage's spend)."""
    data = data or key_json(issued.key, caller.now())
    return json_response({"key": issued.token.value, "data": data}, status=201)


# --- keys -------------------------------------------------------------------------------------


async def create_key(request: Request) -> Response:
    """Create an inference key; the response carries its token, shown only this once."""
    caller = await authenticate(request)
    body = await read_object(caller, request, CREATE_FIELDS)
    name = name_field(body)
    scope = Scope(**scope_parts(body, caller.gateway.catalogue))
    policy = KeyPolicy(**policy_parts(body, caller.now()))
    issued = await call(caller.app.create_key, caller.account_id, name, scope, caller.actor, policy)
    return issued_response(caller, issued)


async def list_keys(request: Request) -> Response:
    """The account's keys, revoked ones included, oldest first, a page at a time (`limit`,
    `cursor`; `next_cursor` is null on the last page). Never a token."""
    caller = await authenticate(request)
    check_query(request, frozenset({"limit", "cursor"}))
    params = request.query_params
    offset = decode_cursor(params["cursor"]) if params.get("cursor") else 0
    limit = limit_param(params)
    keys = await call(caller.app.list_keys, caller.account_id, offset, limit + 1)
    more = len(keys) > limit
    keys = keys[:limit]
    next_cursor = encode_cursor(offset + limit) if more else None
    return json_response({"data": await render_keys(caller, keys), "next_cursor": next_cursor})


async def get_key(request: Request) -> Response:
    caller = await authenticate(request)
    check_query(request, frozenset())
    key = await call(caller.app.get_key, parse_key_id(request), caller.account_id)
    return json_response(await render_key(caller, key))


async def patch_key(request: Request) -> Response:
    """Rename, rescope and/or change the policy. A field set to null clears it; an absent one
    is kept. Whether the key may change is the access policy's answer (domain.access)."""
    caller = await authenticate(request)
    key_id = parse_key_id(request)
    body = await read_object(caller, request, PATCH_FIELDS)
    name = name_field(body) if "name" in body else None
    parts = scope_parts(body, caller.gateway.catalogue)
    policy = policy_parts(body, caller.now())
    key = await call(
        caller.app.update_key,
        key_id,
        caller.actor,
        name=name,
        scope_changes=parts,
        policy_changes=policy,
        account_id=caller.account_id,
    )
    return json_response(await render_key(caller, key))


async def revoke_key(request: Request) -> Response:
    """Revoke: the token stops working on the next request. Body: optional `{reason}`."""
    caller = await authenticate(request)
    key_id = parse_key_id(request)
    body = await read_object(caller, request, REVOKE_FIELDS)
    reason = reason_field(body)
    key = await call(
        caller.app.revoke_key, key_id, caller.actor, reason, account_id=caller.account_id
    )
    return json_response(await render_key(caller, key))


async def rotate_key(request: Request) -> Response:
    """A successor with the same name and scope; the old key works until the grace ends."""
    caller = await authenticate(request)
    key_id = parse_key_id(request)
    body = await read_object(caller, request, ROTATE_FIELDS)
    grace = grace_field(body)
    issued = await call(
        caller.app.rotate_key, key_id, caller.actor, grace, account_id=caller.account_id
    )
    return issued_response(caller, issued, await render_key(caller, issued.key))


# --- history ----------------------------------------------------------------------------------


async def key_events(request: Request) -> Response:
    """The key's events, oldest first; with `as_of`, those up to then and the state they made.
    The same replay as `lowrouter audit` (application.audit.key_history)."""
    caller = await authenticate(request)
    key_id = parse_key_id(request)
    as_of = time_param(check_query(request, frozenset({"as_of"})), "as_of")
    history = await call(key_history, caller.app, key_id, as_of, caller.account_id)
    data = [key_event_json(event) for event in history.events]
    if as_of is None:
        return json_response({"data": data})
    return json_response({"data": data, "state": key_state_json(history.state, as_of)})


# --- usage ------------------------------------------------------------------------------------

USAGE_PARAMS = frozenset({"since", "until", "model", "limit", "cursor"})


@dataclass(frozen=True)
class UsageQuery:
    key_id: UUID | None
    model: str | None
    since_us: int | None
    until_us: int | None
    before_position: int | None
    limit: int


def usage_query(params: QueryParams, key_id: UUID | None) -> UsageQuery:
    since, until = time_param(params, "since"), time_param(params, "until")
    cursor = params.get("cursor")
    return UsageQuery(
        key_id=key_id,
        model=params.get("model") or None,
        since_us=to_us(since) if since else None,
        until_us=to_us(until) if until else None,
        before_position=decode_cursor(cursor) if cursor else None,
        limit=limit_param(params),
    )


def limit_param(params: QueryParams) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_USAGE_LIMIT
    value = whole_number(text, 6)
    if value is None or not 1 <= value <= MAX_USAGE_LIMIT:
        raise ApiError(
            422,
            "invalid_value",
            f"'limit' must be a whole number from 1 to {MAX_USAGE_LIMIT}.",
            param="limit",
        )
    return value


def key_param(params: QueryParams) -> UUID | None:
    text = params.get("key")
    if not text:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise ApiError(422, "invalid_value", "'key' must be a key id.", param="key") from None


async def usage_response(caller: Caller, query: UsageQuery) -> Response:
    """One page, newest first; `next_cursor` is null on the last page."""
    try:
        rows = await run_in_threadpool(
            caller.gateway.runtime.reads.ask_after_settlements,
            caller.account_id,
            usage_page,
            caller.account_id,
            key_id=query.key_id,
            model=query.model,
            since_us=query.since_us,
            until_us=query.until_us,
            before_position=query.before_position,
            limit=query.limit + 1,
        )
    except ProjectionFailed as failure:  # the usage is what was asked for: say it is missing
        raise ApiError(503, "usage_unavailable", str(failure)) from None
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = encode_cursor(rows[-1]["position"]) if more else None
    return json_response({"data": [usage_json(row) for row in rows], "next_cursor": next_cursor})


async def key_usage(request: Request) -> Response:
    """The usage history of one key of the account."""
    caller = await authenticate(request)
    key_id = parse_key_id(request)
    query = usage_query(check_query(request, USAGE_PARAMS), key_id)
    await call(caller.app.get_key, key_id, caller.account_id)  # 404 unless the account's
    return await usage_response(caller, query)


async def account_usage(request: Request) -> Response:
    """The usage history of the whole account; `key` narrows it to one key."""
    caller = await authenticate(request)
    params = check_query(request, USAGE_PARAMS | {"key"})
    return await usage_response(caller, usage_query(params, key_param(params)))


# --- credits ----------------------------------------------------------------------------------


async def credits(request: Request) -> Response:
    """The account's balance, what is held for requests in flight, and what it spent today."""
    caller = await authenticate(request)
    check_query(request, frozenset())
    view = await page_view(caller)
    return json_response(
        {
            "balance": format_credits(view.balance),
            "spent_today": format_credits(view.spent_today),
            "held": format_credits(view.held),
            "available": format_credits(view.available),
            "day": view.day,
        }
    )


management_routes: list[Route] = [
    Route("/api/v1/keys", create_key, methods=["POST"], name="keys:create"),
    Route("/api/v1/keys", list_keys, methods=["GET"], name="keys:list"),
    Route("/api/v1/keys/{key_id}", get_key, methods=["GET"], name="keys:get"),
    Route("/api/v1/keys/{key_id}", patch_key, methods=["PATCH"], name="keys:update"),
    Route("/api/v1/keys/{key_id}", revoke_key, methods=["DELETE"], name="keys:revoke"),
    Route("/api/v1/keys/{key_id}/rotate", rotate_key, methods=["POST"], name="keys:rotate"),
    Route("/api/v1/keys/{key_id}/usage", key_usage, methods=["GET"], name="keys:usage"),
    Route("/api/v1/keys/{key_id}/events", key_events, methods=["GET"], name="keys:events"),
    Route("/api/v1/usage", account_usage, methods=["GET"], name="usage"),
    Route("/api/v1/credits", credits, methods=["GET"], name="credits"),
]
