"""What one client API needs from one upstream dialect: an *exchange*.

An exchange shapes the upstream request (the one place that decides which fields are forwarded),
reads the upstream's answer into the client API's shape plus the usage it reported, and relays a
stream event by event. Money is not its business: metering decides the charge, and the exchange
only writes the charged tokens and cost into the client's answer.
"""

from dataclasses import dataclass
from typing import Any, Protocol

from domain.pricing import TokenCounts
from domain.routing import Dialect, ModelEntry, Provider


@dataclass
class Reading:
    """A non-streamed upstream answer, read."""

    answer: dict[str, Any]  # in the client API's shape, without our usage yet
    reported: TokenCounts | None  # the upstream's usage, if it gave one
    produced: int  # characters produced (text, tool-call names and arguments), for estimates
    upstream_cost: str | None = None


class StreamRelay(Protocol):
    """One stream, event by event, in the client API's shape."""

    @property
    def reported(self) -> TokenCounts | None:
        """The upstream's usage, once it said it."""

    @property
    def upstream_cost(self) -> str | None: ...

    @property
    def produced(self) -> int:
        """Characters produced so far (text, tool calls), for estimates."""

    @property
    def relayed(self) -> int:
        """Valid events passed on so far."""

    def feed(self, event: dict[str, Any]) -> bytes:
        """One upstream event in; the bytes for the client now (possibly none)."""
        ...

    def close(self, tokens: TokenCounts, cost: int) -> bytes:
        """The final events, carrying the charged usage and cost."""
        ...

    def error(self, message: str) -> bytes:
        """An in-stream error event in the client API's shape."""
        ...


class Exchange(Protocol):
    dialect: Dialect
    path: str  # under the provider's base_url, e.g. "/chat/completions"

    def upstream_body(
        self, body: dict[str, Any], entry: ModelEntry, provider: Provider, *, stream: bool, cap: int
    ) -> dict[str, Any]:
        """The upstream request: the allowed fields only, and `cap` (the output cap the hold
        covers) as its output cap, whatever the client sent."""
        ...

    def read(self, data: Any, entry: ModelEntry) -> Reading:
        """Raises ValueError when the answer is not a valid one."""
        ...

    def answer(self, reading: Reading, tokens: TokenCounts, cost: int) -> dict[str, Any]:
        """The client's answer with the charged usage and cost."""
        ...

    def relay(self, entry: ModelEntry, request_id: str) -> StreamRelay: ...


def produced_by_chat_choices(data: dict[str, Any]) -> int:
    """Characters a chat (or legacy completions) answer or chunk produced: text, refusals and
    tool calls' names and arguments (they are output tokens too)."""
    total = 0
    for choice in data.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            total += len(choice["text"])
        message = choice.get("message") or choice.get("delta") or {}
        if not isinstance(message, dict):
            continue
        for name in ("content", "refusal", "reasoning", "reasoning_content"):
            if isinstance(message.get(name), str):
                total += len(message[name])
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for name in ("name", "arguments"):
                    if isinstance(function.get(name), str):
                        total += len(function[name])
    return total
