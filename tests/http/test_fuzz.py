"""A bounded schemathesis run over every operation of the OpenAPI document: for valid and invalid
values alike (path, query, body), the gateway never answers 5xx. Deterministic (derandomized),
a dozen examples per operation and mode: a few hundred requests in all."""

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.openapi import DOCUMENT, MANAGEMENT
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.support.stores import PEPPER

EXAMPLES = 12
# A 5xx that is the configured answer, not a fault: secret scanning without GitHub's keys file.
DELIBERATE = {"secret_scanning_not_configured"}
OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_dict(DOCUMENT).get_all_operations()
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("fuzz")
    settings_ = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(directory)},
        database_url=f"sqlite:///{directory}/lowrouter.db",
    )
    runtime = open_runtime(settings_)
    operator = Actor("operator", "cli:fuzz")
    opened = runtime.app.open_account("fuzz", operator, 10**9)
    key = runtime.app.create_key(opened.account.id, "fuzzed", Scope(), operator)
    tokens = {"management": opened.token.value, "inference": key.token.value}
    with TestClient(create_app(runtime, demo_catalogue()), raise_server_exceptions=False) as client:
        yield client, tokens


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_no_operation_answers_a_server_error(
    served: tuple[TestClient, dict[str, str]], operation: Any, mode: GenerationMode
) -> None:
    client, tokens = served
    security = operation.definition.raw.get("security") or [{}]
    token = tokens["management" if MANAGEMENT in security[0] else "inference"]
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
        kwargs.pop("cookies", None)
        response = client.request(**kwargs)
        code = response.json().get("error", {}).get("code") if response.status_code >= 500 else None
        assert response.status_code < 500 or code in DELIBERATE, (
            f"{case.method} {kwargs['url']} {kwargs.get('json', kwargs.get('content'))!r} -> "
            f"{response.status_code} {response.text[:300]}"
        )

    run()


def test_the_inputs_that_gave_500s_are_refused_with_4xx(
    served: tuple[TestClient, dict[str, str]],
) -> None:
    import base64

    client, tokens = served
    manage = {"Authorization": f"Bearer {tokens['management']}"}
    overflow = base64.urlsafe_b64encode(b"p:" + b"9" * 40).decode().rstrip("=")
    for query in (
        {"limit": "²"},
        {"limit": "9" * 5000},
        {"cursor": overflow},
        {"cursor": base64.urlsafe_b64encode("p:²".encode()).decode()},
    ):
        response = client.get("/api/v1/usage", params=query, headers=manage)
        assert response.status_code == 422, (query, response.text)
    chat = {"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hi"}]}
    for options in ("yes", 1, ["include_usage"]):
        response = client.post(
            "/api/v1/chat/completions",
            json={**chat, "stream": True, "stream_options": options},
            headers={"Authorization": f"Bearer {tokens['inference']}"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "stream_options"


def test_no_redirect_is_built_from_the_host_header(
    served: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = served
    for path in ("/api/v1/keys/", "/api/v1/models/", "/dashboard"):
        response = client.get(
            path,
            headers={"Host": "evil.example", "Authorization": f"Bearer {tokens['management']}"},
            follow_redirects=False,
        )
        assert "evil.example" not in response.headers.get("location", ""), (path, response)
    assert client.get("/api/v1/keys/", follow_redirects=False).status_code == 404
