"""Every inference API, as a test calls it: path, body, auth and how its answer reports cost —
so one test can be parametrised over all of them (the "apis" gateway configuration)."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.conftest import LiveGateway, micro

HELLO = "Hello"


@dataclass(frozen=True)
class ApiCall:
    id: str  # the parametrisation id
    api: str  # the usage row's `api`
    path: str
    vendor: str  # "fake" (OpenAI dialect), "claude" (Anthropic dialect) or "fake/embed-"
    build: Callable[[str, bool], dict[str, Any]]  # (model, stream) -> body
    streams: bool = True
    anthropic_auth: bool = False  # x-api-key, as Anthropic's SDKs send it

    def model(self, mode: str) -> str:
        return f"{self.vendor}{mode}" if self.vendor.endswith("-") else f"{self.vendor}/{mode}"

    def body(self, mode: str = "ok", stream: bool = False) -> dict[str, Any]:
        return self.build(self.model(mode), stream)

    def headers(self, token: str) -> dict[str, str]:
        if self.anthropic_auth:
            return {"x-api-key": token, "anthropic-version": "2023-06-01"}
        return {"Authorization": f"Bearer {token}"}

    def post(
        self, gateway: LiveGateway, mode: str = "ok", stream: bool = False, token: str = ""
    ) -> httpx.Response:
        return httpx.post(
            gateway.api + self.path,
            headers=self.headers(token or gateway.token),
            json=self.body(mode, stream),
            timeout=20,
        )


def _chat(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": HELLO}],
        "max_tokens": 5,
        "stream": stream,
    }


def _completions(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "prompt": HELLO, "max_tokens": 5, "stream": stream}


def _responses(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "input": HELLO, "max_output_tokens": 5, "stream": stream}


def _embeddings(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "input": [HELLO, "world"]}


def _messages(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": HELLO}],
        "stream": stream,
    }


CALLS = [
    ApiCall("chat", "chat.completions", "/chat/completions", "fake", _chat),
    ApiCall("chat-on-anthropic", "chat.completions", "/chat/completions", "claude", _chat),
    ApiCall("completions", "completions", "/completions", "fake", _completions),
    ApiCall("responses", "responses", "/responses", "fake", _responses),
    ApiCall("embeddings", "embeddings", "/embeddings", "fake/embed-", _embeddings, streams=False),
    ApiCall("messages", "messages", "/messages", "claude", _messages, anthropic_auth=True),
    ApiCall("messages-on-openai", "messages", "/messages", "fake", _messages, anthropic_auth=True),
]
STREAMING = [call for call in CALLS if call.streams]


def events_of(text: str) -> list[dict[str, Any]]:
    """The JSON `data:` payloads of an SSE body."""
    return [
        json.loads(line[5:])
        for line in text.splitlines()
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")
    ]


def final_usage(response: httpx.Response) -> dict[str, Any]:
    """The usage block (with our cost) of an answer, streamed or not, in any API's shape."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["usage"]
    for event in reversed(events_of(response.text)):
        if isinstance(event.get("usage"), dict) and "cost" in event["usage"]:
            return event["usage"]
        inner = event.get("response")
        if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
            return inner["usage"]
    raise AssertionError(f"no usage with a cost in {response.text[:500]}")


def reported_cost(response: httpx.Response) -> int:
    return micro(final_usage(response)["cost"])


def answer_text(response: httpx.Response) -> str:
    """The generated text, whatever the API (embeddings: the number of vectors)."""
    if response.headers["content-type"].startswith("application/json"):
        data = response.json()
        if "data" in data:
            return f"{len(data['data'])} vectors"
        if "content" in data:  # Anthropic
            return "".join(b.get("text", "") for b in data["content"])
        if "output" in data:  # Responses
            return "".join(
                p.get("text", "") for item in data["output"] for p in item.get("content", [])
            )
        choice = data["choices"][0]
        return choice.get("text") or choice["message"]["content"]
    text = ""
    for event in events_of(response.text):
        delta = event.get("delta")
        if event.get("type") == "response.output_text.delta":
            text += event["delta"]
        elif isinstance(delta, dict) and delta.get("type") == "text_delta":
            text += delta["text"]
        for choice in event.get("choices") or []:
            text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return text
