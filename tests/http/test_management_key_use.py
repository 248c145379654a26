"""A management key's `last_used_at` (issue 15): set when it is used, without an event per
request and at most one write a minute per key and process."""

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from infrastructure.catalogue import DEMO_BASE_URL
from infrastructure.key_uses import key_uses
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from tests.support.management_api import Api, build_app


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    runtime = open_runtime(settings)
    with TestClient(build_app(runtime, DEMO_BASE_URL)) as client:
        yield Api(client, runtime)


def listed(api: Api, mk: str) -> list[dict[str, object]]:
    response = api.call("GET", "/api/v1/management-keys", mk)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def test_last_used_at_is_set_by_use_and_written_once_a_minute(api: Api) -> None:
    mk = api.open_account("acme")
    head = api.runtime.app.recorder.max_notification_id()
    deadline = time.monotonic() + 10
    while not (rows := [r for r in listed(api, mk) if r["last_used_at"]]):
        assert time.monotonic() < deadline, "last_used_at was never set"
        time.sleep(0.02)
    [row] = rows
    for _ in range(5):
        assert api.call("GET", "/api/v1/keys", mk).status_code == 200
    with api.runtime.engine.connect() as conn:
        [(key_id, _)] = conn.execute(key_uses.select()).all()
    assert key_id == row["id"]
    assert [r["last_used_at"] for r in listed(api, mk)] == [row["last_used_at"]]  # one write
    assert api.runtime.app.recorder.max_notification_id() == head  # no event for a use
