"""Exchanges that translate: Anthropic Messages clients on OpenAI-dialect (chat) upstreams, and
chat completions clients on Anthropic upstreams (infrastructure.dialects.translation)."""

import time
from typing import Any

from domain.pricing import TokenCounts
from domain.routing import Dialect, ModelEntry, Provider
from infrastructure.dialects import anthropic, openai
from infrastructure.dialects.base import Reading, produced_by_chat_choices
from infrastructure.dialects.sse import DONE, data_event, typed_event
from infrastructure.dialects.translation import (
    ChatToMessagesStream,
    MessagesToChatStream,
    chat_to_messages_answer,
    chat_to_messages_request,
    messages_to_chat_answer,
    messages_to_chat_request,
    produced_by_message,
)
from infrastructure.dialects.usage import (
    anthropic_usage,
    anthropic_usage_block,
    cost_number,
    openai_chat_usage,
    openai_chat_usage_block,
    reported_cost,
)


class MessagesViaChat:
    """An Anthropic Messages client, served by an OpenAI-dialect chat model."""

    dialect: Dialect = "openai"
    path = "/chat/completions"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        chat = openai.with_chat_cap(messages_to_chat_request(body), provider, cap)
        chat["model"] = entry.upstream_model
        if stream:
            chat["stream_options"] = {"include_usage": True}
        return chat

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ValueError("no choices")
        usage = data.get("usage")
        answer = chat_to_messages_answer(data)
        answer["model"] = entry.id
        return Reading(
            answer, openai_chat_usage(usage), produced_by_chat_choices(data), reported_cost(usage)
        )

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        reading.answer["usage"] = anthropic.messages_usage(None, tokens, cost)
        return reading.answer

    def relay(self, entry: ModelEntry, request_id: str) -> "MessagesFromChatRelay":
        return MessagesFromChatRelay(entry, request_id)


class MessagesFromChatRelay:
    def __init__(self, entry: ModelEntry, request_id: str) -> None:
        self.stream = ChatToMessagesStream(f"msg_{request_id}", entry.id)
        self.reported: TokenCounts | None = None
        self.upstream_cost: str | None = None
        self.produced = 0
        self.relayed = 0

    def feed(self, event: dict[str, Any]) -> bytes:
        usage = event.get("usage")
        self.reported = openai_chat_usage(usage) or self.reported
        self.upstream_cost = reported_cost(usage) or self.upstream_cost
        if not event.get("choices"):
            return b""
        self.produced += produced_by_chat_choices(event)
        self.relayed += 1
        return b"".join(typed_event(e) for e in self.stream.feed(event))

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        usage = {**anthropic_usage_block(tokens), "cost": cost_number(cost)}
        return b"".join(typed_event(e) for e in self.stream.close(usage))

    def error(self, message: str) -> bytes:
        return anthropic.error_event(message)


class ChatViaMessages:
    """A chat completions client, served by an Anthropic model."""

    dialect: Dialect = "anthropic"
    path = "/messages"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        shaped = chat_to_messages_request(body, cap)
        shaped["max_tokens"] = cap  # the held cap, whatever the client sent
        shaped["model"] = entry.upstream_model
        return shaped

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise ValueError("no content")
        usage = data.get("usage")
        answer = messages_to_chat_answer(data, int(time.time()))
        answer["model"] = entry.id
        return Reading(
            answer, anthropic_usage(usage), produced_by_message(data), reported_cost(usage)
        )

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        reading.answer["usage"] = {**openai_chat_usage_block(tokens), "cost": cost_number(cost)}
        return reading.answer

    def relay(self, entry: ModelEntry, request_id: str) -> "ChatFromMessagesRelay":
        return ChatFromMessagesRelay(entry, request_id)


class ChatFromMessagesRelay:
    def __init__(self, entry: ModelEntry, request_id: str) -> None:
        self.entry = entry
        self.stream = MessagesToChatStream(f"chatcmpl-{request_id}", entry.id, int(time.time()))
        self.passthrough = anthropic.MessagesRelay(entry)  # reads usage and what was produced

    @property
    def reported(self) -> TokenCounts | None:
        return self.passthrough.reported

    @property
    def upstream_cost(self) -> str | None:
        return self.passthrough.upstream_cost

    @property
    def produced(self) -> int:
        return self.passthrough.produced

    @property
    def relayed(self) -> int:
        return self.passthrough.relayed

    def feed(self, event: dict[str, Any]) -> bytes:
        self.passthrough.feed(dict(event))
        return b"".join(data_event(chunk) for chunk in self.stream.feed(event))

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        final = {
            "id": self.stream.id,
            "object": "chat.completion.chunk",
            "created": self.stream.created,
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
        return openai.error_event(message)
