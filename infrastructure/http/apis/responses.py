"""POST /api/v1/responses: the OpenAI Responses API, passed through to OpenAI-dialect providers;
usage from the response (or the stream's `response.completed`)."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from application.metering import MeteredRequest
from domain.pricing import prompt_bound
from infrastructure.dialects.fields import RESPONSES_FIELDS, fields_beyond
from infrastructure.dialects.openai import ResponsesPassthrough
from infrastructure.http.apis.engine import Api, serve
from infrastructure.http.apis.parsing import (
    check_max_tokens,
    check_stream,
    json_object,
    required_model,
)
from infrastructure.http.errors import ApiError


def parse_responses_request(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    required_model(body)
    if not isinstance(body.get("input"), str | list) or not body["input"]:
        raise ApiError(
            400, "missing_input", "`input` must be a non-empty string or list.", param="input"
        )
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise ApiError(
            400, "invalid_instructions", "`instructions` must be a string.", param="instructions"
        )
    for name in ("previous_response_id", "conversation", "prompt"):
        if body.get(name) is not None:
            # The upstream would add stored turns (or a stored prompt) beyond our hold.
            raise ApiError(
                400,
                "unsupported_parameter",
                f"`{name}` is not supported: send the conversation in `input`.",
                param=name,
            )
    if body.get("background"):
        # A background response is fetched later, past the gateway: its usage never settles.
        raise ApiError(
            400,
            "unsupported_parameter",
            "`background` is not supported: stream the response instead.",
            param="background",
        )
    check_max_tokens(body, "max_output_tokens")
    check_stream(body)
    return body


def metered_responses(body: dict[str, Any]) -> MeteredRequest:
    return MeteredRequest(
        api="responses",
        model=body["model"],
        prompt_bound=prompt_bound(body),
        output_cap=body.get("max_output_tokens"),
        streamed=bool(body.get("stream")),
        dialects=("openai",),
        extra_fields=fields_beyond(body, RESPONSES_FIELDS),
    )


RESPONSES = Api(
    parse=parse_responses_request,
    metered=metered_responses,
    exchanges={"openai": ResponsesPassthrough()},
)


async def responses(request: Request) -> Response:
    return await serve(request, RESPONSES)
