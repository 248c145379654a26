"""OpenAI's error shape under /api/v1: {"error": {"message", "type", "code", "param"}}, and
the API's rendering of the one error table."""

from typing import Any

from starlette.responses import Response

from infrastructure.error_table import KEY, AnsweredError, Subject, answer_to
from infrastructure.http.jsonresponse import json_response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


# Statuses a client's retry can cure. Every other refusal says `x-should-retry: false`, which
# the OpenAI SDKs honour (they would otherwise retry a 409 or a 429 that cannot change).
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """Raised anywhere in a handler; rendered by the app as OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = dict(headers or {})
        if not (status in RETRYABLE if retryable is None else retryable):
            self.headers["x-should-retry"] = "false"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "api_error"),
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> Response:
        return json_response(self.body(), status=self.status, headers=self.headers)


def api_error(
    error: AnsweredError, about: Subject | None = KEY, *, param: str | None = None
) -> ApiError:
    """The API's answer to a refusal, from the one error table (infrastructure.error_table).
    `about`: what the path names (its 404); `param`: the field being parsed, when the handler
    knows it better than the table."""
    answer = answer_to(error, about)
    return ApiError(
        answer.status,
        answer.code,
        answer.message,
        param=param or answer.param,
        headers=dict(answer.headers),
    )
