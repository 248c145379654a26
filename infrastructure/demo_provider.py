"""A tiny OpenAI-compatible upstream for the offline quick start: it echoes, it does not think.

Only when no catalogue file is configured, the demo catalogue points the model `lowrouter/echo`
at it, and the gateway reaches it inside its own process (infrastructure.upstream.InProcessDemo),
after authentication and under the same body limits: it is not a public route.
Tokens are counted as whitespace-separated words.
"""

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

OWNER = "lowrouter-demo"
DEMO_UPSTREAM_MODEL = "echo"
PREFIX = "Echo:"


def demo_upstream_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/models", list_models, methods=["GET"]),
        ]
    )


async def list_models(request: Request) -> Response:
    model = {"id": DEMO_UPSTREAM_MODEL, "object": "model", "created": 0, "owned_by": OWNER}
    return JSONResponse({"object": "list", "data": [model]})


async def chat_completions(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the request body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(400, "messages must be a list")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return _error(400, "max_tokens must be a positive whole number")
    reply = Reply(body, max_tokens)
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(reply.chunks(include_usage), media_type="text/event-stream")
    return JSONResponse(reply.completion())


class Reply:
    """One echoed answer: "Echo:" and the last user message's words, cut at `max_tokens`."""

    def __init__(self, body: Mapping[str, Any], max_tokens: int | None) -> None:
        messages = body["messages"]
        words = [PREFIX, *last_user_text(messages).split()]
        self.words = words[:max_tokens] if max_tokens is not None else words
        self.finish_reason = "length" if len(self.words) < len(words) else "stop"
        self.prompt_tokens = max(1, sum(len(message_text(m).split()) for m in messages))
        self.model = str(body.get("model") or DEMO_UPSTREAM_MODEL)
        self.id = f"chatcmpl-demo-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    @property
    def usage(self) -> dict[str, int]:
        completion = max(1, len(self.words))
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": " ".join(self.words)}
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return self._envelope("chat.completion", [choice]) | {"usage": self.usage}

    async def chunks(self, include_usage: bool) -> AsyncIterator[str]:
        for index, word in enumerate(self.words):
            delta = (
                {"role": "assistant", "content": word} if index == 0 else {"content": " " + word}
            )
            yield _sse(self._chunk(delta, None))
        yield _sse(self._chunk({}, self.finish_reason))
        if include_usage:
            yield _sse(self._envelope("chat.completion.chunk", []) | {"usage": self.usage})
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": OWNER,
            "choices": choices,
        }


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def message_text(message: object) -> str:
    """The text of a message: a string content, or its text parts joined."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return " ".join(text for text in parts if isinstance(text, str))
    return ""


def _sse(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error(status: int, message: str) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "code": None}
    return JSONResponse({"error": error}, status_code=status)
