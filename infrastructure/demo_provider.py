"""A tiny OpenAI-compatible upstream for the offline quick start: it echoes, it does not think.

Only when no catalogue file is configured, the demo catalogue points the models `lowrouter/echo`
and `lowrouter/echo-embedding` at it, and the gateway reaches it inside its own process
(infrastructure.upstream.InProcessDemo), after authentication and under the same body limits:
it is not a public route. It answers chat completions, legacy completions, Responses and
embeddings (Anthropic Messages reach it translated to chat), streaming and not. Tokens are
counted as whitespace-separated words.
"""

import hashlib
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
            Route("/completions", text_completions, methods=["POST"]),
            Route("/responses", responses, methods=["POST"]),
            Route("/embeddings", embeddings, methods=["POST"]),
            Route("/models", list_models, methods=["GET"]),
        ]
    )


async def list_models(request: Request) -> Response:
    models = [
        {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
        for name in (DEMO_UPSTREAM_MODEL, "echo-embedding")
    ]
    return JSONResponse({"object": "list", "data": models})


async def _json_body(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the request body is not JSON")
    return body if isinstance(body, dict) else _error(400, "the body must be a JSON object")


def _words_of(value: object) -> list[str]:
    """Every whitespace-separated word of every string in a JSON-like value."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [word for item in value for word in _words_of(item)]
    if isinstance(value, dict):
        return [w for k, v in value.items() if k not in ("type", "role") for w in _words_of(v)]
    return []


def _cut(words: list[str], max_tokens: object) -> tuple[list[str], str]:
    if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
        return words[:max_tokens], "length"
    return words, "stop"


async def text_completions(request: Request) -> Response:
    """Legacy completions: "Echo:" and the prompt's words."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    prompt_words = _words_of(body.get("prompt"))
    words, finish = _cut([PREFIX, *prompt_words], body.get("max_tokens"))
    prompt, completion = max(1, len(prompt_words)), max(1, len(words))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    envelope = {
        "id": f"cmpl-demo-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model") or DEMO_UPSTREAM_MODEL),
    }
    if body.get("stream") is not True:
        choice = {"index": 0, "text": " ".join(words), "finish_reason": finish}
        return JSONResponse(envelope | {"choices": [choice], "usage": usage})

    async def chunks() -> AsyncIterator[str]:
        for index, word in enumerate(words):
            text = word if index == 0 else " " + word
            yield _sse(envelope | {"choices": [{"index": 0, "text": text, "finish_reason": None}]})
        yield _sse(envelope | {"choices": [{"index": 0, "text": "", "finish_reason": finish}]})
        yield _sse(envelope | {"choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def responses(request: Request) -> Response:
    """Responses: "Echo:" and the input's words, as one output message."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    input_words = _words_of(body.get("input"))
    words, _ = _cut([PREFIX, *input_words], body.get("max_output_tokens"))
    text = " ".join(words)
    prompt = max(1, len(input_words) + len(_words_of(body.get("instructions"))))
    usage = {
        "input_tokens": prompt,
        "output_tokens": len(words),
        "total_tokens": prompt + len(words),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    ids = uuid.uuid4().hex[:24]
    message = {
        "type": "message",
        "id": f"msg_demo_{ids}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    response = {
        "id": f"resp_demo_{ids}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": str(body.get("model") or DEMO_UPSTREAM_MODEL),
        "output": [message],
        "usage": usage,
    }
    if body.get("stream") is not True:
        return JSONResponse(response)

    async def events() -> AsyncIterator[str]:
        started = response | {"status": "in_progress", "output": [], "usage": None}
        at = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        stream: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": message | {"status": "in_progress", "content": []},
            },
            {
                "type": "response.content_part.added",
                **at,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
            *(
                {"type": "response.output_text.delta", **at, "delta": w if i == 0 else " " + w}
                for i, w in enumerate(words)
            ),
            {"type": "response.output_text.done", **at, "text": text},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": response},
        ]
        for number, event in enumerate(stream):
            event = event | {"sequence_number": number}
            yield f"event: {event['type']}\n{_sse(event)}"

    return StreamingResponse(events(), media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    """Embeddings: a small deterministic vector per input (a hash of its text, not meaning)."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    value = body.get("input")
    inputs = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    data = []
    for index, item in enumerate(inputs):
        digest = hashlib.sha256(json.dumps(item).encode()).digest()
        vector = [round(byte / 255, 4) for byte in digest[:8]]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = max(1, len(_words_of(inputs)))
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "echo-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


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
