"""POST /api/v1/chat/completions: OpenAI Chat Completions, on OpenAI-dialect providers as they
are and on Anthropic ones translated."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from application.metering import MeteredRequest
from domain.pricing import prompt_bound
from infrastructure.dialects.fields import CHAT_FIELDS, fields_beyond
from infrastructure.dialects.openai import ChatPassthrough
from infrastructure.dialects.translated import ChatViaMessages
from infrastructure.http.apis.engine import Api, serve
from infrastructure.http.apis.parsing import (
    check_choices,
    check_max_tokens,
    check_stream,
    json_object,
    required_model,
)
from infrastructure.http.errors import ApiError


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    required_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "missing_messages", "`messages` must be a non-empty list.", param="messages"
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ApiError(
            400,
            "invalid_messages",
            "Each message must be an object with a `role`.",
            param="messages",
        )
    check_max_tokens(body, "max_tokens", "max_completion_tokens")
    check_choices(body)
    check_stream(body)
    return body


def metered_chat(body: dict[str, Any]) -> MeteredRequest:
    return MeteredRequest(
        api="chat.completions",
        model=body["model"],
        prompt_bound=prompt_bound(body),
        output_cap=body.get("max_completion_tokens", body.get("max_tokens")),
        choices=body.get("n") or 1,
        streamed=bool(body.get("stream")),
        extra_fields=fields_beyond(body, CHAT_FIELDS),
    )


CHAT = Api(
    parse=parse_chat_request,
    metered=metered_chat,
    exchanges={"openai": ChatPassthrough(), "anthropic": ChatViaMessages()},
)


async def chat_completions(request: Request) -> Response:
    return await serve(request, CHAT)
