"""The OpenAPI document of /api/v1 (served at /api/v1/openapi.json) and a readable /docs page.

Written out rather than generated: the contract (API.md) is the source of truth, and a test checks
that every route the app serves is described here and nothing else is.
"""

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from infrastructure.http.grace import MAX_GRACE_SECONDS
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.openapi_webhooks import GITHUB_SCHEME, GITHUB_SIGNATURE, webhook_paths

MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{6}$", "example": "5.000000"}
NULLABLE_MONEY = {**MONEY, "nullable": True}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": "string", "nullable": True},
            },
            "required": ["message", "type", "code"],
        }
    },
}
KEY = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "display": {"type": "string", "example": "lr-sk-AbCd…wXyZ"},
        "prefix": {"type": "string"},
        "last4": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "rotating", "revoked", "expired"]},
        "models": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "region": {"type": "string", "nullable": True},
        "daily_limit": NULLABLE_MONEY,
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {"type": "string", "format": "date-time", "nullable": True},
        "revoked_at": {"type": "string", "format": "date-time", "nullable": True},
        "predecessor_id": {"type": "string", "nullable": True},
        "successor_id": {"type": "string", "nullable": True},
        "spent_today": MONEY,
        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        "requests_per_minute": {"type": "integer", "nullable": True},
        "tokens_per_minute": {"type": "integer", "nullable": True},
        "max_concurrent": {"type": "integer", "nullable": True},
        "allowed_ips": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "monthly_limit": NULLABLE_MONEY,
        "changeable": {"type": "boolean"},
        "rotation_due": {"type": "boolean"},
    },
}
USAGE = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "key_id": {"type": "string"},
        "key_name": {"type": "string"},
        "model": {"type": "string"},
        "provider": {"type": "string", "nullable": True},
        "region": {"type": "string", "nullable": True},
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "cost": MONEY,
        "status": {"type": "string"},
        "latency_ms": {"type": "integer"},
        "streamed": {"type": "boolean"},
        "client_ip": {"type": "string", "nullable": True},
        "user_agent": {"type": "string", "nullable": True},
        "api": {
            "type": "string",
            "enum": ["chat.completions", "completions", "responses", "embeddings", "messages"],
        },
        "cached_prompt_tokens": {"type": "integer"},
        "cache_write_tokens": {"type": "integer"},
        "reasoning_tokens": {"type": "integer"},
        "cost_source": {"type": "string", "enum": ["reported", "estimated", "none"]},
        "upstream_cost": {"type": "string", "nullable": True},
        "over_hold": {"type": "boolean"},
        "unbilled": MONEY,
    },
}
SCOPE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 64},
    "models": {"type": "array", "items": {"type": "string"}, "nullable": True},
    "region": {"type": "string", "nullable": True},
    "daily_limit": {"oneOf": [MONEY, {"type": "number"}], "nullable": True},
    "expires_at": {"type": "string", "format": "date-time", "nullable": True},
    "requests_per_minute": {"type": "integer", "minimum": 1, "nullable": True},
    "tokens_per_minute": {"type": "integer", "minimum": 1, "nullable": True},
    "max_concurrent": {"type": "integer", "minimum": 1, "nullable": True},
    "allowed_ips": {
        "type": "array",
        "items": {"type": "string", "example": "203.0.113.0/24"},
        "minItems": 1,
        "nullable": True,
    },
    "monthly_limit": {"oneOf": [MONEY, {"type": "number"}], "nullable": True},
}
# Precise types and bounds for every parameter, so a schema fuzzer (the suite runs schemathesis)
# explores the values that matter: the server refuses anything outside them with a 4xx.
TIME = {"type": "string", "format": "date-time"}
PAGE_QUERY = [
    {"name": "since", "in": "query", "required": False, "schema": TIME},
    {"name": "until", "in": "query", "required": False, "schema": TIME},
    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
    },
]
KEY_ID = [
    {
        "name": "key_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
]


def _ok(schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {
        status: {"description": "OK", "content": {"application/json": {"schema": schema}}},
        "default": {
            "description": "An error, in OpenAI's shape",
            "content": {"application/json": {"schema": ERROR}},
        },
    }


def _op(
    summary: str,
    response: dict[str, Any],
    *,
    security: str,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    status: str = "200",
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{security: []}],
        "responses": _ok(response, status),
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


ISSUED = _object({"key": {"type": "string", "example": "lr-sk-…"}, "data": KEY})
INFERENCE, MANAGEMENT = "inferenceKey", "managementKey"

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "lowrouter",
        "version": "0.2.0",
        "description": "An OpenAI-compatible LLM gateway on an event-sourced ledger of keys "
        "and credits. Money is a decimal string of credits.",
    },
    "servers": [{"url": "/"}],
    "components": {
        "securitySchemes": {
            INFERENCE: {"type": "http", "scheme": "bearer", "description": "lr-sk-… key"},
            MANAGEMENT: {"type": "http", "scheme": "bearer", "description": "lr-mk-… key"},
        },
        "schemas": {"Key": KEY, "Usage": USAGE, "Error": ERROR},
    },
    "paths": {
        "/api/v1/chat/completions": {
            "post": _op(
                "OpenAI Chat Completions; `stream: true` gives SSE ending with a usage chunk "
                "(with `cost`) and [DONE]",
                {"type": "object"},
                security=INFERENCE,
                body={"type": "object", "required": ["model", "messages"]},
            )
        },
        "/api/v1/completions": {
            "post": _op(
                "OpenAI legacy text completions (`prompt`, `max_tokens`, `stream`); usage as "
                "chat, with `cost`",
                {"type": "object"},
                security=INFERENCE,
                body={"type": "object", "required": ["model", "prompt"]},
            )
        },
        "/api/v1/responses": {
            "post": _op(
                "OpenAI Responses API; streams are typed SSE events, `response.completed` "
                "carries `response.usage` with `cost`",
                {"type": "object"},
                security=INFERENCE,
                body={"type": "object", "required": ["model", "input"]},
            )
        },
        "/api/v1/embeddings": {
            "post": _op(
                'OpenAI embeddings for models of kind "embedding"; usage `{prompt_tokens, '
                "total_tokens, cost}`",
                {"type": "object"},
                security=INFERENCE,
                body={"type": "object", "required": ["model", "input"]},
            )
        },
        "/api/v1/messages": {
            "post": _op(
                "Anthropic Messages API (key as `x-api-key` or bearer); native on Anthropic "
                "providers, translated on OpenAI ones; errors in Anthropic's shape",
                {"type": "object"},
                security=INFERENCE,
                body={"type": "object", "required": ["model", "max_tokens", "messages"]},
            )
        },
        "/api/v1/models": {
            "get": _op("The models this key may use", {"type": "object"}, security=INFERENCE)
        },
        "/api/v1/key": {
            "get": _op(
                "This key: scope, spent today, remaining, account balance",
                {"type": "object"},
                security=INFERENCE,
            )
        },
        "/api/v1/keys": {
            "get": _op(
                "The account's keys, oldest first, a page at a time (never a token)",
                _object(
                    {
                        "data": {"type": "array", "items": KEY},
                        "next_cursor": {"type": "string", "nullable": True},
                    }
                ),
                security=MANAGEMENT,
                parameters=PAGE_QUERY[3:],  # limit and cursor
            ),
            "post": _op(
                "Create a key; the only response that carries its token",
                ISSUED,
                security=MANAGEMENT,
                body=_object(SCOPE_FIELDS, ["name"]),
                status="201",
            ),
        },
        "/api/v1/keys/{key_id}": {
            "get": _op("One key", KEY, security=MANAGEMENT, parameters=KEY_ID),
            "patch": _op(
                "Rename or rescope; null clears a scope part",
                KEY,
                security=MANAGEMENT,
                body=_object(SCOPE_FIELDS),
                parameters=KEY_ID,
            ),
            "delete": _op(
                "Revoke: the next request with this key fails",
                KEY,
                security=MANAGEMENT,
                parameters=KEY_ID,
            ),
        },
        "/api/v1/keys/{key_id}/rotate": {
            "post": _op(
                "Rotate: a successor with the same name and scope; the old key works until "
                "the grace ends",
                ISSUED,
                security=MANAGEMENT,
                body=_object({"grace_seconds": {"type": "integer", "minimum": 0}}),
                parameters=KEY_ID,
                status="201",
            )
        },
        "/api/v1/keys/{key_id}/usage": {
            "get": _op(
                "Usage history of one key, newest first",
                _object(
                    {
                        "data": {"type": "array", "items": USAGE},
                        "next_cursor": {"type": "string", "nullable": True},
                    }
                ),
                security=MANAGEMENT,
                parameters=KEY_ID + PAGE_QUERY,
            )
        },
        "/api/v1/keys/{key_id}/events": {
            "get": _op(
                "The key's event history, oldest first; `as_of` adds the state at that time",
                {"type": "object"},
                security=MANAGEMENT,
                parameters=[
                    *KEY_ID,
                    {"name": "as_of", "in": "query", "schema": TIME},
                ],
            )
        },
        "/api/v1/usage": {
            "get": _op(
                "Usage history of the account, newest first",
                _object(
                    {
                        "data": {"type": "array", "items": USAGE},
                        "next_cursor": {"type": "string", "nullable": True},
                    }
                ),
                security=MANAGEMENT,
                parameters=[
                    *PAGE_QUERY,
                    {"name": "key", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                ],
            )
        },
        "/api/v1/credits": {
            "get": _op(
                "Balance, held and spent today",
                _object({"balance": MONEY, "held": MONEY, "spent_today": MONEY}),
                security=MANAGEMENT,
            )
        },
    },
}

DOCUMENT["paths"].update(webhook_paths(_op, _object, MANAGEMENT))
DOCUMENT["components"]["securitySchemes"][GITHUB_SIGNATURE] = GITHUB_SCHEME


# Management keys (issue 15): the account's lr-mk- keys, first-class like inference keys.
MGMT_KEY = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "display": {"type": "string", "example": "lr-mk-AbCd…wXyZ"},
        "prefix": {"type": "string"},
        "last4": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "rotating", "revoked"]},
        "created_at": {"type": "string", "format": "date-time", "nullable": True},
        "last_used_at": {"type": "string", "format": "date-time", "nullable": True},
        "revoked_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}
