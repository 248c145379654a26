"""POST /api/v1/messages: the Anthropic Messages API — native to Anthropic-dialect providers,
translated to and from chat completions for OpenAI-dialect ones, so any chat model serves
Anthropic clients (Claude Code: ANTHROPIC_BASE_URL=http://HOST:PORT/api). The key comes as
`x-api-key` (what Anthropic's SDKs send) or a bearer token; errors use Anthropic's shape."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from application.metering import MeteredRequest
from domain.pricing import prompt_bound
from infrastructure.dialects.anthropic import MessagesPassthrough
from infrastructure.dialects.fields import MESSAGES_FIELDS, fields_beyond
from infrastructure.dialects.translated import MessagesViaChat
from infrastructure.http.apis.engine import Api, serve
from infrastructure.http.apis.parsing import (
    check_max_tokens,
    check_stream,
    json_object,
    required_model,
)
from infrastructure.http.errors import ApiError
from infrastructure.http.jsonresponse import json_response
from infrastructure.observability.context import note_error

ROLES = ("user", "assistant")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def parse_messages_request(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    required_model(body)
    check_max_tokens(body, "max_tokens", required=True)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "missing_messages", "`messages` must be a non-empty list.", param="messages"
        )
    for message in messages:
        if not (
            isinstance(message, dict)
            and message.get("role") in ROLES
            and isinstance(message.get("content"), str | list)
        ):
            raise ApiError(
                400,
                "invalid_messages",
                'Each message must be an object with a `role` ("user" or "assistant") and a '
                "`content` (a string or a list of content blocks).",
                param="messages",
            )
        if isinstance(message["content"], list) and not all(
            isinstance(block, dict) and isinstance(block.get("type"), str)
            for block in message["content"]
        ):
            raise ApiError(
                400,
                "invalid_messages",
                "Each content block must be an object with a `type`.",
                param="messages",
            )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise ApiError(
            400,
            "invalid_system",
            "`system` must be a string or a list of text blocks.",
            param="system",
        )
    check_stream(body)
    return body


def metered_messages(body: dict[str, Any]) -> MeteredRequest:
    return MeteredRequest(
        api="messages",
        model=body["model"],
        prompt_bound=prompt_bound(body),
        output_cap=body["max_tokens"],
        streamed=bool(body.get("stream")),
        extra_fields=fields_beyond(body, MESSAGES_FIELDS),
    )


def x_api_key(request: Request) -> str | None:
    """Anthropic's SDKs and Claude Code send the key as `x-api-key`."""
    if request.headers.get("authorization") is None:
        key = request.headers.get("x-api-key")
        if key is not None:
            return f"Bearer {key.strip()}"
    return None


MESSAGES = Api(
    parse=parse_messages_request,
    metered=metered_messages,
    exchanges={"anthropic": MessagesPassthrough(), "openai": MessagesViaChat()},
    credential=x_api_key,
)


async def messages(request: Request) -> Response:
    try:
        return await serve(request, MESSAGES)
    except ApiError as error:
        return anthropic_error(error, request.state.request_id)


def anthropic_error(error: ApiError, request_id: str) -> Response:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}}."""
    note_error(error.status, error.code)
    kind = _ERROR_TYPES.get(error.status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": error.message}}
    return json_response(body | {"request_id": request_id}, error.status, error.headers)
