"""One condition, `Gateway.lookup_trouble`, decides whether the key lookup may judge access:
the API, the dashboard and /healthz all stop on it, in every LOWROUTER_BACKGROUND mode."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.gateway import Gateway
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import BACKGROUND_CHOICES, load_settings
from projections.runner import ProjectionRunner
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "test")
FAILURE = "projection 'keys' failed on the event at position 7: RuntimeError"


class Surfaces:
    """The three surfaces that must agree, and the token of a live key."""

    def __init__(self, client: TestClient, gateway: Gateway, token: str) -> None:
        self.client, self.gateway = client, gateway
        self.headers = {"Authorization": f"Bearer {token}"}

    def statuses(self) -> tuple[int, int, int]:
        return (
            self.client.get("/api/v1/key", headers=self.headers).status_code,
            self.client.get("/dashboard/sign-in").status_code,
            self.client.get("/healthz").status_code,
        )

    def wait_for(self, wanted: tuple[int, int, int]) -> tuple[int, int, int]:
        """The statuses once they are `wanted` (the lookup thread looks at most every 0.5 s),
        or as they are after 5 s."""
        deadline = time.monotonic() + 5
        while (found := self.statuses()) != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture(params=BACKGROUND_CHOICES)
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    env = {
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        "LOWROUTER_BACKGROUND": request.param,
    }
    settings = load_settings(env, database_url=f"sqlite:///{tmp_path}/lowrouter.db")
    assert settings.background == request.param
    yield open_runtime(settings)  # closed by the app's lifespan


@pytest.fixture
def surfaces(runtime: Runtime) -> Iterator[Surfaces]:
    account = runtime.app.open_account("health", OPERATOR, credits=10**6).account
    token = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).token.value
    app = create_app(runtime, demo_catalogue("http://127.0.0.1:9/demo/v1"))
    with TestClient(app) as client:
        yield Surfaces(client, app.state.gateway, token)


def test_a_failure_recorded_by_any_process_stops_all_three_surfaces(
    runtime: Runtime, surfaces: Surfaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert surfaces.statuses() == (200, 200, 200)
    # What the background process (or any process's runner) records when the projection fails.
    monkeypatch.setattr(runtime.projections, "recorded_failure", lambda name: FAILURE)
    assert surfaces.wait_for((503, 503, 503)) == (503, 503, 503)
    assert surfaces.gateway.lookup_trouble() == FAILURE
    answer = surfaces.client.get("/api/v1/key", headers=surfaces.headers)
    assert answer.json()["error"]["code"] == "lookup_unavailable"
    assert FAILURE not in surfaces.client.get("/healthz").text  # unauthenticated: no detail
    monkeypatch.undo()  # the projection got past the event
    assert surfaces.wait_for((200, 200, 200)) == (200, 200, 200)


def test_this_processs_runner_stopping_stops_all_three_surfaces(
    surfaces: Surfaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert surfaces.statuses() == (200, 200, 200)
    monkeypatch.setattr(ProjectionRunner, "stopped_unexpectedly", property(lambda self: True))
    assert surfaces.statuses() == (503, 503, 503)  # no wait: read on every request