MGMT_KEY_ID = KEY_ID
ISSUED_MGMT_KEY = _object({"key": {"type": "string", "example": "lr-mk-…"}, "data": MGMT_KEY})
GRACE = {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS}}
DOCUMENT["components"]["schemas"]["ManagementKey"] = MGMT_KEY
DOCUMENT["paths"].update(
    {
        "/api/v1/management-keys": {
            "get": _op(
                "The account's management keys (never a token)",
                _object({"data": {"type": "array", "items": MGMT_KEY}}),
                security=MANAGEMENT,
            ),
            "post": _op(
                "Issue a management key; the only response that carries its token",
                ISSUED_MGMT_KEY,
                security=MANAGEMENT,
                body=_object({"name": {"type": "string", "minLength": 1, "maxLength": 64}}),
                status="201",
            ),
        },
        "/api/v1/management-keys/{key_id}": {
            "delete": _op(
                "Revoke: the next request with it fails on every process; its dashboard "
                "sessions end",
                MGMT_KEY,
                security=MANAGEMENT,
                parameters=MGMT_KEY_ID,
            ),
        },
        "/api/v1/management-keys/{key_id}/rotate": {
            "post": _op(
                "Rotate: a successor; the old key works until the grace ends",
                ISSUED_MGMT_KEY,
                security=MANAGEMENT,
                body=_object(GRACE),
                parameters=MGMT_KEY_ID,
                status="201",
            ),
        },
    }
)


async def openapi_json(_request: Request) -> Response:
    return json_response(DOCUMENT)


async def docs(_request: Request) -> Response:
    """A plain page listing every route (no CDN, no JavaScript needed)."""
    rows = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            who = (
                "management key"
                if operation["security"][0].get(MANAGEMENT) is not None
                else "inference key"
            )
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(operation['summary'])}</td><td>{who}</td></tr>"
            )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>lowrouter API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
        "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}</style></head>"
        "<body><h1>lowrouter API</h1><p>OpenAI-compatible; errors are "
        '<code>{"error": {"message", "type", "code"}}</code>; money is a decimal '
        "string of credits. Machine-readable: <a href=/api/v1/openapi.json>openapi.json</a>."
        "</p><table><thead><tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )
    return HTMLResponse(page)
