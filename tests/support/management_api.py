"""A client of the management API that records every response (to prove no token leaks after
its creation), the `api` fixture serving it, and the checks on its error bodies."""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.money import parse_credits
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings

OPERATOR = Actor("operator", "cli:test")
CHAT = {"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class Seen:
    """Every response the API gave, and every token it issued, for the no-token-leak check."""

    responses: list[tuple[str, str]] = field(default_factory=list)  # (what, text)
    tokens: dict[str, int] = field(default_factory=dict)  # token -> index of its issuing response

    def check_no_token_leaked(self) -> None:
        for token, issued_at in self.tokens.items():
            for index, (what, text) in enumerate(self.responses):
                if index != issued_at:
                    assert token not in text, f"token leaked in response {index}: {what}"


@dataclass
class Api:
    """A client of one app, tracking responses; `as_(token)` picks the bearer."""

    client: Any  # starlette TestClient or httpx.Client
    runtime: Runtime
    seen: Seen = field(default_factory=Seen)

    def call(
        self, method: str, path: str, token: str | None, **kwargs: Any
    ) -> Any:  # -> httpx.Response
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, path, headers=headers, **kwargs)
        self.seen.responses.append((f"{method} {path} -> {response.status_code}", response.text))
        if response.status_code == 201 and "key" in response.json():
            self.seen.tokens[response.json()["key"]] = len(self.seen.responses) - 1
        return response

    def open_account(self, name: str, credits: str = "100") -> str:
        """A new account; returns its management key."""
        opened = self.runtime.app.open_account(name, OPERATOR, parse_credits(credits))
        return opened.token.value

    def create_key(self, mk: str, **body: Any) -> tuple[str, dict[str, Any]]:
        response = self.call("POST", "/api/v1/keys", mk, json={"name": "k", **body})
        assert response.status_code == 201, response.text
        return response.json()["key"], response.json()["data"]


def build_app(runtime: Runtime, demo_base_url: str) -> Any:
    """The app without its background threads (projections, reconciler, chain, webhooks): the
    API's reads catch up their own read models, and starting and stopping four threads per test
    was a sixth of these tests' CPU."""
    return create_app(runtime, demo_catalogue(demo_base_url), run_background=False)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    """The management API's client on the parametrised store (tests/conftest.py registers it)."""
    # These tests make many deliberate 401s from one address: the throttle is tested elsewhere.
    runtime = open_runtime(replace(settings, auth_failure_burst=0))
    app = build_app(runtime, "http://127.0.0.1:9/demo/v1")  # no completions in these tests
    with TestClient(app) as client:
        api = Api(client, runtime)
        yield api
    api.seen.check_no_token_leaked()


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
