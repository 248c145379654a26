"""Checks every inference API's request parser shares: bad input is a clear 400, never a
guess (and changes nothing)."""

from typing import Any

from infrastructure.http.errors import ApiError
from infrastructure.http.limits import parse_json_bytes

MAX_OUTPUT_TOKENS = 10_000_000


def json_object(raw: bytes) -> dict[str, Any]:
    body = parse_json_bytes(raw)  # invalid or too deeply nested: a 400
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return body


def required_model(body: dict[str, Any], auto: bool = True) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        what = "a model id or lowrouter/auto" if auto else "a model id"
        raise ApiError(400, "missing_model", f"`model` is required ({what}).", param="model")
    return model


def check_max_tokens(body: dict[str, Any], *names: str, required: bool = False) -> None:
    for name in names:
        value = body.get(name)
        if value is None and required:
            raise ApiError(400, "missing_max_tokens", f"`{name}` is required.", param=name)
        if value is not None and (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 0 < value <= MAX_OUTPUT_TOKENS
        ):
            raise ApiError(
                400, "invalid_max_tokens", f"`{name}` must be a positive integer.", param=name
            )


def check_choices(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 16):
        raise ApiError(400, "invalid_n", "`n` must be an integer from 1 to 16.", param="n")


def check_stream(body: dict[str, Any]) -> None:
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise ApiError(400, "invalid_stream", "`stream` must be true or false.", param="stream")
    if not isinstance(body.get("stream_options"), dict | None):
        raise ApiError(
            400,
            "invalid_stream_options",
            "`stream_options` must be an object.",
            param="stream_options",
        )
