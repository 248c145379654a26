"""Messages ⇄ Chat translation: requests and answers round-trip (Hypothesis), stop reasons and
tool use map both ways, and a streamed translation gives the same events however the upstream's
bytes are split, and the same message as the non-streamed translation."""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from infrastructure.dialects.sse import SseParser
from infrastructure.dialects.translation import (
    ChatToMessagesStream,
    MessagesToChatStream,
    chat_to_messages_answer,
    chat_to_messages_request,
    messages_to_chat_answer,
    messages_to_chat_request,
    tool_arguments,
)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
name = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_]{4,12}", fullmatch=True)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(name, inner, max_size=3),
    max_leaves=6,
)
tool_input = st.dictionaries(name, json_value, max_size=3)
text_block = st.builds(lambda t: {"type": "text", "text": t}, text)
tool_use = st.builds(
    lambda i, n, x: {"type": "tool_use", "id": i, "name": n, "input": x}, ids, name, tool_input
)
tool_result = st.builds(
    lambda i, c: {"type": "tool_result", "tool_use_id": i, "content": c},
    ids,
    text | st.lists(text_block, min_size=1, max_size=2),
)


# In the normal form the translation keeps: user turns put tool results before their text,
# assistant turns put text before their tool calls, and roles alternate.
user_blocks = (
    st.tuples(st.lists(tool_result, max_size=2), st.lists(text_block, max_size=2))
    .filter(lambda pair: pair[0] or pair[1])
    .map(lambda pair: pair[0] + pair[1])
)
assistant_blocks = (
    st.tuples(st.lists(text_block, max_size=2), st.lists(tool_use, max_size=2))
    .filter(lambda pair: pair[0] or pair[1])
    .map(lambda pair: pair[0] + pair[1])
)
user_turn = st.builds(lambda c: {"role": "user", "content": c}, text | user_blocks)
assistant_turn = st.builds(lambda c: {"role": "assistant", "content": c}, text | assistant_blocks)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    turns = draw(st.integers(1, 5))
    return [draw(user_turn if i % 2 == 0 else assistant_turn) for i in range(turns)]


tools = st.lists(
    st.builds(
        lambda n, d, s: {"name": n, "description": d, "input_schema": s},
        name,
        text,
        st.just({"type": "object", "properties": {"q": {"type": "string"}}}),
    ),
    min_size=1,
    max_size=2,
    unique_by=lambda t: t["name"],
)
tool_choice = st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]) | st.builds(
    lambda n: {"type": "tool", "name": n}, name
)


@st.composite
def messages_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "vendor/model"}
    system = draw(st.none() | text | st.lists(text_block, min_size=1, max_size=2))
    if system:  # an empty system string is no system prompt
        body["system"] = system
    body["messages"] = draw(conversations())
    body["max_tokens"] = draw(st.integers(1, 10_000))
    for field, strategy in (
        ("temperature", st.floats(0, 1)),
        ("stop_sequences", st.lists(name, min_size=1, max_size=2)),
        ("tools", tools),
        ("tool_choice", tool_choice),
        ("stream", st.booleans()),
    ):
        if draw(st.booleans()):
            body[field] = draw(strategy)
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(ids)}
    return body


@settings(max_examples=100)
@given(messages_requests())
def test_a_messages_request_survives_the_trip_through_chat(body: dict[str, Any]) -> None:
    chat = messages_to_chat_request(body)
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in chat["messages"])
    assert chat_to_messages_request(chat, default_max_tokens=1) == body


def test_chat_tool_calls_and_results_become_tool_use_and_tool_result() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        "tool_choice": "required",
        "stop": "END",
    }
    translated = chat_to_messages_request(chat, default_max_tokens=4096)
    assert translated["system"] == "be brief"
    assert translated["max_tokens"] == 4096  # Anthropic requires it
    assert translated["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert translated["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert translated["tool_choice"] == {"type": "any"}
    assert translated["stop_sequences"] == ["END"]


# --- answers -----------------------------------------------------------------------------------

finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter"])
chat_tool_call = st.builds(
    lambda i, n, x: {
        "id": i,
        "type": "function",
        "function": {"name": n, "arguments": tool_arguments(x)},
    },
    ids,
    name,
    tool_input,
)


@st.composite
def chat_answers(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | text.filter(bool))}
    calls = draw(st.lists(chat_tool_call, max_size=2))
    if calls:
        message["tool_calls"] = calls
    return {
        "id": draw(ids),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "vendor/model",
        "choices": [{"index": 0, "message": message, "finish_reason": draw(finish)}],
    }


