"""Which request fields go upstream: each API's allow-list passes every parameter of the
installed OpenAI and Anthropic SDKs; anything else needs every candidate provider's
`extra_fields`, or it is a 400 naming it before anything is held."""

from pathlib import Path
from typing import Any

import pytest
from anthropic.types import message_create_params
from anthropic.types.beta import message_create_params as beta_message_create_params
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.responses import response_create_params

from domain.routing import (
    Catalogue,
    ModelEntry,
    ParameterNotAllowed,
    Provider,
    check_extra_fields,
)
from infrastructure.catalogue import ConfigError, load_catalogue
from infrastructure.dialects.anthropic import MessagesPassthrough
from infrastructure.dialects.fields import (
    CHAT_FIELDS,
    COMPLETIONS_FIELDS,
    EMBEDDINGS_FIELDS,
    MESSAGES_FIELDS,
    RESPONSES_FIELDS,
    fields_beyond,
)
from infrastructure.dialects.openai import ChatPassthrough, ResponsesPassthrough
from infrastructure.http.errors import api_error

# Anthropic beta fields that route or bill elsewhere, or are not body fields (documented).
BETA_REFUSED = {"betas", "billing_policy", "fallback_credit_token", "fallbacks", "id", "thread"}


def sdk_fields(module: Any) -> set[str]:
    """Every key of the module's typed request dicts (streaming variants included)."""
    names: set[str] = set()
    for name in dir(module):
        value = getattr(module, name)
        if name.endswith(("Params", "ParamsBase", "ParamsStreaming", "ParamsNonStreaming")):
            names |= set(getattr(value, "__annotations__", {}))
    return names


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        (chat_create_params, CHAT_FIELDS),
        (completion_create_params, COMPLETIONS_FIELDS),
        (response_create_params, RESPONSES_FIELDS),
        (embedding_create_params, EMBEDDINGS_FIELDS),
        (message_create_params, MESSAGES_FIELDS),
    ],
    ids=["chat", "completions", "responses", "embeddings", "messages"],
)
def test_every_sdk_parameter_is_allowed(module: Any, allowed: frozenset[str]) -> None:
    fields = sdk_fields(module)
    assert len(fields) >= 5 and "model" in fields  # the SDK's shape was read
    assert fields - allowed == set()


def test_the_anthropic_betas_fields_are_allowed_except_those_that_route_or_bill() -> None:
    assert sdk_fields(beta_message_create_params) - MESSAGES_FIELDS <= BETA_REFUSED


VLLM = Provider("vllm", "http://127.0.0.1:9/v1", "", "us", extra_fields=frozenset({"top_k"}))
PLAIN = Provider("plain", "http://127.0.0.1:9/v1", "", "us")
ENTRY = ModelEntry("a/m", ("vllm",), "m", 1, 1, 100)


def test_an_extra_field_needs_every_candidate_provider_to_allow_it() -> None:
    check_extra_fields([(ENTRY, VLLM)], {"top_k"})
    with pytest.raises(ParameterNotAllowed) as refused:
        check_extra_fields([(ENTRY, VLLM), (ENTRY, PLAIN)], {"top_k"})
    assert refused.value.param == "top_k" and '"plain"' in str(refused.value)
    with pytest.raises(ParameterNotAllowed) as unknown:
        check_extra_fields([(ENTRY, VLLM)], {"n_predict", "top_k"})
    assert unknown.value.param == "n_predict" and "not a parameter" in str(unknown.value)
    answer = api_error(unknown.value)
    assert (answer.status, answer.code, answer.param) == (400, "unknown_parameter", "n_predict")


def test_the_forwarded_body_has_only_allowed_fields_and_the_held_cap() -> None:
    body = {
        "model": "a/m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 1,
        "max_tokens": 100_000,
        "top_k": 5,
        "n_predict": 9,  # refused before the hold; never forwarded even so
    }
    sent = ChatPassthrough().upstream_body(body, ENTRY, VLLM, stream=False, cap=1)
    assert sent == {
        "model": "m",
        "messages": body["messages"],
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "top_k": 5,
    }
    reasoning = Provider("o", "http://x/v1", "", "us", cap_fields=("max_completion_tokens",))
    sent = ChatPassthrough().upstream_body(body, ENTRY, reasoning, stream=True, cap=7)
    assert "max_tokens" not in sent and sent["max_completion_tokens"] == 7
    assert sent["stream_options"] == {"include_usage": True}
    legacy = ChatPassthrough("/completions", "text_completion")
    assert legacy.upstream_body({"prompt": "x"}, ENTRY, PLAIN, stream=False, cap=3) == {
        "prompt": "x",
        "model": "m",
        "max_tokens": 3,
    }
    responses = ResponsesPassthrough().upstream_body(
        {"input": "x", "max_output_tokens": 10**6}, ENTRY, PLAIN, stream=False, cap=4
    )
    assert responses["max_output_tokens"] == 4
    anthropic = MessagesPassthrough().upstream_body(
        {"messages": [], "max_tokens": 10**6, "top_k": 1}, ENTRY, PLAIN, stream=False, cap=5
    )
    assert anthropic["max_tokens"] == 5 and anthropic["top_k"] == 1  # top_k is Messages'


