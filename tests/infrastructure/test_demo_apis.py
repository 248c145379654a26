"""The offline quick start: with no configuration, the built-in demo answers every API —
chat, legacy completions, Responses, embeddings and Anthropic Messages (translated onto the
demo's chat model) — streaming and not, each metered as one usage row."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from projections.schema import usage
from tests.e2e.apis import answer_text, reported_cost
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "demo-tests")
HELLO = [{"role": "user", "content": "hello demo"}]
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat.completions", "/chat/completions", {"model": "lowrouter/echo", "messages": HELLO}),
    ("completions", "/completions", {"model": "lowrouter/echo", "prompt": "hello demo"}),
    ("responses", "/responses", {"model": "lowrouter/echo", "input": "hello demo"}),
    (
        "messages",
        "/messages",
        {"model": "lowrouter/echo", "max_tokens": 20, "messages": HELLO},
    ),
]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, str]]:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    runtime = open_runtime(settings)
    app = create_app(runtime, demo_catalogue(), run_background=False)  # the demo in-process
    opened = runtime.app.open_account("demo", OPERATOR, 10_000_000)
    token = runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR).token.value
    with TestClient(app, base_url="http://gateway.test") as client:
        yield client, runtime, token


def rows(runtime: Runtime, count: int) -> list[Any]:
    """The usage rows, once there are `count`: a settlement lands just after its answer."""
    deadline = time.monotonic() + 10
    while True:
        runtime.projections.catch_up()
        with runtime.engine.connect() as conn:
            found = list(conn.execute(select(usage).order_by(usage.c.position)).all())
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_demo_answers_every_api_offline(
    demo: tuple[TestClient, Runtime, str], stream: bool
) -> None:
    client, runtime, token = demo
    for count, (api, path, body) in enumerate(CALLS, start=1):
        response = client.post(
            "/api/v1" + path,
            json={**body, "stream": stream},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, (path, response.text)
        assert answer_text(response) == "Echo: hello demo", path
        row = rows(runtime, count)[-1]
        assert (row.api, row.status, row.cost_source) == (api, "ok", "reported")
        assert reported_cost(response) == row.cost > 0
    vectors = client.post(
        "/api/v1/embeddings",
        json={"model": "lowrouter/echo-embedding", "input": ["hello", "demo"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert vectors.status_code == 200, vectors.text
    assert [len(item["embedding"]) for item in vectors.json()["data"]] == [8, 8]
    every = rows(runtime, len(CALLS) + 1)
    assert every[-1].api == "embeddings" and len(every) == len(CALLS) + 1
