"""Anthropic Messages ⇄ OpenAI Chat Completions: requests, answers and stream events.

Pure functions over JSON-like dicts, so any chat model serves Anthropic clients (Claude Code) and
Anthropic models serve chat clients. Covered: text, system prompts, multi-turn conversations,
images, tool use (`tool_use`/`tool_result` ⇄ `tool_calls`/`tool` messages), stop reasons, and
streaming events. Fields with no counterpart (Anthropic's `top_k`, a tool result's `is_error`
beyond a text marker, chat's `n`, `logprobs`) are dropped.
"""

import json
from collections.abc import Iterator
from typing import Any

# Anthropic stop_reason ⇄ chat finish_reason
_TO_FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: object) -> str | None:
    return _TO_FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else None


def stop_reason(finish: object) -> str | None:
    return _TO_STOP.get(finish, "end_turn") if isinstance(finish, str) else None


def tool_arguments(value: object) -> str:
    """A tool_use `input` as chat's JSON-string `arguments`."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def tool_input(arguments: object) -> Any:
    """Chat's `arguments` string as a tool_use `input` (an object; `{}` if it is not JSON)."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return {"arguments": arguments}


# --- requests: Messages → Chat -------------------------------------------------------------------


def messages_to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as a chat completions request (same model id)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        messages.append({"role": "system", "content": _text_parts(system)})
    for message in body.get("messages") or []:
        messages.extend(_chat_messages(message))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if isinstance(body.get("tools"), list):
        out["tools"] = [_chat_tool(tool) for tool in body["tools"] if isinstance(tool, dict)]
    choice = _chat_tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _chat_messages(message: Any) -> Iterator[dict[str, Any]]:
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str):
        yield {"role": role, "content": content}
        return
    blocks = [b for b in content or [] if isinstance(b, dict)]
    if role == "assistant":
        parts = [_chat_part(b) for b in blocks if b.get("type") in ("text", "image")]
        calls = [
            {
                "id": b.get("id"),
                "type": "function",
                "function": {"name": b.get("name"), "arguments": tool_arguments(b.get("input"))},
            }
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        out: dict[str, Any] = {"role": "assistant", "content": parts or None}
        if calls:
            out["tool_calls"] = calls
        yield out
        return
    for block in blocks:
        if block.get("type") == "tool_result":
            yield {
                "role": "tool",
                "tool_call_id": block.get("tool_use_id"),
                "content": _tool_result_content(block),
            }
    parts = [_chat_part(b) for b in blocks if b.get("type") in ("text", "image")]
    if parts:
        yield {"role": role, "content": parts}


def _tool_result_content(block: dict[str, Any]) -> Any:
    content = block.get("content")
    if isinstance(content, list):
        content = _text_parts(content)
    elif content is None:
        content = ""
    if block.get("is_error") and isinstance(content, str):
        content = f"Error: {content}"
    return content


def _text_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": b.get("text", "")}
        for b in blocks
        if isinstance(b, dict) and b.get("type", "text") == "text"
    ]


def _chat_part(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    else:
        url = source.get("url", "")
    return {"type": "image_url", "image_url": {"url": url}}


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.get("name")}
    if "description" in tool:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object"}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = str(choice.get("type"))
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(kind)


# --- requests: Chat → Messages -------------------------------------------------------------------