def catalogue_with(tmp_path: Path, provider_lines: str) -> Catalogue:
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[providers."vllm"]
base_url = "http://127.0.0.1:9/v1"
region = "us"
{provider_lines}

[models."a/m"]
provider = "vllm"
prompt_price_per_million = "1"
completion_price_per_million = "1"
max_output_tokens = 10
""",
        encoding="utf-8",
    )
    return load_catalogue(path, {})


def test_the_catalogue_reads_extra_fields_and_output_cap_fields(tmp_path: Path) -> None:
    provider = catalogue_with(
        tmp_path, 'extra_fields = ["top_k"]\noutput_cap_fields = ["max_completion_tokens"]'
    ).providers["vllm"]
    assert provider.extra_fields == {"top_k"}
    assert provider.cap_fields == ("max_completion_tokens",)
    default = catalogue_with(tmp_path, "").providers["vllm"]
    assert default.extra_fields == frozenset()
    assert default.cap_fields == ("max_tokens", "max_completion_tokens")


@pytest.mark.parametrize(
    "lines",
    [
        'extra_fields = "top_k"',
        'extra_fields = ["top k"]',
        "output_cap_fields = []",
        'output_cap_fields = ["n_predict"]',
        'output_cap_fields = ["max_tokens", "max_tokens"]',
    ],
)
def test_bad_field_lists_are_configuration_errors(tmp_path: Path, lines: str) -> None:
    with pytest.raises(ConfigError, match=r'providers\."vllm"'):
        catalogue_with(tmp_path, lines)


def test_surcharged_values_need_the_providers_allowance() -> None:
    assert fields_beyond({"model": "m", "service_tier": "auto"}, CHAT_FIELDS) == frozenset()
    assert fields_beyond({"service_tier": "priority"}, CHAT_FIELDS) == {"service_tier"}
    assert fields_beyond({"web_search_options": {}}, CHAT_FIELDS) == {"web_search_options"}
    assert fields_beyond({"speed": "fast", "top_k": 3}, MESSAGES_FIELDS) == {"speed"}
    assert fields_beyond({"service_tier": ["odd"]}, CHAT_FIELDS) == frozenset()
    allows = Provider("p", "http://x/v1", "", "us", extra_fields=frozenset({"service_tier"}))
    check_extra_fields([(ENTRY, allows)], {"service_tier"})


@pytest.mark.parametrize(
    ("body", "allowed", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, RESPONSES_FIELDS, "tools.web_search"),
        (
            {"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]},
            RESPONSES_FIELDS,
            "tools.file_search",
        ),
        ({"tools": [{"type": "code_interpreter"}]}, RESPONSES_FIELDS, "tools.code_interpreter"),
        ({"tools": [{"type": "mcp"}]}, RESPONSES_FIELDS, "tools.mcp"),
        ({"tools": [{"type": "image_generation"}]}, RESPONSES_FIELDS, "tools.image_generation"),
        (
            {"tools": [{"type": "web_search_20250305"}]},
            MESSAGES_FIELDS,
            "tools.web_search_20250305",
        ),
        (
            {"tools": [{"type": "code_execution_20250825"}]},
            MESSAGES_FIELDS,
            "tools.code_execution_20250825",
        ),
        ({"mcp_servers": [{"url": "https://x"}]}, MESSAGES_FIELDS, "mcp_servers"),
        ({"container": "c1"}, MESSAGES_FIELDS, "container"),
        ({"inference_geo": "us"}, MESSAGES_FIELDS, "inference_geo"),
        ({"tools": [{"type": 3}]}, CHAT_FIELDS, "tools"),  # not a tool type at all
    ],
)
def test_built_in_tools_and_server_side_fields_need_the_providers_allowance(
    body: dict[str, Any], allowed: frozenset[str], named: str
) -> None:
    assert fields_beyond(body, allowed) == {named}
    with pytest.raises(ParameterNotAllowed) as refused:
        check_extra_fields([(ENTRY, PLAIN)], fields_beyond(body, allowed))
    assert refused.value.param == named
    allows = Provider("p", "http://x/v1", "", "us", extra_fields=frozenset({named}))
    check_extra_fields([(ENTRY, allows)], fields_beyond(body, allowed))


def test_client_tools_are_not_surcharged() -> None:
    chat = {"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "custom"}]}
    assert fields_beyond(chat, CHAT_FIELDS) == frozenset()
    messages = {"tools": [{"name": "f", "input_schema": {}}, {"type": "custom", "name": "g"}]}
    assert fields_beyond(messages, MESSAGES_FIELDS) == frozenset()


def test_the_catalogue_takes_a_built_in_tool_in_extra_fields(tmp_path: Path) -> None:
    catalogue = catalogue_with(tmp_path, 'extra_fields = ["tools.web_search", "container"]')
    provider = next(iter(catalogue.providers.values()))
    assert provider.extra_fields == {"tools.web_search", "container"}
