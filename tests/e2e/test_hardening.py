"""Hardening seen through the running gateway: JSON depth, duplicate headers, and the rest of
issue 15's input and HTTP hygiene."""

import httpx

from tests.e2e.conftest import LiveGateway


def nested_body(depth: int) -> bytes:
    """A chat request whose tool schema nests `depth` objects deep (two JSON levels each),
    written by hand: Python's json module cannot encode it past ~500 levels."""
    schema = '{"type":"object","properties":{"p":' * depth + '"leaf"' + "}}" * depth
    tool = '{"type":"function","function":{"name":"f","parameters":' + schema + "}}"
    messages = '[{"role":"user","content":"hi"}]'
    return f'{{"model":"fake/ok","messages":{messages},"tools":[{tool}]}}'.encode()


def test_deeply_nested_json_is_a_400_not_a_500(gateway: LiveGateway) -> None:
    for depth in (20, 300, 1000):
        response = httpx.post(
            gateway.api + "/chat/completions",
            headers={**gateway.auth(), "content-type": "application/json"},
            content=nested_body(depth),
            timeout=30,
        )
        expected = 200 if depth == 20 else 400
        assert response.status_code == expected, (depth, response.text)
        if expected == 400:
            assert response.json()["error"]["code"] == "json_too_deep"


def test_a_duplicate_authorization_header_is_refused(gateway: LiveGateway) -> None:
    headers = [("Authorization", f"Bearer {gateway.token}"), ("Authorization", "Bearer other")]
    response = httpx.get(gateway.api + "/key", headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "duplicate_authorization"
    assert httpx.get(gateway.api + "/key", headers=gateway.auth(), timeout=10).status_code == 200
