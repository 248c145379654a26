"""Management keys are first-class keys: listed, issued (token once), revoked and rotated with
grace through the API, each change an event with its actor and address, and a revocation obeyed
by the next request on every process."""

from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.accounts import Account
from infrastructure.runtime import Runtime
from tests.support.cli import Cli
from tests.support.management_api import Api

MGMT_KEY_FIELDS = {
    "id",
    "name",
    "display",
    "prefix",
    "last4",
    "status",
    "created_at",
    "last_used_at",
    "revoked_at",
}


def mk_id_of(through: Api, token: str) -> str:
    listed = through.call("GET", "/api/v1/management-keys", token)
    assert listed.status_code == 200, listed.text
    shown = [k for k in listed.json()["data"] if token.endswith(k["last4"])]
    assert len(shown) == 1
    return str(shown[0]["id"])


def test_issue_list_and_use_a_second_management_key(api: Api) -> None:
    first = api.open_account("mk-issue")
    created = api.call("POST", "/api/v1/management-keys", first, json={"name": "ci deploys"})
    assert created.status_code == 201, created.text
    token, data = created.json()["key"], created.json()["data"]
    assert token.startswith("lr-mk-") and data["name"] == "ci deploys"
    assert set(data) >= MGMT_KEY_FIELDS and data["status"] == "active"
    assert data["display"] == f"{data['prefix']}…{data['last4']}"
    # The new key works at once, and the list shows both keys but never a token.
    listed = api.call("GET", "/api/v1/management-keys", token)
    assert listed.status_code == 200
    assert [k["status"] for k in listed.json()["data"]] == ["active", "active"]
    assert token not in listed.text and first not in listed.text
    assert api.call("GET", "/api/v1/keys", token).status_code == 200


def test_a_revoked_management_key_fails_on_the_next_request(api: Api) -> None:
    first = api.open_account("mk-revoke")
    second = api.call("POST", "/api/v1/management-keys", first, json={}).json()["key"]
    revoked = api.call("DELETE", f"/api/v1/management-keys/{mk_id_of(api, second)}", first)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    refused = api.call("GET", "/api/v1/keys", second)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"
    assert api.call("GET", "/api/v1/keys", first).status_code == 200


def test_the_only_active_key_cannot_revoke_itself_but_can_once_another_exists(
    api: Api,
) -> None:
    first = api.open_account("mk-self")
    own = mk_id_of(api, first)
    refused = api.call("DELETE", f"/api/v1/management-keys/{own}", first)
    assert refused.status_code == 409, refused.text
    assert api.call("GET", "/api/v1/keys", first).status_code == 200  # nothing changed
    second = api.call("POST", "/api/v1/management-keys", first, json={}).json()["key"]
    assert api.call("DELETE", f"/api/v1/management-keys/{own}", first).status_code == 200
    assert api.call("GET", "/api/v1/keys", first).status_code == 401
    assert api.call("GET", "/api/v1/keys", second).status_code == 200


def test_rotation_with_grace_keeps_the_old_key_until_the_grace_ends(api: Api) -> None:
    first = api.open_account("mk-rotate")
    own = mk_id_of(api, first)
    rotated = api.call(
        "POST", f"/api/v1/management-keys/{own}/rotate", first, json={"grace_seconds": 3600}
    )
    assert rotated.status_code == 201, rotated.text
    successor = rotated.json()["key"]
    assert successor.startswith("lr-mk-") and successor != first
    assert api.call("GET", "/api/v1/keys", first).status_code == 200  # in its grace
    listed = {
        k["id"]: k for k in api.call("GET", "/api/v1/management-keys", successor).json()["data"]
    }
    assert listed[own]["status"] == "rotating"
    # Grace 0: the successor's own rotation stops it at once.
    again = api.call(
        "POST", f"/api/v1/management-keys/{rotated.json()['data']['id']}/rotate", successor, json={}
    )
    assert again.status_code == 201
    assert api.call("GET", "/api/v1/keys", successor).status_code == 401
    assert api.call("GET", "/api/v1/keys", again.json()["key"]).status_code == 200