def chat_to_messages_request(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """A chat completions request as an Anthropic Messages request (Anthropic requires
    `max_tokens`: the client's, else `default_max_tokens`)."""
    system: list[dict[str, Any]] = []
    system_text: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                system_text.append(content)
                system.append({"type": "text", "text": content})
            else:
                system.extend(_text_parts(content or []))
            continue
        _append_turn(turns, *_anthropic_turn(message))
    out: dict[str, Any] = {"model": body.get("model")}
    if system:
        only_strings = len(system_text) == len(system) == 1
        out["system"] = system_text[0] if only_strings else system
    out["messages"] = turns
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    out["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("tools"), list):
        out["tools"] = [_anthropic_tool(t) for t in body["tools"] if isinstance(t, dict)]
    choice = _anthropic_tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _anthropic_turn(message: dict[str, Any]) -> tuple[str, Any]:
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id"),
            "content": content if isinstance(content, str) else _text_parts(content or []),
        }
        return "user", [result]
    if role == "assistant":
        blocks = _anthropic_blocks(content)
        calls = message.get("tool_calls") or []
        if not calls and isinstance(content, str):
            return "assistant", content
        for call in calls:
            function = call.get("function") or {}
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": tool_input(function.get("arguments")),
                }
            )
        return "assistant", blocks
    if isinstance(content, str):
        return "user", content
    return "user", _anthropic_blocks(content)


def _anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(str((part.get("image_url") or {}).get("url", ""))))
    return blocks


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _append_turn(turns: list[dict[str, Any]], role: str, content: Any) -> None:
    """Anthropic turns alternate: consecutive turns of one role become one turn of blocks."""
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        turns[-1]["content"] = _as_blocks(previous) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out: dict[str, Any] = {"name": function.get("name")}
    if "description" in function:
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object"}
    return out


def _anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(
        choice
    )


# --- answers ---------------------------------------------------------------------------------


def chat_to_messages_answer(data: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (first choice) as an Anthropic message, without usage."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    return {
        "id": data.get("id"),
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
    }


def messages_to_chat_answer(data: dict[str, Any], created: int) -> dict[str, Any]:
    """An Anthropic message as a chat completion, without usage."""
    text = "".join(b.get("text", "") for b in data.get("content") or [] if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": tool_arguments(b.get("input"))},
        }
        for b in data.get("content") or []
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": data.get("model"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(data["stop_reason"])}
        ],
    }


def produced_by_message(data: dict[str, Any]) -> int:
    """Characters of an Anthropic message's content: text, thinking, tool names and inputs."""
    total = 0
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        for name in ("text", "thinking", "name"):
            if isinstance(block.get(name), str):
                total += len(block[name])
        if block.get("type") == "tool_use":
            total += len(tool_arguments(block.get("input")))
    return total


# --- streams ---------------------------------------------------------------------------------


class ChatToMessagesStream:
    """Chat completion chunks in, Anthropic stream events out (message_start, content blocks,
    and — at `close` — content_block_stop, message_delta with usage, message_stop)."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id, self.model = message_id, model
        self.started = False
        self.block = -1  # index of the last content block opened
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", chat tool index)
        self.tool_blocks: dict[int, int] = {}  # chat tool-call index -> block index
        self.stop_reason: str | None = None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start()
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != ("text", -1):
                    events += self._open({"type": "text", "text": ""}, ("text", -1))
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self.tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    events += self._open(block, ("tool", index))
                    self.tool_blocks[index] = self.block
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[index],
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }
                    )
            if choice.get("finish_reason"):
                self.stop_reason = stop_reason(choice["finish_reason"])
        return events

    def close(self, usage: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start() + self._close_block()
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def _start(self) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _open(self, block: dict[str, Any], which: tuple[str, int]) -> list[dict[str, Any]]:
        events = self._close_block()
        self.block += 1
        self.open = which
        events.append({"type": "content_block_start", "index": self.block, "content_block": block})
        return events

    def _close_block(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.block}]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.block, "delta": delta}


class MessagesToChatStream:
    """Anthropic stream events in, chat completion chunks out (without the usage chunk)."""

    def __init__(self, chunk_id: str, model: str, created: int) -> None:
        self.id, self.model, self.created = chunk_id, model, created
        self.tools: dict[int, int] = {}  # block index -> chat tool-call index
        self.finish: str | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or self.id
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[event.get("index", 0)] = len(self.tools)
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tools.get(event.get("index", 0), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish = finish_reason(reason)
                return [self._chunk({}, self.finish)]
        return []

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
