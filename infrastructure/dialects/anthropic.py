"""The Anthropic dialect: the Messages API passed through to an Anthropic upstream."""

from typing import Any

from domain.pricing import TokenCounts
from domain.routing import Dialect, ModelEntry, Provider
from infrastructure.dialects.base import Reading
from infrastructure.dialects.fields import MESSAGES_FIELDS
from infrastructure.dialects.sse import typed_event
from infrastructure.dialects.translation import produced_by_message
from infrastructure.dialects.usage import (
    anthropic_usage,
    anthropic_usage_block,
    cost_number,
    reported_cost,
)

API_VERSION = "2023-06-01"


def headers(provider: Provider) -> dict[str, str]:
    out = {
        "content-type": "application/json",
        "accept": "application/json",
        "anthropic-version": API_VERSION,
    }
    if provider.api_key:
        out["x-api-key"] = provider.api_key
    return out


def forwarded(
    body: dict[str, Any], entry: ModelEntry, provider: Provider, cap: int
) -> dict[str, Any]:
    """What an Anthropic upstream receives of a Messages request: the one place that decides
    it. The Messages schema's fields and the provider's `extra_fields` (others were refused
    before the hold), the upstream's model name, and the output cap held for."""
    shaped = {k: v for k, v in body.items() if k in MESSAGES_FIELDS or k in provider.extra_fields}
    shaped["model"] = entry.upstream_model
    shaped["max_tokens"] = cap
    return shaped


def messages_usage(usage: Any, tokens: TokenCounts, cost: int) -> dict[str, Any]:
    out = dict(usage) if isinstance(usage, dict) else {}
    out.update(anthropic_usage_block(tokens), cost=cost_number(cost))
    return out


def error_event(message: str) -> bytes:
    return typed_event({"type": "error", "error": {"type": "api_error", "message": message}})


class MessagesPassthrough:
    dialect: Dialect = "anthropic"
    path = "/messages"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        return forwarded(body, entry, provider, cap)

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise ValueError("no content")
        data["model"] = entry.id
        usage = data.get("usage")
        return Reading(
            data, anthropic_usage(usage), produced_by_message(data), reported_cost(usage)
        )

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        data = reading.answer
        data["usage"] = messages_usage(data.get("usage"), tokens, cost)
        return data

    def relay(self, entry: ModelEntry, request_id: str) -> "MessagesRelay":
        return MessagesRelay(entry)


class MessagesRelay:
    """Anthropic events pass through (with our model id); `message_delta` and `message_stop`
    are held back until the charge is settled, then sent with our usage and cost."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.reported: TokenCounts | None = None
        self.upstream_cost: str | None = None
        self.produced = 0
        self.relayed = 0
        self._input: dict[str, Any] = {}  # message_start's usage (input and cache tokens)
        self._delta: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if not isinstance(kind, str):
            return b""
        self.relayed += 1
        if kind == "message_start":
            message = event.get("message") or {}
            message["model"] = self.entry.id
            self._input = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.produced += len(block.get("name") or "")
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for name in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(name), str):
                    self.produced += len(delta[name])
        elif kind == "message_delta":
            self._delta = event
            usage = {**self._input, **(event.get("usage") or {})}
            self.reported = anthropic_usage(usage)
            self.upstream_cost = reported_cost(usage)
            return b""
        elif kind == "message_stop":
            return b""
        return typed_event(event)

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        delta = self._delta or {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        }
        delta["usage"] = messages_usage(delta.get("usage"), tokens, cost)
        return typed_event(delta) + typed_event({"type": "message_stop"})

    def error(self, message: str) -> bytes:
        return error_event(message)