@given(chat_answers())
def test_a_chat_answer_survives_the_trip_through_messages(answer: dict[str, Any]) -> None:
    message = chat_to_messages_answer(answer)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert messages_to_chat_answer(message, created=answer["created"]) == answer


@given(chat_answers())
def test_a_messages_answer_survives_the_trip_through_chat(answer: dict[str, Any]) -> None:
    message = chat_to_messages_answer(answer)
    back = messages_to_chat_answer(message, created=0)
    assert chat_to_messages_answer(back) == message


def test_stop_reasons_map_both_ways() -> None:
    pairs = [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")]
    for stop, chat_finish in pairs:
        message = {"id": "m", "model": "x", "content": [], "stop_reason": stop}
        chat = messages_to_chat_answer(message, created=0)
        assert chat["choices"][0]["finish_reason"] == chat_finish
        assert chat_to_messages_answer(chat)["stop_reason"] == stop


# --- streams -----------------------------------------------------------------------------------


def chat_stream_of(answer: dict[str, Any]) -> bytes:
    """How an OpenAI upstream streams `answer`: role, text in pieces, tool calls with their
    arguments in two pieces, the finish reason, a usage chunk, [DONE]."""
    message = answer["choices"][0]["message"]
    envelope = {k: answer[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return b"data: " + json.dumps(envelope | {"choices": [choice]}).encode() + b"\r\n\r\n"

    out = chunk({"role": "assistant", "content": ""})
    content = message.get("content") or ""
    for i in range(0, len(content), 3):
        out += chunk({"content": content[i : i + 3]})
    for index, call in enumerate(message.get("tool_calls") or []):
        start = {"index": index, "id": call["id"], "type": "function"}
        start["function"] = {"name": call["function"]["name"], "arguments": ""}
        out += chunk({"tool_calls": [start]})
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            out += chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    out += chunk({}, answer["choices"][0]["finish_reason"])
    out += b"data: " + json.dumps(envelope | {"choices": [], "usage": {}}).encode() + b"\n\n"
    return out + b"data: [DONE]\n\n"


def translate_chat_stream(raw: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    parser, stream = SseParser(), ChatToMessagesStream("msg_1", "vendor/model")
    events: list[dict[str, Any]] = []
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    for piece in pieces:
        for payload in parser.feed(piece):
            events += stream.feed(json.loads(payload))
    for payload in parser.end():
        events += stream.feed(json.loads(payload))
    return events + stream.close({"output_tokens": 1})


def accumulate(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What Anthropic's SDK builds from a stream of events."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in events:
        if event["type"] == "message_start":
            message = dict(event["message"]) | {"content": []}
        elif event["type"] == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif event["type"] == "content_block_stop" and event["index"] in partial:
            message["content"][event["index"]]["input"] = json.loads(partial[event["index"]])
        elif event["type"] == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
    return message


@settings(max_examples=80)
@given(chat_answers(), st.data())
def test_a_streamed_translation_is_the_same_however_the_bytes_are_split(
    answer: dict[str, Any], data: st.DataObject
) -> None:
    raw = chat_stream_of(answer)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=12))))
    split = translate_chat_stream(raw, cuts)
    assert split == translate_chat_stream(raw, [])
    streamed = accumulate(split)
    expected = chat_to_messages_answer(answer)
    for field in ("content", "stop_reason"):
        assert streamed[field] == expected[field]
    assert split[-1] == {"type": "message_stop"}


@given(chat_answers())
def test_an_anthropic_stream_translates_back_to_the_chat_answer(answer: dict[str, Any]) -> None:
    events = translate_chat_stream(chat_stream_of(answer), [])
    stream = MessagesToChatStream("chatcmpl-1", "vendor/model", 0)
    chunks = [chunk for event in events for chunk in stream.feed(event)]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            known = calls.setdefault(call["index"], {"id": call.get("id"), "arguments": ""})
            known["name"] = call.get("function", {}).get("name") or known.get("name")
            known["arguments"] += call["function"].get("arguments") or ""
    message = answer["choices"][0]["message"]
    assert content == (message.get("content") or "")
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or []
    ]
    reason = answer["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"][0]["finish_reason"] == reason