def test_refusals_change_nothing_and_other_accounts_keys_are_404(api: Api) -> None:
    first = api.open_account("mk-refusals")
    other = api.open_account("mk-other")
    theirs = mk_id_of(api, other)
    for method, path, body in (
        ("DELETE", f"/api/v1/management-keys/{theirs}", None),
        ("POST", f"/api/v1/management-keys/{theirs}/rotate", {}),
        ("DELETE", "/api/v1/management-keys/not-a-uuid", None),
        ("DELETE", f"/api/v1/management-keys/{UUID(int=7)}", None),
    ):
        response = api.call(method, path, first, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "management_key_not_found"
    bad = api.call("POST", "/api/v1/management-keys", first, json={"status": "active"})
    assert bad.status_code == 422
    grace = api.call(
        "POST",
        f"/api/v1/management-keys/{mk_id_of(api, first)}/rotate",
        first,
        json={"grace_seconds": "²"},
    )
    assert grace.status_code == 422
    assert api.call("GET", "/api/v1/keys", other).status_code == 200
    assert len(api.call("GET", "/api/v1/management-keys", first).json()["data"]) == 1


def test_each_action_is_an_event_with_its_actor_and_address(api: Api) -> None:
    first = api.open_account("mk-events")
    created = api.call("POST", "/api/v1/management-keys", first, json={"name": "second"}).json()
    api.call("POST", f"/api/v1/management-keys/{created['data']['id']}/rotate", first, json={})
    ledger = api.runtime.app
    account_id = ledger.find_account("mk-events").id
    events = list(ledger.events.get(account_id))
    actions = [
        e
        for e in events
        if isinstance(e, Account.ManagementKeyIssued | Account.ManagementKeyRotated)
    ][1:]  # after the account's own first key
    assert [type(e).__name__ for e in actions] == [
        "ManagementKeyIssued",
        "ManagementKeyIssued",
        "ManagementKeyRotated",
    ]
    for event in actions:
        actor: dict[str, Any] = event.actor
        assert actor["kind"] == "management_key" and actor["name"].startswith("lr-mk-")
        assert actor["address"] == "testclient"
        assert first not in str(event.__dict__)


def test_revoke_and_rotate_apply_on_the_next_request_on_both_processes(
    two_gateways: tuple[Runtime, list[str]],
) -> None:
    runtime, (url_a, url_b) = two_gateways
    first = runtime.app.open_account("mk-two", _operator(), credits=0).token.value
    with httpx.Client(timeout=30) as client:

        def keys_status(url: str, token: str) -> int:
            return client.get(
                f"{url}/keys", headers={"Authorization": f"Bearer {token}"}
            ).status_code

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for _ in range(5):
            second = client.post(f"{url_a}/management-keys", headers=as_(first), json={}).json()
            assert keys_status(url_b, second["key"]) == 200
            revoke = client.delete(
                f"{url_a}/management-keys/{second['data']['id']}", headers=as_(first)
            )
            assert revoke.status_code == 200
            assert keys_status(url_b, second["key"]) == 401
            assert keys_status(url_a, second["key"]) == 401
        listed = client.get(f"{url_b}/management-keys", headers=as_(first)).json()["data"]
        own = next(k["id"] for k in listed if k["status"] == "active")
        rotated = client.post(f"{url_b}/management-keys/{own}/rotate", headers=as_(first), json={})
        assert rotated.status_code == 201
        assert keys_status(url_a, first) == 401 and keys_status(url_b, first) == 401
        assert keys_status(url_a, rotated.json()["key"]) == 200


def _operator() -> Any:
    from domain.actor import Actor

    return Actor("operator", "test")


@pytest.fixture
def sqlite_cli(sqlite_url: str, tmp_path: Path) -> Cli:
    """The CLI on SQLite only: the use cases under it are tested on both stores above."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(sqlite_url, home)


def test_the_cli_lists_issues_rotates_and_revokes_management_keys(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    opened = cli.ok_json("accounts", "create", "mk-cli")
    first_id = opened["data"]["management_key"]["id"]
    created = cli.ok_json("accounts", "keys", "create", "mk-cli", "--name", "deploys")
    assert created["key"].startswith("lr-mk-") and created["data"]["name"] == "deploys"
    rotated = cli.ok_json("accounts", "keys", "rotate", created["data"]["id"], "--grace", "60")
    assert rotated["key"].startswith("lr-mk-") and rotated["key"] != created["key"]
    revoked = cli.ok_json("accounts", "keys", "revoke", first_id)
    assert revoked["status"] == "revoked"
    statuses = {
        k["id"]: k["status"] for k in cli.ok_json("accounts", "keys", "list", "mk-cli")["data"]
    }
    assert statuses == {
        first_id: "revoked",
        created["data"]["id"]: "rotating",
        rotated["data"]["id"]: "active",
    }
    listed = cli.ok("accounts", "keys", "list", "mk-cli")  # the table, never a token
    assert "deploys" in listed.stdout and created["key"] not in listed.stdout
    cli.fails(1, "accounts", "keys", "revoke", first_id)  # already revoked: one clear line


def test_investigate_reports_a_management_key_and_what_was_done_with_it(
    sqlite_cli: Cli, sqlite_url: str
) -> None:
    from domain.actor import Actor
    from domain.scope import Scope
    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings
    from tests.support.cli import PEPPER as CLI_PEPPER

    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": CLI_PEPPER, "LOWROUTER_DATA_DIR": str(sqlite_cli.home)},
        database_url=sqlite_url,
    )
    runtime = open_runtime(settings)
    try:
        opened = runtime.app.open_account("mk-leak", _operator())
        leaked = opened.token
        thief = Actor("management_key", leaked.display, "203.0.113.9")
        runtime.app.create_key(opened.account.id, "exfil", Scope(), thief)
        runtime.projections.catch_up()
    finally:
        runtime.close()
    report = sqlite_cli.ok_json("investigate", leaked.value, "--revoke")
    assert report["key"]["kind"] == "management" and report["revoked_now"] is True
    assert report["key"]["status"] == "revoked"
    assert [a["type"] for a in report["actions"]] == ["Created"]
    assert report["actions"][0]["actor"]["address"] == "203.0.113.9"
    table = sqlite_cli.ok("investigate", leaked.display)
    assert "CHANGES MADE WITH IT: 1" in table.stdout and "203.0.113.9" in table.stdout
    assert leaked.value not in table.stdout + table.stderr
