"""The management API (API.md, Management) over HTTP, on SQLite and PostgreSQL: every route, every
refusal, and that no response after a key's creation ever contains its token."""

from typing import Any
from uuid import UUID, uuid4

import pytest

from application import management_keys
from domain.tokens import TokenKind, generate_token, hash_token, parse_token
from tests.support.management_api import (
    OPERATOR,
    Api,
    assert_error,
    error_of,
)

# Exactly the fields API.md lists for KEY; the implementation may add more.
KEY_FIELDS = {
    "id",
    "name",
    "display",
    "prefix",
    "last4",
    "status",
    "models",
    "region",
    "daily_limit",
    "created_at",
    "last_used_at",
    "revoked_at",
    "predecessor_id",
    "successor_id",
    "spent_today",
}


# --- create, read -----------------------------------------------------------------------------


def test_create_returns_the_token_once_and_the_key_works_at_once(api: Api) -> None:
    mk = api.open_account("acme")
    body = {"name": "prod", "models": ["lowrouter/echo"], "region": "local", "daily_limit": "2.5"}
    response = api.call("POST", "/api/v1/keys", mk, json=body)
    assert response.status_code == 201, response.text
    token, key = response.json()["key"], response.json()["data"]
    parsed = parse_token(token)
    assert parsed.kind is TokenKind.INFERENCE
    assert set(key) >= KEY_FIELDS
    assert key["name"] == "prod"
    assert key["status"] == "active"
    assert key["models"] == ["lowrouter/echo"]
    assert key["region"] == "local"
    assert key["daily_limit"] == "2.500000"
    assert key["spent_today"] == "0.000000"
    assert key["last_used_at"] is None and key["revoked_at"] is None
    assert key["display"] == parsed.display == f"{key['prefix']}…{key['last4']}"
    assert key["created_at"].endswith("Z")
    # the very first request with the new key is accepted
    this = api.call("GET", "/api/v1/key", token)
    assert this.status_code == 200, this.text
    assert this.json()["id"] == key["id"]


@pytest.mark.parametrize(("given", "shown"), [(3, "3.000000"), (0.25, "0.250000"), (None, None)])
def test_daily_limit_as_number_string_or_null(api: Api, given: Any, shown: str | None) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk, daily_limit=given)
    assert key["daily_limit"] == shown
    _, key = api.create_key(mk)
    assert key["daily_limit"] is None and key["models"] is None and key["region"] is None


def test_list_and_get_show_every_key_of_the_account_and_never_a_token(api: Api) -> None:
    mk = api.open_account("acme")
    _, first = api.create_key(mk, name="one")
    _, second = api.create_key(mk, name="two")
    listed = api.call("GET", "/api/v1/keys", mk)
    assert listed.status_code == 200
    data = listed.json()["data"]
    assert [k["id"] for k in data] == [first["id"], second["id"]]
    assert all(set(k) >= KEY_FIELDS for k in data)
    assert all("token" not in k and "key" not in k and "token_hash" not in k for k in data)
    one = api.call("GET", f"/api/v1/keys/{first['id']}", mk)
    assert one.status_code == 200
    assert one.json() == data[0]


def test_an_account_with_no_keys_lists_none(api: Api) -> None:
    mk = api.open_account("acme")
    assert api.call("GET", "/api/v1/keys", mk).json() == {"data": [], "next_cursor": None}


# --- patch ------------------------------------------------------------------------------------


