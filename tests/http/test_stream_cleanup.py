"""A streamed answer's cleanup runs whether or not its body generator started: closing a
generator that never started runs none of its `finally` (nothing settled, the upstream left
open), so the response runs the cleanup itself."""

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from infrastructure.http.streaming import DeadlineStreamingResponse

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def streamed(done: list[str], deadline_in: float) -> DeadlineStreamingResponse:
    async def relay() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
        finally:
            done.append("relay finally")

    async def cleanup() -> None:
        done.append("cleanup")

    loop = asyncio.get_running_loop()
    return DeadlineStreamingResponse(
        relay(), loop.time() + deadline_in, media_type="text/event-stream", cleanup=cleanup
    )


@pytest.mark.anyio
async def test_a_client_gone_before_the_response_start_still_gets_the_cleanup() -> None:
    done: list[str] = []
    response = streamed(done, deadline_in=900)

    async def receive() -> dict[str, Any]:  # the client hung up while the upstream thought
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a real server's send may yield: cancelled here

    await response(SCOPE, receive, send)
    assert done == ["cleanup"]  # the relay never started: only the cleanup ran


@pytest.mark.anyio
async def test_a_response_start_past_the_deadline_still_gets_the_cleanup() -> None:
    done: list[str] = []
    response = streamed(done, deadline_in=0.05)
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        await asyncio.sleep(10)  # a client that reads nothing

    await asyncio.wait_for(response(SCOPE, receive, send), 5)
    assert sent == ["http.response.start"] and done == ["cleanup"]


@pytest.mark.anyio
async def test_a_stream_that_ran_has_its_relay_finally_then_the_cleanup() -> None:
    done: list[str] = []
    response = streamed(done, deadline_in=900)
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await asyncio.wait_for(response(SCOPE, receive, send), 5)
    assert sent == ["http.response.start", "http.response.body", "http.response.body"]
    assert done == ["relay finally", "cleanup"]


def test_a_stream_whose_client_left_before_its_start_is_settled_as_a_hang_up(
    tmp_path: Any,
) -> None:
    """Through the gateway: the client hangs up while the response start is being sent, so the
    relay never starts; the call is still settled (client_closed), not left to the reconciler."""
    import orjson
    from starlette.testclient import TestClient

    from domain.actor import Actor
    from domain.scope import Scope
    from infrastructure.catalogue import demo_catalogue
    from infrastructure.http.app import create_app
    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings
    from tests.support.stores import PEPPER

    env = {
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        "LOWROUTER_BACKGROUND": "inline",
    }
    runtime = open_runtime(load_settings(env, database_url=f"sqlite:///{tmp_path}/lr.db"))
    operator = Actor("operator", "stream-cleanup")
    account = runtime.app.open_account("a", operator, credits=10**9).account
    token = runtime.app.create_key(account.id, "k", Scope(), operator).token.value
    app = create_app(runtime, demo_catalogue())
    body = orjson.dumps(
        {"model": "lowrouter/echo", "stream": True, "max_tokens": 1000,
         "messages": [{"role": "user", "content": "hi"}]}
    )  # fmt: skip
    path = "/api/v1/chat/completions"
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json"),
                    (b"authorization", f"Bearer {token}".encode()),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5555), "server": ("t", 80), "state": {},
    }  # fmt: skip

    async def hung_up_client() -> list[str]:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await asyncio.sleep(0.05)  # the disconnect is seen first
            sent.append(message["type"])

        await app(scope, receive, send)
        return sent

    try:
        with TestClient(app) as client:
            assert client.portal.call(hung_up_client) == []
            view = runtime.spend.view(account.id).result(5)
        assert view.held == 0 and view.spent_today > 0  # settled, charged as a hang-up
    finally:
        runtime.close()
