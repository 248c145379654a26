"""The official SDKs against the real server: the OpenAI SDK on Responses (create and stream),
embeddings and legacy completions; the Anthropic SDK on Messages (create, stream, a tool-use
round trip) on an Anthropic provider and translated onto an OpenAI one. Each call is one usage
row with the right `api`, tokens and cost, and the account is charged exactly that."""

from typing import Any

import pytest
from anthropic import Anthropic
from openai import OpenAI

from tests.e2e.conftest import LiveGateway, StartGateway, micro
from tests.fake_upstream import TOOL_ARGUMENTS

REPLY = "Hello from the fake upstream"

# What the SDKs see does not depend on the store, and tests/e2e/test_apis.py meters every API on
# both: these run on SQLite only, to keep the suite's time.
pytestmark = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@pytest.fixture
def apis(start_gateway: StartGateway) -> LiveGateway:
    return start_gateway("apis")


def openai_sdk(gateway: LiveGateway) -> OpenAI:
    return OpenAI(base_url=gateway.api, api_key=gateway.token, max_retries=0)


def anthropic_sdk(gateway: LiveGateway) -> Anthropic:
    # The Anthropic SDK's base URL is http://HOST:PORT/api: it adds /v1/messages itself.
    return Anthropic(base_url=gateway.url + "/api", api_key=gateway.token, max_retries=0)


def cost_of(usage: Any) -> int:
    extra = usage.model_extra or {}
    return micro(extra["cost"])


def the_row(gateway: LiveGateway, api: str, tokens: tuple[int, int]) -> Any:
    [row] = gateway.usage_rows()
    assert (row.api, row.status, (row.prompt_tokens, row.completion_tokens)) == (
        api,
        "ok",
        tokens,
    )
    assert gateway.page().balance == gateway.initial_balance - row.cost
    assert gateway.open_holds() == []
    return row


# --- the OpenAI SDK ------------------------------------------------------------------------------


def test_openai_sdk_responses_create(apis: LiveGateway) -> None:
    response = openai_sdk(apis).responses.create(
        model="fake/ok", input="Hello", max_output_tokens=5
    )
    assert response.output_text == REPLY and response.model == "fake/ok"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1, 5)
    row = the_row(apis, "responses", (1, 5))
    assert cost_of(response.usage) == row.cost > 0


def test_openai_sdk_responses_stream(apis: LiveGateway) -> None:
    with openai_sdk(apis).responses.stream(
        model="fake/ok", input="Hello", max_output_tokens=5
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == REPLY == final.output_text
    assert final.usage is not None
    row = the_row(apis, "responses", (1, 5))
    assert row.streamed is True and cost_of(final.usage) == row.cost > 0


def test_openai_sdk_embeddings(apis: LiveGateway) -> None:
    result = openai_sdk(apis).embeddings.create(model="fake/embed-ok", input=["Hello", "world"])
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)
    row = the_row(apis, "embeddings", (2, 0))
    assert cost_of(result.usage) == row.cost > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_openai_sdk_legacy_completions(apis: LiveGateway, stream: bool) -> None:
    client = openai_sdk(apis)
    if stream:
        chunks = list(
            client.completions.create(model="fake/ok", prompt="Hello", max_tokens=5, stream=True)
        )
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        completion = client.completions.create(model="fake/ok", prompt="Hello", max_tokens=5)
        text, usage = completion.choices[0].text, completion.usage
    assert text == REPLY
    row = the_row(apis, "completions", (1, 5))
    assert usage is not None and cost_of(usage) == row.cost > 0


# --- the Anthropic SDK ---------------------------------------------------------------------------

ON_EACH_DIALECT = pytest.mark.parametrize(
    "model", ["claude/ok", "fake/ok"], ids=["anthropic-provider", "openai-provider-translated"]
)


@ON_EACH_DIALECT
def test_anthropic_sdk_messages_create(apis: LiveGateway, model: str) -> None:
    message = anthropic_sdk(apis).messages.create(
        model=model,
        max_tokens=5,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.model == model and message.stop_reason == "end_turn"
    row = the_row(apis, "messages", (3, 5))  # "Be brief." and "Hello": three words
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 5)
    assert cost_of(message.usage) == row.cost > 0


@ON_EACH_DIALECT
def test_anthropic_sdk_messages_stream(apis: LiveGateway, model: str) -> None:
    with anthropic_sdk(apis).messages.stream(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text, cost = streamed(stream)
        final = stream.get_final_message()
    assert text == REPLY and final.stop_reason == "end_turn"
    row = the_row(apis, "messages", (1, 5))
    assert row.streamed is True
    assert final.usage.output_tokens == 5 and cost == row.cost > 0


def streamed(stream: Any) -> tuple[str, int]:
    """The text of an Anthropic SDK stream, and the cost its `message_delta` event carried
    (the SDK's accumulated message keeps only the usage fields it knows)."""
    text, cost = "", None
    for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            cost = cost_of(event.usage)
    assert cost is not None, "no message_delta with a cost"
    return text, cost


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a place",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}


@ON_EACH_DIALECT
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_anthropic_sdk_tool_use_round_trip(apis: LiveGateway, model: str, stream: bool) -> None:
    client = anthropic_sdk(apis)
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with client.messages.stream(
            model=model, max_tokens=64, messages=question, tools=[WEATHER]
        ) as events:
            _, first_cost = streamed(events)
            first = events.get_final_message()
    else:
        first = client.messages.create(
            model=model, max_tokens=64, messages=question, tools=[WEATHER]
        )
    assert first.stop_reason == "tool_use"
    [call] = [block for block in first.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", TOOL_ARGUMENTS)

    answer = client.messages.create(
        model=model,
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
            },
        ],
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].text == REPLY

    rows = apis.usage_rows()
    assert [(r.api, r.status, r.cost_source) for r in rows] == [("messages", "ok", "reported")] * 2
    assert [r.cost for r in rows] == [
        first_cost if stream else cost_of(first.usage),
        cost_of(answer.usage),
    ]
    assert all(r.cost > 0 for r in rows)
    assert apis.page().balance == apis.initial_balance - sum(r.cost for r in rows)
    # The upstream saw the tool result, in its own dialect.
    sent = apis.upstream.bodies[-1]["messages"]
    if model.startswith("claude/"):
        assert sent[-1]["content"][0]["type"] == "tool_result"
    else:
        assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}
