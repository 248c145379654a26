"""POST /api/v1/completions: OpenAI's legacy text completions, passed through to OpenAI-dialect
providers; usage as chat completions."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from application.metering import MeteredRequest
from domain.pricing import prompt_bound
from infrastructure.dialects.fields import COMPLETIONS_FIELDS, fields_beyond
from infrastructure.dialects.openai import ChatPassthrough
from infrastructure.http.apis.engine import Api, serve
from infrastructure.http.apis.parsing import (
    check_choices,
    check_max_tokens,
    check_stream,
    json_object,
    required_model,
)
from infrastructure.http.errors import ApiError

# The legacy API's own default when max_tokens is absent is 16; a hold uses the model's cap.


def parse_completions_request(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    required_model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
        raise ApiError(
            400, "missing_prompt", "`prompt` must be a string or a non-empty list.", param="prompt"
        )
    check_max_tokens(body, "max_tokens")
    check_choices(body)
    best_of = body.get("best_of")
    if best_of is not None and (
        not isinstance(best_of, int) or isinstance(best_of, bool) or not 1 <= best_of <= 16
    ):
        raise ApiError(400, "invalid_best_of", "`best_of` must be from 1 to 16.", param="best_of")
    check_stream(body)
    return body


def metered_completions(body: dict[str, Any]) -> MeteredRequest:
    prompt = body["prompt"]
    prompts = len(prompt) if isinstance(prompt, list) and not _is_token_list(prompt) else 1
    return MeteredRequest(
        api="completions",
        model=body["model"],
        prompt_bound=prompt_bound(body),
        output_cap=body.get("max_tokens"),
        # every prompt gets n answers, best_of of them generated
        choices=prompts * max(body.get("n") or 1, body.get("best_of") or 1),
        streamed=bool(body.get("stream")),
        dialects=("openai",),
        extra_fields=fields_beyond(body, COMPLETIONS_FIELDS),
    )


def _is_token_list(prompt: list[Any]) -> bool:
    return all(isinstance(t, int) for t in prompt)


COMPLETIONS = Api(
    parse=parse_completions_request,
    metered=metered_completions,
    exchanges={"openai": ChatPassthrough("/completions", "text_completion")},
)


async def completions(request: Request) -> Response:
    return await serve(request, COMPLETIONS)
