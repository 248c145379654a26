"""Revoking and rotating through the application takes effect on the very next request."""

from datetime import timedelta

import httpx

from tests.e2e.conftest import OPERATOR, USER_HELLO, LiveGateway


def post(gateway: LiveGateway, token: str) -> httpx.Response:
    return httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(token),
        json={"model": "fake/ok", "messages": USER_HELLO},
    )


def test_revoked_key_fails_on_the_very_next_request(gateway: LiveGateway) -> None:
    assert post(gateway, gateway.token).status_code == 200

    gateway.runtime.app.revoke_key(gateway.key_id, OPERATOR)
    response = post(gateway, gateway.token)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "revoked_api_key"
    assert "revoked" in error["message"] and gateway.token not in error["message"]
    assert httpx.get(gateway.api + "/models", headers=gateway.auth()).status_code == 401
    assert len(gateway.usage_rows()) == 1  # only the request before the revocation
    assert gateway.open_holds() == []


def test_rotated_key_without_grace_fails_at_once_and_its_successor_works(
    gateway: LiveGateway,
) -> None:
    successor = gateway.runtime.app.rotate_key(gateway.key_id, OPERATOR, grace=timedelta(0))

    old = post(gateway, gateway.token)
    assert old.status_code == 401
    assert old.json()["error"]["code"] == "expired_api_key"
    new = post(gateway, successor.token.value)
    assert new.status_code == 200, new.text
    row = gateway.usage_row(new.headers["x-request-id"])
    assert row.key_id == str(successor.key.id) and row.key_name == "e2e-key"


def test_rotated_key_keeps_working_during_its_grace_period(gateway: LiveGateway) -> None:
    successor = gateway.runtime.app.rotate_key(gateway.key_id, OPERATOR, grace=timedelta(hours=1))

    assert post(gateway, gateway.token).status_code == 200
    assert post(gateway, successor.token.value).status_code == 200
    key = httpx.get(gateway.api + "/key", headers=gateway.auth()).json()
    assert key["status"] == "rotating"
