"""No caching delay: a revoke, a narrower scope or an ended rotation made in one process is
obeyed by the very next request on every gateway process (directly and through PgBouncer in
transaction mode: `route`, tests/conftest.py)."""

import threading
from collections.abc import Iterator

import httpx
import pytest

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.runtime import Runtime

OPERATOR = Actor("operator", "test")
BODY = {"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hi"}]}


def complete(url: str, token: str, client: httpx.Client, **changes: object) -> int:
    body = {**BODY, **changes}
    response = client.post(
        url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


@pytest.fixture
def background_streams(two_gateways: tuple[Runtime, list[str]]) -> Iterator[list[int]]:
    """Other keys keep streaming on both gateways while access changes happen."""
    runtime, urls = two_gateways
    account = runtime.app.open_account("background", OPERATOR, credits=10**9).account
    token = runtime.app.create_key(account.id, "streamer", Scope(), OPERATOR).token.value
    stop = threading.Event()
    statuses: list[int] = []

    def stream_forever(url: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    with client.stream(
                        "POST",
                        url + "/chat/completions",
                        json={**BODY, "stream": True},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response:
                        lines = [line for line in response.iter_lines() if line]
                        ok = response.status_code == 200 and lines[-1] == "data: [DONE]"
                        statuses.append(200 if ok else response.status_code or -1)
                except httpx.HTTPError:
                    statuses.append(-1)  # a broken stream is a failure, not a crash

    threads = [threading.Thread(target=stream_forever, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    yield statuses
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


def test_fifty_revocations_each_fail_the_very_next_request_on_both_processes(
    two_gateways: tuple[Runtime, list[str]],
    background_streams: list[int],
) -> None:
    runtime, (url_a, url_b) = two_gateways
    opened = runtime.app.open_account("revoker", OPERATOR, credits=10**9)
    account, management_token = opened.account, opened.token.value
    successes_after_revoke = 0
    with httpx.Client(timeout=30) as client:
        for i in range(50):
            issued = runtime.app.create_key(account.id, f"key-{i}", Scope(), OPERATOR)
            token = issued.token.value
            # A new key works on the first request after it was created, on either process.
            assert complete(url_b if i % 2 else url_a, token, client) == 200
            if i % 2:  # as the operator CLI does it: another process on the same database
                runtime.app.revoke_key(issued.key.id, OPERATOR)
            else:  # through gateway process A's management API
                revoked = client.delete(
                    f"{url_a}/keys/{issued.key.id}",
                    headers={"Authorization": f"Bearer {management_token}"},
                )
                assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
            statuses = [complete(url_b, token, client), complete(url_a, token, client)]
            successes_after_revoke += sum(1 for s in statuses if s == 200)
            assert statuses == [401, 401]
    assert successes_after_revoke == 0
    assert background_streams and set(background_streams) == {200}


def test_narrower_model_scope_applies_to_the_next_request_on_the_other_process(
    two_gateways: tuple[Runtime, list[str]],
) -> None:
    runtime, (url_a, url_b) = two_gateways
    account = runtime.app.open_account("scoper", OPERATOR, credits=10**9).account
    issued = runtime.app.create_key(account.id, "narrowing", Scope(), OPERATOR)
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            runtime.app.scope_key(issued.key.id, Scope(), OPERATOR)
            assert complete(url_a, issued.token.value, client) == 200
            runtime.app.scope_key(issued.key.id, Scope(models=("other/model",)), OPERATOR)
            assert complete(url_b, issued.token.value, client) == 403
            assert complete(url_a, issued.token.value, client) == 403


def test_rotation_whose_grace_ended_fails_on_both_processes_and_successor_works(
    two_gateways: tuple[Runtime, list[str]],
) -> None:
    runtime, (url_a, url_b) = two_gateways
    account = runtime.app.open_account("rotator", OPERATOR, credits=10**9).account
    issued = runtime.app.create_key(account.id, "rotating", Scope(), OPERATOR)
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            assert complete(url_a, issued.token.value, client) == 200
            successor = runtime.app.rotate_key(issued.key.id, OPERATOR)  # grace 0
            assert complete(url_b, issued.token.value, client) == 401
            assert complete(url_a, issued.token.value, client) == 401
            assert complete(url_b, successor.token.value, client) == 200
            issued = successor
