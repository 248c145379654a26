"""Prices and holds: what a request may cost at most, and what its real usage costs.

Prices are integer micro-credits per million tokens; costs are integer micro-credits, each part
rounded up (domain.money.cost_of). Token counts follow one convention whatever the upstream's
dialect: `prompt_tokens` is every input token, *including* cache reads and cache writes, and
`completion_tokens` every output token, including reasoning.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.money import cost_of


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


# --- bounding sizes ---------------------------------------------------------------------------

# A prompt bound that never undercounts. Byte-level BPE tokenizers (OpenAI's, Llama's, Qwen's)
# and SentencePiece with byte fallback (Gemma, Mistral) never make a token of less than one UTF-8
# byte, so a text's bytes bound its tokens. What a chat template adds (role markers, separators,
# the reply's priming) is bounded per object and once per request; what the client cannot see
# (a tool-use preamble, a built-in tool's definition) by allowances; a non-text part (an image,
# audio, a file) by the larger of its encoded size and a flat allowance (a part given by URL has
# no size here: the flat allowance, and an upstream that counts more shows as `over_hold`).
PRIMING_TOKENS = 16  # the template's framing and the reply's priming, once per request
ITEM_TOKENS = 8  # each object (a message, a content part, a tool): markers and separators
NON_TEXT_PART_TOKENS = 2_500  # an image or file part, at least (OpenAI high detail ≤ ~2,500)
TOOL_USE_TOKENS = 600  # the system preamble an upstream adds when tools are offered
BUILT_IN_TOOL_TOKENS = 1_000  # a built-in tool (computer use, bash, web search …): hidden text
NON_TEXT_TYPES = frozenset(
    {
        "image",
        "image_url",
        "input_image",
        "input_audio",
        "input_file",
        "audio",
        "file",
        "document",
    }
)
_DEFINED_TOOL_TYPES = frozenset({None, "function", "custom"})  # defined by the client's text


def estimate_text_tokens(characters: int) -> int:
    """Tokens in produced text when the upstream did not say: about four characters each."""
    return -(-characters // 4)


def prompt_bound(body: Mapping[str, Any]) -> int:
    """An upper bound of the prompt tokens of any request body (chat, legacy completions,
    Responses, embeddings, Anthropic Messages): every string's UTF-8 bytes (keys too: a schema's
    property names are rendered), every number's digits, ITEM_TOKENS per object, flat
    allowances for what an upstream adds unseen, and NON_TEXT_PART_TOKENS or more per non-text
    part. Counts the whole body, so no prompt-bearing field can be missed; never zero."""
    tokens = PRIMING_TOKENS + _size(body)
    for name in ("tools", "functions"):
        tools = body.get(name)
        if isinstance(tools, list) and tools:
            tokens += TOOL_USE_TOKENS + BUILT_IN_TOOL_TOKENS * sum(
                1
                for tool in tools
                if isinstance(tool, Mapping) and _type_of(tool) not in _DEFINED_TOOL_TYPES
            )
    return tokens


def _type_of(item: Mapping[Any, Any]) -> str | None:
    """An object's `type`: a client may send any JSON there, and what is neither text nor
    absent is "" (counted as text, and as a tool the bound cannot see)."""
    kind = item.get("type")
    return kind if kind is None or isinstance(kind, str) else ""


def _size(value: object) -> int:
    """The bound of one JSON value (see prompt_bound), walked without recursion."""
    total = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, Mapping):
            if _type_of(item) in NON_TEXT_TYPES:
                total += ITEM_TOKENS + max(NON_TEXT_PART_TOKENS, _size(dict(item, type="")))
                continue
            total += ITEM_TOKENS
            for name, child in item.items():
                total += len(str(name).encode("utf-8", "surrogatepass"))
                stack.append(child)
        elif isinstance(item, list | tuple):
            total += 1
            stack.extend(item)
        elif isinstance(item, bool) or item is None:
            total += 1
        elif isinstance(item, int | float):
            total += len(repr(item))  # a token id is one token; a number in a schema, its digits
    return total
