"""The OpenAI dialect: chat completions, legacy completions, Responses and embeddings, passed
through to an OpenAI-compatible upstream (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp, …)."""

import time
from typing import Any

from domain.pricing import TokenCounts
from domain.routing import Dialect, ModelEntry, Provider
from infrastructure.dialects.base import Reading, produced_by_chat_choices
from infrastructure.dialects.fields import (
    CHAT_FIELDS,
    COMPLETIONS_FIELDS,
    EMBEDDINGS_FIELDS,
    RESPONSES_FIELDS,
)
from infrastructure.dialects.sse import DONE, data_event, typed_event
from infrastructure.dialects.usage import (
    cost_number,
    openai_chat_usage,
    openai_embeddings_usage,
    openai_responses_usage,
    reported_cost,
)


def headers(provider: Provider) -> dict[str, str]:
    out = {"content-type": "application/json", "accept": "application/json"}
    if provider.api_key:
        out["authorization"] = f"Bearer {provider.api_key}"
    return out


def forwarded(
    body: dict[str, Any], entry: ModelEntry, provider: Provider, allowed: frozenset[str]
) -> dict[str, Any]:
    """What an OpenAI-dialect upstream receives of a client's request: the one place that
    decides it. The fields of the API's schema (`allowed`) and the provider's `extra_fields`
    (others were refused before the hold), with the upstream's model name."""
    shaped = {k: v for k, v in body.items() if k in allowed or k in provider.extra_fields}
    shaped["model"] = entry.upstream_model
    return shaped


def with_chat_cap(shaped: dict[str, Any], provider: Provider, cap: int) -> dict[str, Any]:
    """The held output cap in every cap field the provider takes (`cap_fields`), and no other:
    a client's second cap (`max_completion_tokens: 1` with `max_tokens: 100000`) never
    reaches an upstream that honours the other one."""
    for name in ("max_tokens", "max_completion_tokens"):
        shaped.pop(name, None)
    for name in provider.cap_fields:
        shaped[name] = cap
    return shaped


def error_event(message: str) -> bytes:
    error = {"message": message, "type": "api_error", "code": "upstream_stream_error"}
    return data_event({"error": error})


# --- chat completions and legacy completions ---------------------------------------------------


class ChatPassthrough:
    """Chat completions (or legacy text completions) to an OpenAI-dialect upstream."""

    dialect: Dialect = "openai"

    def __init__(self, path: str = "/chat/completions", obj: str = "chat.completion") -> None:
        self.path = path
        self.object = obj  # "chat.completion" or "text_completion"
        self.fields = CHAT_FIELDS if obj == "chat.completion" else COMPLETIONS_FIELDS

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        shaped = forwarded(body, entry, provider, self.fields)
        if self.object == "chat.completion":
            shaped = with_chat_cap(shaped, provider, cap)
        else:  # legacy completions have one cap field
            shaped["max_tokens"] = cap
        if stream:  # streams always ask for usage
            options = dict(shaped.get("stream_options") or {})
            options["include_usage"] = True
            shaped["stream_options"] = options
        return shaped

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ValueError("no choices")
        data["model"] = entry.id
        usage = data.get("usage")
        return Reading(
            data, openai_chat_usage(usage), produced_by_chat_choices(data), reported_cost(usage)
        )

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        data = reading.answer
        usage = data["usage"] if isinstance(data.get("usage"), dict) else {}
        usage.update(
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            total_tokens=tokens.total_tokens,
            cost=cost_number(cost),
        )
        data["usage"] = usage
        return data

    def relay(self, entry: ModelEntry, request_id: str) -> "ChatRelay":
        chunk = "chat.completion.chunk" if self.object == "chat.completion" else self.object
        return ChatRelay(entry, request_id, chunk)