def test_patch_renames_and_rescopes_null_clears_and_absent_keeps(api: Api) -> None:
    mk = api.open_account("acme")
    token, key = api.create_key(mk, name="a", models=["lowrouter/echo"], daily_limit="1")
    path = f"/api/v1/keys/{key['id']}"

    renamed = api.call("PATCH", path, mk, json={"name": "b"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "b"
    assert renamed.json()["models"] == ["lowrouter/echo"]  # absent: kept
    assert renamed.json()["daily_limit"] == "1.000000"

    scoped = api.call("PATCH", path, mk, json={"region": "local", "daily_limit": 7}).json()
    assert (scoped["region"], scoped["daily_limit"], scoped["name"]) == ("local", "7.000000", "b")
    assert scoped["models"] == ["lowrouter/echo"]

    cleared = api.call("PATCH", path, mk, json={"models": None, "daily_limit": None}).json()
    assert cleared["models"] is None and cleared["daily_limit"] is None
    assert cleared["region"] == "local"

    # the inference key sees its new scope on its next request
    this = api.call("GET", "/api/v1/key", token).json()
    assert this["name"] == "b" and this["scope"]["region"] == "local"
    assert this["daily_limit"] is None

    # an empty patch changes nothing and records nothing
    before = len(api.call("GET", f"{path}/events", mk).json()["data"])
    same = api.call("PATCH", path, mk, json={})
    assert same.status_code == 200 and same.json() == api.call("GET", path, mk).json()
    assert len(api.call("GET", f"{path}/events", mk).json()["data"]) == before


def test_patch_with_one_bad_field_changes_nothing(api: Api) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk, name="a")
    path = f"/api/v1/keys/{key['id']}"
    response = api.call("PATCH", path, mk, json={"name": "b", "models": ["no/such-model"]})
    assert_error(response, 422, "unknown_model", "models")
    assert api.call("GET", path, mk).json()["name"] == "a"
    assert len(api.call("GET", f"{path}/events", mk).json()["data"]) == 1


# --- revoke, rotate ---------------------------------------------------------------------------


def test_delete_revokes_at_once_and_twice_is_a_conflict(api: Api) -> None:
    mk = api.open_account("acme")
    token, key = api.create_key(mk)
    path = f"/api/v1/keys/{key['id']}"
    assert api.call("GET", "/api/v1/key", token).status_code == 200
    revoked = api.call("DELETE", path, mk)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    assert_error(api.call("GET", "/api/v1/key", token), 401, "revoked_api_key")
    assert_error(api.call("DELETE", path, mk), 409, "key_revoked")
    assert_error(api.call("PATCH", path, mk, json={"name": "x"}), 409, "key_revoked")
    assert_error(api.call("POST", f"{path}/rotate", mk), 409, "key_revoked")
    # still listed, for the history
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert [(k["id"], k["status"]) for k in listed] == [(key["id"], "revoked")]


def test_delete_records_the_reason_given(api: Api) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk)
    path = f"/api/v1/keys/{key['id']}"
    assert api.call("DELETE", path, mk, json={"reason": "leaked in a log"}).status_code == 200
    last = api.call("GET", f"{path}/events", mk).json()["data"][-1]
    assert (last["type"], last["reason"]) == ("Revoked", "leaked in a log")


def test_rotate_without_grace_ends_the_old_key_at_once(api: Api) -> None:
    mk = api.open_account("acme")
    old_token, old = api.create_key(mk, name="svc", models=["lowrouter/echo"], daily_limit="4")
    response = api.call("POST", f"/api/v1/keys/{old['id']}/rotate", mk)
    assert response.status_code == 201, response.text
    new_token, new = response.json()["key"], response.json()["data"]
    assert new_token != old_token and parse_token(new_token).kind is TokenKind.INFERENCE
    assert new["name"] == "svc" and new["models"] == ["lowrouter/echo"]
    assert new["daily_limit"] == "4.000000"
    assert new["predecessor_id"] == old["id"] and new["status"] == "active"
    old_now = api.call("GET", f"/api/v1/keys/{old['id']}", mk).json()
    assert old_now["successor_id"] == new["id"] and old_now["status"] == "revoked"
    assert_error(api.call("GET", "/api/v1/key", old_token), 401, "expired_api_key")
    assert api.call("GET", "/api/v1/key", new_token).status_code == 200
    # a key whose grace has ended can no longer be changed
    again = api.call("POST", f"/api/v1/keys/{old['id']}/rotate", mk)
    assert again.status_code == 409 and error_of(again)["code"] in {"key_revoked", "conflict"}
    patched = api.call("PATCH", f"/api/v1/keys/{old['id']}", mk, json={"name": "x"})
    assert_error(patched, 409, "key_revoked")


def test_rotate_with_grace_keeps_both_keys_working(api: Api) -> None:
    mk = api.open_account("acme")
    old_token, old = api.create_key(mk)
    response = api.call(
        "POST", f"/api/v1/keys/{old['id']}/rotate", mk, json={"grace_seconds": 3600}
    )
    assert response.status_code == 201, response.text
    new_token = response.json()["key"]
    old_now = api.call("GET", f"/api/v1/keys/{old['id']}", mk).json()
    assert old_now["status"] == "rotating"
    assert api.call("GET", "/api/v1/key", old_token).status_code == 200
    assert api.call("GET", "/api/v1/key", new_token).status_code == 200
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert len(listed) == 2
    # a key still in its grace cannot be rotated a second time: rotate its successor
    again = api.call("POST", f"/api/v1/keys/{old['id']}/rotate", mk)
    assert_error(again, 409, "conflict")


