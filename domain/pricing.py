"""Prices and holds: what a request may cost at most, and what its real usage costs.

Prices are integer micro-credits per million tokens; costs are integer micro-credits, each part
rounded up (domain.money.cost_of). Token counts follow one convention whatever the upstream's
dialect: `prompt_tokens` is every input token, *including* cache reads and cache writes, and
`completion_tokens` every output token, including reasoning.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.money import cost_of

IMAGE_PART_TOKENS = 1_700  # a generous flat estimate for an image (or other non-text) part


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """What one request used, as the upstream reported it (or as we estimated it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # cache reads, part of prompt_tokens
    cache_write_tokens: int = 0  # cache writes, part of prompt_tokens
    reasoning_tokens: int = 0  # part of completion_tokens

    def __post_init__(self) -> None:
        if (
            min(
                self.prompt_tokens,
                self.completion_tokens,
                self.cached_prompt_tokens,
                self.cache_write_tokens,
                self.reasoning_tokens,
            )
            < 0
        ):
            raise ValueError("token counts cannot be negative")

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens at the plain prompt price (never negative, whatever an upstream says)."""
        return max(0, self.prompt_tokens - self.cached_prompt_tokens - self.cache_write_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


NO_TOKENS = TokenCounts()


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """A model's prices, micro-credits per million tokens. Cache reads and writes default to the
    prompt price; reasoning tokens are completion tokens."""

    prompt: int
    completion: int
    cached_prompt: int | None = None
    cache_write: int | None = None

    @property
    def cache_read_price(self) -> int:
        return self.prompt if self.cached_prompt is None else self.cached_prompt

    @property
    def cache_write_price(self) -> int:
        return self.prompt if self.cache_write is None else self.cache_write

    @property
    def dearest_input_price(self) -> int:
        """The most an input token can cost: what a hold prices the prompt bound at."""
        return max(self.prompt, self.cache_read_price, self.cache_write_price)

    def cost(self, tokens: TokenCounts) -> int:
        """Micro-credits for real usage: each kind of token at its own price; the input and
        the output each rounded up once (never undercharge)."""
        cached = min(tokens.cached_prompt_tokens, tokens.prompt_tokens)
        writes = min(tokens.cache_write_tokens, tokens.prompt_tokens - cached)
        plain = tokens.prompt_tokens - cached - writes
        input_cost = -(
            -(
                plain * self.prompt
                + cached * self.cache_read_price
                + writes * self.cache_write_price
            )
            // 1_000_000
        )
        return input_cost + cost_of(tokens.completion_tokens, self.completion)


def hold_for(prices: PriceSheet, prompt_bound: int, output_cap: int, choices: int = 1) -> int:
    """The hold of one request: its prompt bound at the dearest input price plus `choices`
    answers of `output_cap` tokens each. The one place a hold is sized."""
    if prompt_bound < 0 or output_cap < 0 or choices < 1:
        raise ValueError("a hold needs non-negative token bounds and at least one choice")
    per_answer = cost_of(prompt_bound, prices.dearest_input_price) + cost_of(
        output_cap, prices.completion
    )
    return per_answer * choices


def output_cap(requested: int | None, model_cap: int) -> int:
    """The output tokens a hold covers: the client's cap if given (even above the model's: the
    hold must cover what may be produced), else the model's own output cap."""
    return model_cap if requested is None else requested


# --- estimating sizes ------------------------------------------------------------------------


def estimate_text_tokens(characters: int) -> int:
    """Tokens in produced text when the upstream did not say: about four characters each."""
    return -(-characters // 4)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap, deliberately generous estimate of a chat request's prompt tokens (never zero).

    UTF-8 bytes / 3 of every text (a real tokenizer gives about 4 characters per token in
    English, and no fewer than one token per CJK character), plus 4 per message and 3 to prime
    the reply; a flat allowance per image or other non-text part; tool and schema definitions
    count as text.
    """
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    text_bytes = 0
    tokens = 3 + 4 * len(messages)
    for message in messages:
        message_bytes, message_tokens = _message_size(message)
        text_bytes += message_bytes
        tokens += message_tokens
    for key in ("tools", "functions", "response_format"):
        if body.get(key) is not None:
            text_bytes += len(json.dumps(body[key], ensure_ascii=False).encode())
    return max(1, tokens + math.ceil(text_bytes / 3))


def estimate_input_tokens(*values: object) -> int:
    """The same generous estimate for any other request shape (a legacy prompt, Responses
    `input`, embeddings `input`, Anthropic `system` and `messages`): every text's UTF-8 bytes
    / 3, 4 per structured item, a flat allowance per non-text part (never zero)."""
    text_bytes, tokens = 0, 3
    stack: list[object] = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            text_bytes += len(value.encode())
        elif isinstance(value, Mapping):
            tokens += 4
            if value.get("type") in ("image", "image_url", "input_image", "document"):
                tokens += IMAGE_PART_TOKENS
                continue
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            tokens += 1  # a token id (legacy prompts and embeddings accept token arrays)
    return max(1, tokens + math.ceil(text_bytes / 3))


def _message_size(message: object) -> tuple[int, int]:
    """(text bytes, flat tokens) of one message."""
    if not isinstance(message, Mapping):
        return 0, 0
    text_bytes, flat_tokens = _content_size(message.get("content"))
    for key in ("name", "tool_call_id", "refusal"):
        if isinstance(message.get(key), str):
            text_bytes += len(message[key].encode())
    if message.get("tool_calls") is not None:
        text_bytes += len(json.dumps(message["tool_calls"], ensure_ascii=False).encode())
    return text_bytes, flat_tokens


def _content_size(content: object) -> tuple[int, int]:
    if isinstance(content, str):
        return len(content.encode()), 0
    if not isinstance(content, list):
        return 0, 0
    text_bytes = flat_tokens = 0
    for part in content:
        if isinstance(part, str):
            text_bytes += len(part.encode())
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            text_bytes += len(part["text"].encode())
        else:
            flat_tokens += IMAGE_PART_TOKENS
    return text_bytes, flat_tokens
