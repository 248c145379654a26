"""The usage record of one metered request: what the ledger page's `Settled` event records."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from domain.pricing import TokenCounts

Api = Literal["chat.completions", "completions", "responses", "embeddings", "messages"]
APIS: tuple[Api, ...] = ("chat.completions", "completions", "responses", "embeddings", "messages")

# "reported": the cost follows the upstream's own usage; "estimated": the upstream gave none (the
# client hung up, a stream without usage) and we counted what was produced, never zero;
# "none": nothing was charged because the request failed (the upstream failed or refused it).
CostSource = Literal["reported", "estimated", "none"]


@dataclass(frozen=True, slots=True)
class Usage:
    key_name: str
    model: str
    provider: str | None
    region: str | None
    prompt_tokens: int  # every input token, cache reads and writes included
    completion_tokens: int  # every output token, reasoning included
    status: str  # "ok", "upstream_error", "client_closed", "unsettled", …
    status_code: int
    latency_ms: int
    streamed: bool
    client_ip: str | None
    user_agent: str | None
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    api: Api = "chat.completions"
    cost_source: CostSource = "reported"
    upstream_cost: str | None = None  # the upstream's own reported cost (its decimal digits)
    flags: Sequence[str] = ()

    @classmethod
    def of(cls, tokens: TokenCounts, **fields: Any) -> "Usage":
        """A usage record with the counts of `tokens`."""
        return cls(
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            cached_prompt_tokens=tokens.cached_prompt_tokens,
            cache_write_tokens=tokens.cache_write_tokens,
            reasoning_tokens=tokens.reasoning_tokens,
            **fields,
        )

    @property
    def tokens(self) -> TokenCounts:
        return TokenCounts(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_prompt_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )

    def event_fields(self) -> dict[str, Any]:
        """The fields of the `Settled` event (flags are added by the page)."""
        return {
            "key_name": self.key_name,
            "model": self.model,
            "provider": self.provider,
            "region": self.region,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "status": self.status,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "streamed": self.streamed,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "api": self.api,
            "cost_source": self.cost_source,
            "upstream_cost": self.upstream_cost,
        }
