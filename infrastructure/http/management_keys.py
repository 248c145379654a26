"""/api/v1/management-keys (API.md, Management keys): list, issue, revoke and rotate the
account's management keys, with one of them (or a dashboard session's) as the caller.

A token is returned exactly once, in the 201 that created it. A revocation fails the key on the
next request on every process and ends its dashboard sessions. Revoking the key the request
itself uses is refused while no other active key remains (409).
"""

from typing import Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from application import management_keys as use_cases
from domain.actor import Actor
from domain.errors import InvalidName, NotFound
from domain.scope import check_name
from domain.tokens import TokenKind
from infrastructure.error_table import MANAGEMENT_KEY
from infrastructure.http.errors import ApiError, api_error
from infrastructure.http.gateway import Gateway
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.management import (
    Caller,
    call,
    check_query,
    grace_field,
    read_object,
    wrong_type,
)
from infrastructure.key_uses import last_uses
from infrastructure.views import management_key_json

CREATE_FIELDS = frozenset({"name"})
ROTATE_FIELDS = frozenset({"grace_seconds"})


async def authenticate(request: Request) -> tuple[Caller, UUID]:
    """The caller, and the id of the management key it presented."""
    gateway: Gateway = request.app.state.gateway
    record = await gateway.authenticate(request, TokenKind.MANAGEMENT)
    address = request.client.host if request.client else None
    actor = Actor("management_key", record.display, address)
    return Caller(gateway, record.account_id, actor), record.key_id


def not_found() -> ApiError:
    return api_error(NotFound(), MANAGEMENT_KEY)


def parse_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["key_id"])
    except ValueError:
        raise not_found() from None


async def checked(function: Any, *args: Any) -> Any:
    """`call`, with a missing key named as a management key."""
    return await call(function, *args, about=MANAGEMENT_KEY)


def name_of(body: dict[str, Any]) -> str:
    name = body.get("name", "management key")
    if not isinstance(name, str):
        wrong_type("name", "a string")
    try:
        return check_name(name)
    except InvalidName as error:
        raise api_error(error) from None


async def list_keys(request: Request) -> Response:
    caller, _ = await authenticate(request)
    check_query(request, frozenset())
    found = await checked(use_cases.list_management_keys, caller.app, caller.account_id)
    engine = caller.gateway.runtime.engine
    used = await run_in_threadpool(last_uses, engine, [key.id for key in found])
    data = [management_key_json(key, last_used_at=used.get(key.id)) for key in found]
    return json_response({"data": data})


async def create_key(request: Request) -> Response:
    caller, _ = await authenticate(request)
    name = name_of(await read_object(caller, request, CREATE_FIELDS))
    issued = await checked(
        use_cases.issue_management_key, caller.app, caller.account_id, caller.actor, name
    )
    data = management_key_json(issued.key)
    return json_response({"key": issued.token.value, "data": data}, status=201)


async def revoke_key(request: Request) -> Response:
    caller, using = await authenticate(request)
    key_id = parse_id(request)
    await read_object(caller, request, frozenset())
    key = await checked(
        use_cases.revoke_management_key,
        caller.app,
        caller.account_id,
        key_id,
        caller.actor,
        using,
    )
    return json_response(management_key_json(key))


async def rotate_key(request: Request) -> Response:
    caller, _ = await authenticate(request)
    key_id = parse_id(request)
    grace = grace_field(await read_object(caller, request, ROTATE_FIELDS))
    issued = await checked(
        use_cases.rotate_management_key,
        caller.app,
        caller.account_id,
        key_id,
        caller.actor,
        grace,
    )
    data = management_key_json(issued.key)
    return json_response({"key": issued.token.value, "data": data}, status=201)


management_key_routes: list[Route] = [
    Route("/api/v1/management-keys", list_keys, methods=["GET"], name="management-keys:list"),
    Route("/api/v1/management-keys", create_key, methods=["POST"], name="management-keys:create"),
    Route(
        "/api/v1/management-keys/{key_id}",
        revoke_key,
        methods=["DELETE"],
        name="management-keys:revoke",
    ),
    Route(
        "/api/v1/management-keys/{key_id}/rotate",
        rotate_key,
        methods=["POST"],
        name="management-keys:rotate",
    ),
]
