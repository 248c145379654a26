"""Reading token counts out of upstream usage blocks, per dialect, into one TokenCounts.

OpenAI counts cached tokens inside `prompt_tokens` (`prompt_tokens_details.cached_tokens`) and
reasoning inside `completion_tokens`; Anthropic reports cache reads and writes *beside*
`input_tokens`. TokenCounts always includes them in `prompt_tokens` (domain.pricing).
"""

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from domain.bounds import bounded_count
from domain.money import format_credits
from domain.pricing import TokenCounts


def _count(value: Any) -> int | None:
    """A well-formed count, bounded at the edge (domain.bounds: a count at the bound is flagged
    implausible_usage and can never overflow a read model or a JSON encoder)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return bounded_count(value)
    return None


def _detail(usage: dict[str, Any], block: str, name: str) -> int:
    details = usage.get(block)
    return (_count(details.get(name)) or 0) if isinstance(details, dict) else 0


def openai_chat_usage(usage: Any) -> TokenCounts | None:
    """Chat and legacy completions: prompt_tokens, completion_tokens and their details."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    cached = min(prompt, _detail(usage, "prompt_tokens_details", "cached_tokens"))
    writes = min(prompt - cached, _detail(usage, "prompt_tokens_details", "cache_write_tokens"))
    reasoning = min(completion, _detail(usage, "completion_tokens_details", "reasoning_tokens"))
    return TokenCounts(prompt, completion, cached, writes, reasoning)


def openai_responses_usage(usage: Any) -> TokenCounts | None:
    """Responses: input_tokens, output_tokens and their details."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    if prompt is None or completion is None:
        return None
    cached = min(prompt, _detail(usage, "input_tokens_details", "cached_tokens"))
    reasoning = min(completion, _detail(usage, "output_tokens_details", "reasoning_tokens"))
    return TokenCounts(prompt, completion, cached, 0, reasoning)


def openai_embeddings_usage(usage: Any) -> TokenCounts | None:
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _count(usage.get("total_tokens"))
    return None if prompt is None else TokenCounts(prompt, 0)


def anthropic_usage(usage: Any) -> TokenCounts | None:
    """Messages: input_tokens (without the cache), cache reads, cache writes, output_tokens."""
    if not isinstance(usage, dict):
        return None
    uncached, output = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    if uncached is None or output is None:
        return None
    reads = _count(usage.get("cache_read_input_tokens")) or 0
    writes = _count(usage.get("cache_creation_input_tokens")) or 0
    return TokenCounts(uncached + reads + writes, output, reads, writes)


def anthropic_usage_block(tokens: TokenCounts) -> dict[str, int]:
    """Our counts in Anthropic's shape (input_tokens excludes cache reads and writes)."""
    return {
        "input_tokens": tokens.uncached_prompt_tokens,
        "output_tokens": tokens.completion_tokens,
        "cache_read_input_tokens": tokens.cached_prompt_tokens,
        "cache_creation_input_tokens": tokens.cache_write_tokens,
    }


def openai_chat_usage_block(tokens: TokenCounts) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens.prompt_tokens,
        "completion_tokens": tokens.completion_tokens,
        "total_tokens": tokens.total_tokens,
        "prompt_tokens_details": {"cached_tokens": tokens.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": tokens.reasoning_tokens},
    }


def reported_cost(usage: Any) -> str | None:
    """The upstream's own cost (OpenRouter's `usage.cost`), as the decimal digits it sent."""
    if not isinstance(usage, dict):
        return None
    value = usage.get("cost")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or number < 0:
        return None
    return format(number.normalize(), "f")[:40]


def cost_number(micro: int) -> orjson.Fragment:
    """Our cost as a JSON *number* with exact decimal digits (0.000002), as OpenRouter sends it:
    clients such as litellm and the AI SDK drop a string."""
    return orjson.Fragment(format_credits(micro).encode())