@pytest.mark.parametrize(
    ("grace", "code"),
    [(-1, "invalid_value"), (2_592_001, "invalid_value"), ("60", "invalid_type"),
     (True, "invalid_type"), (None, "invalid_type")],
)  # fmt: skip
def test_rotate_refuses_a_bad_grace(api: Api, grace: Any, code: str) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk)
    path = f"/api/v1/keys/{key['id']}/rotate"
    assert_error(api.call("POST", path, mk, json={"grace_seconds": grace}), 422, code)
    assert api.call("GET", f"/api/v1/keys/{key['id']}", mk).json()["status"] == "active"
    assert api.call("POST", path, mk, json={"grace_seconds": 2_592_000}).status_code == 201


# --- events -----------------------------------------------------------------------------------


def test_events_are_the_full_history_oldest_first_without_the_token_hash(api: Api) -> None:
    mk = api.open_account("acme")
    token, key = api.create_key(mk, name="first", daily_limit="1")
    path = f"/api/v1/keys/{key['id']}"
    api.call("PATCH", path, mk, json={"name": "second"})
    api.call("PATCH", path, mk, json={"models": ["lowrouter/echo"]})
    api.call("POST", f"{path}/rotate", mk, json={"grace_seconds": 60})
    api.call("DELETE", path, mk)
    response = api.call("GET", f"{path}/events", mk)
    assert response.status_code == 200, response.text
    events = response.json()["data"]
    assert [e["type"] for e in events] == ["Created", "Renamed", "Scoped", "Rotated", "Revoked"]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["name"] == "first" and events[0]["daily_limit"] == "1.000000"
    assert events[1]["name"] == "second"
    assert events[2]["models"] == ["lowrouter/echo"]
    assert events[3]["successor_id"] and events[3]["grace_deadline"].endswith("Z")
    mk_display = parse_token(mk).display
    assert all(e["actor"] == {"kind": "management_key", "name": mk_display,
                              "address": "testclient"} for e in events)  # fmt: skip
    assert all(e["at"].endswith("Z") for e in events)
    token_hash = hash_token(api.runtime.settings.pepper, parse_token(token))
    assert token_hash not in response.text and "token_hash" not in response.text
    assert "state" not in response.json()


def test_events_as_of_give_the_history_and_state_until_then(api: Api) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk, name="first")
    path = f"/api/v1/keys/{key['id']}"
    api.call("PATCH", path, mk, json={"name": "second"})
    api.call("DELETE", path, mk)
    events = api.call("GET", f"{path}/events", mk).json()["data"]

    then = api.call("GET", f"{path}/events", mk, params={"as_of": events[1]["at"]}).json()
    assert [e["type"] for e in then["data"]] == ["Created", "Renamed"]
    assert then["state"]["name"] == "second" and then["state"]["status"] == "active"
    assert then["state"]["id"] == key["id"] and then["state"]["revoked_at"] is None

    first = api.call("GET", f"{path}/events", mk, params={"as_of": events[0]["at"]}).json()
    assert first["state"]["name"] == "first"

    now = api.call("GET", f"{path}/events", mk, params={"as_of": "2999-01-01T00:00:00Z"}).json()
    assert now["state"]["status"] == "revoked" and len(now["data"]) == 3

    before = api.call("GET", f"{path}/events", mk, params={"as_of": "2000-01-01T00:00:00"})
    assert before.json() == {"data": [], "state": None}

    bad = api.call("GET", f"{path}/events", mk, params={"as_of": "yesterday"})
    assert_error(bad, 422, "invalid_value", "as_of")


# --- credits ----------------------------------------------------------------------------------


def test_credits_show_balance_held_and_spend(api: Api) -> None:
    mk = api.open_account("acme", credits="12.5")
    response = api.call("GET", "/api/v1/credits", mk)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["balance"] == "12.500000" and body["available"] == "12.500000"
    assert body["held"] == "0.000000" and body["spent_today"] == "0.000000"


# --- who may call -----------------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys"),
    ("GET", "/api/v1/keys/{id}"),
    ("PATCH", "/api/v1/keys/{id}"),
    ("DELETE", "/api/v1/keys/{id}"),
    ("POST", "/api/v1/keys/{id}/rotate"),
    ("GET", "/api/v1/keys/{id}/usage"),
    ("GET", "/api/v1/keys/{id}/events"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/credits"),
]


