"""Which request fields each client API accepts: its documented schema, as an allow-list.

Generous on purpose: every parameter of the OpenAI and Anthropic Python SDKs' typed requests is
here (tests/infrastructure/test_request_fields.py checks it against the installed SDKs), plus
the few the APIs documented before (`temperature`, `top_p`, `top_k` on Messages) and the
Anthropic beta's except those that route or bill elsewhere (`fallbacks`, `billing_policy`,
`fallback_credit_token`), `id`, `thread` and `betas` (a header, not a field). A field outside
its API's list goes upstream only if every provider that may serve the request allows it in the
catalogue (`extra_fields = ["top_k"]`); anything else is a 400 naming it, so no client steers
length, routing or surcharges (llama.cpp's `n_predict`, OpenRouter's `models`, `provider`,
`plugins`) behind the hold's back. The output cap is not the client's: the gateway always sends
the one it held for (ChatPassthrough and friends).
"""

from collections.abc import Mapping
from typing import Any

CHAT_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

COMPLETIONS_FIELDS = frozenset(
    {
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "model",
        "n",
        "presence_penalty",
        "prompt",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)

RESPONSES_FIELDS = frozenset(
    {
        "access_programs",
        "background",
        "background_options",
        "context_management",
        "conversation",
        "image",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)

EMBEDDINGS_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})

MESSAGES_FIELDS = frozenset(
    {
        "cache_control",
        "compaction",
        "container",
        "context_management",
        "diagnostics",
        "inference_geo",
        "max_tokens",
        "mcp_servers",
        "messages",
        "metadata",
        "model",
        "output_config",
        "output_format",
        "service_tier",
        "skills",
        "speed",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
        "user_profile_id",
        "workspace_id",
    }
)


# Documented values that bill beyond the price sheet the hold is sized with (OpenAI's priority
# processing, Anthropic's fast mode, search surcharges): like an undocumented field, they need the
# provider's `extra_fields` (the operator prices the model for them).
SURCHARGED: dict[str, frozenset[Any] | None] = {  # None: any value
    "service_tier": frozenset({"priority", "scale"}),
    "speed": frozenset({"fast"}),
    "web_search_options": None,
}


def fields_beyond(body: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    """The body's fields its API does not document, and those whose value is surcharged (for
    the providers' `extra_fields`)."""
    priced = {
        name
        for name, values in SURCHARGED.items()
        if body.get(name) is not None and (values is None or _hashable(body[name]) in values)
    }
    return (frozenset(body) - allowed) | priced


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else None