class ChatRelay:
    """Chunks pass through as they come (with our model id); the upstream's usage-only chunk is
    replaced by ours, with cost, then [DONE]."""

    def __init__(self, entry: ModelEntry, request_id: str, obj: str) -> None:
        self.entry, self.request_id, self.object = entry, request_id, obj
        self.reported: TokenCounts | None = None
        self.upstream_cost: str | None = None
        self.produced = 0
        self.relayed = 0
        self._last: dict[str, Any] = {}

    def feed(self, event: dict[str, Any]) -> bytes:
        usage = event.get("usage")
        self.reported = openai_chat_usage(usage) or self.reported
        self.upstream_cost = reported_cost(usage) or self.upstream_cost
        if not event.get("choices"):
            return b""  # the upstream's usage-only chunk: ours replaces it
        self.produced += produced_by_chat_choices(event)
        event["model"] = self.entry.id
        event.pop("usage", None)
        self._last = event
        self.relayed += 1
        return data_event(event)

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        final = {
            "id": self._last.get("id", f"chatcmpl-{self.request_id}"),
            "object": self.object,
            "created": self._last.get("created", int(time.time())),
            "model": self.entry.id,
            "choices": [],
            "usage": {
                "prompt_tokens": tokens.prompt_tokens,
                "completion_tokens": tokens.completion_tokens,
                "total_tokens": tokens.total_tokens,
                "cost": cost_number(cost),
            },
        }
        return data_event(final) + DONE

    def error(self, message: str) -> bytes:
        return error_event(message)


# --- Responses --------------------------------------------------------------------------------

_RESPONSE_FINAL = ("response.completed", "response.incomplete", "response.failed")


class ResponsesPassthrough:
    dialect: Dialect = "openai"
    path = "/responses"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        shaped = forwarded(body, entry, provider, RESPONSES_FIELDS)
        shaped["max_output_tokens"] = cap
        return shaped

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("output"), list):
            raise ValueError("no output")
        data["model"] = entry.id
        usage = data.get("usage")
        return Reading(
            data, openai_responses_usage(usage), produced_by_response(data), reported_cost(usage)
        )

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        data = reading.answer
        data["usage"] = responses_usage(data.get("usage"), tokens, cost)
        return data

    def relay(self, entry: ModelEntry, request_id: str) -> "ResponsesRelay":
        return ResponsesRelay(entry)


def responses_usage(usage: Any, tokens: TokenCounts, cost: int) -> dict[str, Any]:
    out = dict(usage) if isinstance(usage, dict) else {}
    out.update(
        input_tokens=tokens.prompt_tokens,
        output_tokens=tokens.completion_tokens,
        total_tokens=tokens.total_tokens,
        input_tokens_details={"cached_tokens": tokens.cached_prompt_tokens},
        output_tokens_details={"reasoning_tokens": tokens.reasoning_tokens},
        cost=cost_number(cost),
    )
    return out


def produced_by_response(data: dict[str, Any]) -> int:
    """Characters of a response's output items: message text, function calls, reasoning."""
    total = 0
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        for name in ("name", "arguments"):
            if isinstance(item.get(name), str):
                total += len(item[name])
        for part in item.get("content") or item.get("summary") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
    return total


class ResponsesRelay:
    """Typed events pass through (with our model id); the final `response.completed` is held
    back until the charge is settled, then sent with our usage and cost."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.reported: TokenCounts | None = None
        self.upstream_cost: str | None = None
        self.produced = 0
        self.relayed = 0
        self._final: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if not isinstance(kind, str):
            return b""
        response = event.get("response")
        if isinstance(response, dict):
            response["model"] = self.entry.id
        if kind.endswith(".delta") and isinstance(event.get("delta"), str):
            self.produced += len(event["delta"])
        self.relayed += 1
        if kind in _RESPONSE_FINAL and isinstance(response, dict):
            usage = response.get("usage")
            self.reported = openai_responses_usage(usage)
            self.upstream_cost = reported_cost(usage)
            self._final = event
            return b""
        return typed_event(event)

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        if self._final is None:
            return b""
        response = self._final["response"]
        response["usage"] = responses_usage(response.get("usage"), tokens, cost)
        return typed_event(self._final)

    def error(self, message: str) -> bytes:
        return typed_event(
            {"type": "error", "code": "upstream_stream_error", "message": message, "param": None}
        )


# --- embeddings -------------------------------------------------------------------------------


class EmbeddingsPassthrough:
    dialect: Dialect = "openai"
    path = "/embeddings"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        return forwarded(body, entry, provider, EMBEDDINGS_FIELDS)  # no output to cap

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ValueError("no data")
        data["model"] = entry.id
        usage = data.get("usage")
        return Reading(data, openai_embeddings_usage(usage), 0, reported_cost(usage))

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        data = reading.answer
        data["usage"] = {
            "prompt_tokens": tokens.prompt_tokens,
            "total_tokens": tokens.prompt_tokens,
            "cost": cost_number(cost),
        }
        return data

    def relay(self, entry: ModelEntry, request_id: str) -> ChatRelay:
        raise ValueError("embeddings do not stream")