def test_every_route_refuses_callers_without_a_valid_management_key(api: Api) -> None:
    mk = api.open_account("acme")
    sk, key = api.create_key(mk)
    opened = api.runtime.app.open_account("other", OPERATOR)
    management_keys.revoke_management_key(
        api.runtime.app, opened.account.id, opened.management_key_id, OPERATOR
    )
    unknown = generate_token(TokenKind.MANAGEMENT).value
    refused: list[tuple[str | None, str]] = [
        (None, "missing_api_key"),
        (sk, "invalid_api_key"),  # an inference key
        ("lr-mk-notarealkey", "invalid_api_key"),  # malformed
        (mk[:-1] + ("A" if mk[-1] != "A" else "B"), "invalid_api_key"),  # bad checksum
        (unknown, "invalid_api_key"),  # well formed, never issued
        (opened.token.value, "revoked_api_key"),
    ]
    for method, route in ROUTES:
        path = route.replace("{id}", key["id"])
        for token, code in refused:
            body = {"name": "x"} if method != "GET" else None
            response = api.call(method, path, token, json=body)
            assert_error(response, 401, code)
            assert response.headers["www-authenticate"] == "Bearer"
    # nothing was changed by any of them
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert [(k["name"], k["status"]) for k in listed] == [("k", "active")]


def test_another_accounts_keys_are_invisible_and_untouchable(api: Api) -> None:
    mk_a = api.open_account("alice")
    mk_b = api.open_account("bob")
    _, bobs = api.create_key(mk_b, name="bobs")
    bob_account = str(api.runtime.app.find_account("bob").id)
    missing = str(uuid4())
    for method, route in ROUTES:
        if "{id}" not in route:
            continue
        body = {"name": "mine now"} if method == "PATCH" else None
        answers = [
            api.call(method, route.replace("{id}", target), mk_a, json=body)
            for target in (bobs["id"], missing, "not-a-uuid", bob_account)
        ]
        for response in answers:
            assert_error(response, 404, "key_not_found")
        # indistinguishable from a missing id
        assert len({r.text for r in answers}) == 1, [r.text for r in answers]
    assert api.call("GET", "/api/v1/keys", mk_a).json() == {"data": [], "next_cursor": None}
    usage = api.call("GET", "/api/v1/usage", mk_a, params={"key": bobs["id"]})
    assert usage.json() == {"data": [], "next_cursor": None}
    # Bob's key is exactly as it was
    bob_view = api.call("GET", f"/api/v1/keys/{bobs['id']}", mk_b).json()
    assert (bob_view["name"], bob_view["status"], bob_view["successor_id"]) == (
        "bobs",
        "active",
        None,
    )
    history = api.call("GET", f"/api/v1/keys/{bobs['id']}/events", mk_b).json()["data"]
    assert len(history) == 1


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["status", "id", "spent_today", "account_id", "revoked_at", "successor_id",
              "token_hash", "prefix", "key", "created_at", "nmae"],
)  # fmt: skip
def test_unknown_and_read_only_fields_are_refused(api: Api, field: str) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk, name="a")
    created = api.call("POST", "/api/v1/keys", mk, json={"name": "b", field: "revoked"})
    assert_error(created, 422, "unknown_field", field)
    assert field in error_of(created)["message"]
    path = f"/api/v1/keys/{key['id']}"
    patched = api.call("PATCH", path, mk, json={"name": "c", field: "revoked"})
    assert_error(patched, 422, "unknown_field", field)
    assert_error(api.call("POST", f"{path}/rotate", mk, json={field: 1}), 422, "unknown_field")
    assert_error(api.call("DELETE", path, mk, json={field: 1}), 422, "unknown_field", field)
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert [(k["name"], k["status"]) for k in listed] == [("a", "active")]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"name": 5}, 422, "invalid_type", "name"),
        ({"name": None}, 422, "invalid_type", "name"),
        ({}, 422, "missing_field", "name"),
        ({"name": "a", "models": "lowrouter/echo"}, 422, "invalid_type", "models"),
        ({"name": "a", "models": [1]}, 422, "invalid_type", "models"),
        ({"name": "a", "region": 3}, 422, "invalid_type", "region"),
        ({"name": "a", "daily_limit": True}, 422, "invalid_type", "daily_limit"),
        ({"name": "a", "daily_limit": {"credits": 1}}, 422, "invalid_type", "daily_limit"),
        ({"name": ""}, 422, "invalid_name", "name"),
        ({"name": "   "}, 422, "invalid_name", "name"),
        ({"name": "x" * 65}, 422, "invalid_name", "name"),
        ({"name": "a\nb"}, 422, "invalid_name", "name"),
        ({"name": "a", "models": []}, 422, "invalid_scope", "models"),
        ({"name": "a", "models": ["lowrouter/echo"] * 2}, 422, "invalid_scope", "models"),
        ({"name": "a", "models": ["bad model id"]}, 422, "invalid_scope", "models"),
        ({"name": "a", "models": ["openai/gpt-4o"]}, 422, "unknown_model", "models"),
        ({"name": "a", "region": "EU!"}, 422, "invalid_scope", "region"),
        ({"name": "a", "region": "mars"}, 422, "unknown_region", "region"),
        ({"name": "a", "daily_limit": "-1"}, 422, "invalid_amount", "daily_limit"),
        ({"name": "a", "daily_limit": "1.0000001"}, 422, "invalid_amount", "daily_limit"),
        ({"name": "a", "daily_limit": "ten"}, 422, "invalid_amount", "daily_limit"),
        ({"name": "a", "daily_limit": -5}, 422, "invalid_amount", "daily_limit"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    api: Api, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    mk = api.open_account("acme")
    assert_error(api.call("POST", "/api/v1/keys", mk, json=body), status, code, param)
    _, key = api.create_key(mk, name="kept")
    if body != {}:  # an empty PATCH is a no-op
        patched = api.call("PATCH", f"/api/v1/keys/{key['id']}", mk, json=body)
        assert_error(patched, status, code, param)
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert [(k["name"], k["models"], k["daily_limit"]) for k in listed] == [("kept", None, None)]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [(b"[]", 422, "invalid_body"), (b'"name"', 422, "invalid_body"), (b"3", 422, "invalid_body"),
     (b"{name: 1}", 400, "invalid_json"), (b"\xff", 400, "invalid_json")],
)  # fmt: skip
def test_bodies_must_be_json_objects(api: Api, raw: bytes, status: int, code: str) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk)
    for method, path in [
        ("POST", "/api/v1/keys"),
        ("PATCH", f"/api/v1/keys/{key['id']}"),
        ("POST", f"/api/v1/keys/{key['id']}/rotate"),
        ("DELETE", f"/api/v1/keys/{key['id']}"),
    ]:
        response = api.call(method, path, mk, content=raw)
        assert_error(response, status, code)
    assert len(api.call("GET", "/api/v1/keys", mk).json()["data"]) == 1


