"""Bounds on values that come from outside (upstream answers, request headers, names) before
they become events: an event holds nothing a read model cannot store (64-bit counts, bounded
text), so no accepted event can stop a projection.

A token count at or over MAX_TOKENS is implausible (no request comes near a trillion tokens):
it is recorded as MAX_TOKENS and the usage is flagged `implausible_usage`.
"""

from typing import Any

MAX_TOKENS = 10**12
MAX_LATENCY_MS = 2**31 - 1
MAX_UNBILLED = 2**62  # micro-credits: what a settlement records beyond its hold, at most
TEXT_BOUNDS = {  # field of a usage record -> most characters kept
    "request_id": 64,
    "key_name": 200,
    "model": 200,
    "provider": 64,
    "region": 32,
    "status": 32,
    "client_ip": 64,
    "user_agent": 300,
}


def bounded_count(value: int) -> int:
    return max(0, min(int(value), MAX_TOKENS))


def bounded_text(value: str | None, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def bounded_usage(usage: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The usage fields of a settlement, bounded, and the flags that bounding raised."""
    flags: list[str] = []
    bounded = dict(usage)
    for name in (
        "prompt_tokens",
        "completion_tokens",
        "cached_prompt_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ):
        if name in bounded:
            count = bounded[name]
            if count >= MAX_TOKENS and "implausible_usage" not in flags:
                flags.append("implausible_usage")
            bounded[name] = bounded_count(count)
    cost = bounded.get("upstream_cost")
    if isinstance(cost, int) and not isinstance(cost, bool):
        bounded["upstream_cost"] = max(0, min(cost, 2**62))
    if "latency_ms" in bounded:
        bounded["latency_ms"] = max(0, min(int(bounded["latency_ms"]), MAX_LATENCY_MS))
    if "status_code" in bounded and not 0 <= bounded["status_code"] <= 999:
        bounded["status_code"] = 0
    for name, limit in TEXT_BOUNDS.items():
        if name in bounded:
            bounded[name] = bounded_text(bounded[name], limit)
    return bounded, flags
