"""POST /api/v1/embeddings: OpenAI embeddings, for models of `kind = "embedding"`, priced per
input token."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from application.metering import MeteredRequest
from domain.pricing import prompt_bound
from infrastructure.dialects.fields import EMBEDDINGS_FIELDS, fields_beyond
from infrastructure.dialects.openai import EmbeddingsPassthrough
from infrastructure.http.apis.engine import Api, serve
from infrastructure.http.apis.parsing import json_object, required_model
from infrastructure.http.errors import ApiError

MAX_INPUTS = 2048  # OpenAI's own limit per request


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    required_model(body, auto=False)
    value = body.get("input")
    if isinstance(value, str):
        ok = bool(value)
    elif isinstance(value, list):
        ok = 0 < len(value) <= MAX_INPUTS and all(
            isinstance(v, str | int) or (isinstance(v, list) and v) for v in value
        )
    else:
        ok = False
    if not ok:
        raise ApiError(
            400,
            "invalid_input",
            f"`input` must be a non-empty string or a list of 1 to {MAX_INPUTS} inputs.",
            param="input",
        )
    if body.get("stream"):
        raise ApiError(400, "invalid_stream", "Embeddings do not stream.", param="stream")
    return body


def metered_embeddings(body: dict[str, Any]) -> MeteredRequest:
    return MeteredRequest(
        api="embeddings",
        model=body["model"],
        prompt_bound=prompt_bound(body),
        output_cap=0,
        kind="embedding",
        dialects=("openai",),
        extra_fields=fields_beyond(body, EMBEDDINGS_FIELDS),
    )


EMBEDDINGS = Api(
    parse=parse_embeddings_request,
    metered=metered_embeddings,
    exchanges={"openai": EmbeddingsPassthrough()},
)


async def embeddings(request: Request) -> Response:
    return await serve(request, EMBEDDINGS)