def test_unknown_query_parameters_and_methods_are_refused(api: Api) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk)
    response = api.call("GET", "/api/v1/usage", mk, params={"limt": "5"})
    assert_error(response, 422, "unknown_parameter", "limt")
    response = api.call("GET", f"/api/v1/keys/{key['id']}/events", mk, params={"asof": "x"})
    assert_error(response, 422, "unknown_parameter", "asof")
    assert api.call("PUT", f"/api/v1/keys/{key['id']}", mk, json={}).status_code == 405


def test_key_ids_are_uuids_in_any_spelling(api: Api) -> None:
    mk = api.open_account("acme")
    _, key = api.create_key(mk)
    compact = UUID(key["id"]).hex
    assert api.call("GET", f"/api/v1/keys/{compact}", mk).json()["id"] == key["id"]


def test_a_wrong_method_gets_405_in_the_error_shape_with_its_allow_header(api: Api) -> None:
    mk = api.open_account("methods")
    response = api.call("PUT", "/api/v1/keys", mk, json={})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]  # the methods of the route that matched the path


def test_concurrent_patches_of_different_scope_parts_both_take_effect(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    mk = api.open_account("patches")
    _, key = api.create_key(mk)
    with ThreadPoolExecutor(max_workers=2) as pool:
        limit = pool.submit(
            api.call, "PATCH", f"/api/v1/keys/{key['id']}", mk, json={"daily_limit": "2"}
        )
        rename = pool.submit(
            api.call, "PATCH", f"/api/v1/keys/{key['id']}", mk, json={"name": "renamed"}
        )
        assert limit.result().status_code == rename.result().status_code == 200
    final = api.call("GET", f"/api/v1/keys/{key['id']}", mk).json()
    assert (final["name"], final["daily_limit"]) == ("renamed", "2.000000")
