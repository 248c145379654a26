"""Session security: the cookie's flags and contents, CSRF on every form, sign-out and revoked
management keys ending sessions, and one account never seeing another's keys."""

from datetime import timedelta

import pytest

from application import management_keys
from domain.scope import Scope
from domain.tokens import TokenKind, generate_token, hash_token, parse_token
from infrastructure.http.dashboard import COOKIE, SESSION_LIFETIME
from tests.dashboard.conftest import OPERATOR, Dash, csrf_of


def cookie_header(response_headers: list[str], name: str) -> str:
    matches = [h for h in response_headers if h.startswith(f"{name}=")]
    assert len(matches) == 1, response_headers
    return matches[0]


def test_the_session_cookie_is_httponly_strict_and_never_holds_the_token(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser()
    first = browser.get("/dashboard/sign-in")
    browser.get("/dashboard/sign-in")  # a second tab: the first tab's form still works
    response = browser.post(
        "/dashboard/sign-in",
        {"csrf_token": csrf_of(first.text), "management_key": account.management_key},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/overview"
    header = cookie_header(response.headers.get_list("set-cookie"), COOKIE)
    attributes = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/dashboard" in attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert f"max-age={int(SESSION_LIFETIME.total_seconds())}" in attributes
    pepper = dash.runtime.settings.pepper
    token = parse_token(account.management_key)
    for secret in (account.management_key, account.management_key[6:], hash_token(pepper, token)):
        assert secret not in header
    page = browser.get("/dashboard/keys")
    assert page.status_code == 200
    assert "Signed in with" in page.text and token.display in page.text
    assert account.management_key not in page.text


def test_the_cookie_is_secure_over_https(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser(base_url="https://testserver")
    response = browser.sign_in(account.management_key)
    assert response.status_code == 303
    header = cookie_header(response.headers.get_list("set-cookie"), COOKIE)
    assert "secure" in [part.strip().lower() for part in header.split(";")]
    assert browser.get("/dashboard/keys").status_code == 200


def test_sign_in_refusals_say_why_and_start_no_session(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser()
    unknown = generate_token(TokenKind.MANAGEMENT).value
    inference = dash.runtime.app.create_key(account.id, "k", Scope(), OPERATOR).token.value
    for text, says in [
        (unknown, "never issued"),
        (inference, "inference key"),
        ("lr-mk-short", "Malformed"),
        ("", "Paste a management key"),
    ]:
        response = browser.sign_in(text)
        assert response.status_code == 401, text
        assert says in response.text
        assert not [
            h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE + "=")
        ]
        assert browser.session_cookie is None
        if text:
            assert text not in response.text  # never echoed
    # Without the sign-in form's token (a login CSRF): refused before the key is even looked at.
    fresh = dash.browser()
    response = fresh.post("/dashboard/sign-in", {"management_key": account.management_key})
    assert response.status_code == 403
    assert fresh.session_cookie is None
    form = fresh.get("/dashboard/sign-in")
    wrong = {"csrf_token": csrf_of(form.text)[::-1], "management_key": account.management_key}
    assert fresh.post("/dashboard/sign-in", wrong).status_code == 403
    assert fresh.session_cookie is None


def test_pages_need_a_session(dash: Dash) -> None:
    browser = dash.browser()
    for path in ["/dashboard/keys", "/dashboard/usage", "/dashboard/keys/new", "/dashboard/"]:
        response = browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/dashboard/sign-in"
    assert browser.get("/dashboard").headers["location"] == "/dashboard/"
    response = browser.post("/dashboard/keys/new", {"name": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in"


def test_every_post_without_the_right_csrf_token_is_refused_and_changes_nothing(
    dash: Dash,
) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    other = dash.browser().signed_in(account.management_key)  # same account, another session
    key_id = dash.issue_key(account, "victim")
    good = browser.csrf()
    assert good != other.csrf()
    forms = [
        ("/dashboard/keys/new", {"name": "sneaky"}),
        (f"/dashboard/keys/{key_id}/revoke", {}),
        (f"/dashboard/keys/{key_id}/rename", {"name": "renamed", "confirm": "yes"}),
        (f"/dashboard/keys/{key_id}/scope", {"daily_limit": "1", "confirm": "yes"}),
        (f"/dashboard/keys/{key_id}/rotate", {"grace_seconds": "0"}),
        ("/dashboard/sign-out", {}),
    ]
    for path, data in forms:
        for token in (None, "", "0" * 64, good[:-1], other.csrf()):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            response = browser.post(path, body)
            assert response.status_code == 403, (path, token)
            assert "nothing was changed" in response.text
    keys = dash.runtime.app.list_keys(account.id)
    assert [(k.name, k.status_at(dash.clock()), k.scope) for k in keys] == [
        ("victim", "active", Scope())
    ]
    assert browser.get("/dashboard/keys").status_code == 200  # still signed in


def test_sign_out_ends_the_session_on_the_server(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    cookie = browser.session_cookie
    assert cookie
    csrf = browser.csrf()
    response = browser.post("/dashboard/sign-out", {"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in?notice=signed-out"
    assert "You are signed out" in browser.get(response.headers["location"]).text
    # A copy of the old cookie (stolen, or a browser that ignored the deletion) is worthless now.
    replay = dash.browser()
    replay.client.cookies.set(COOKIE, cookie, path="/dashboard")
    response = replay.get("/dashboard/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in?notice=ended"
    replay.client.cookies.set(COOKIE, cookie, path="/dashboard")
    response = replay.post("/dashboard/keys/new", {"csrf_token": csrf, "name": "after-sign-out"})
    assert response.status_code == 303
    assert dash.runtime.app.list_keys(account.id) == []


def test_revoking_the_management_key_ends_its_sessions(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    management_keys.revoke_management_key(
        dash.runtime.app, account.id, account.management_key_id, OPERATOR
    )
    response = browser.get("/dashboard/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in?notice=ended"
    response = dash.browser().sign_in(account.management_key)
    assert response.status_code == 401
    assert "revoked" in response.text


def test_tampered_and_forged_cookies_are_refused(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    cookie = browser.session_cookie
    assert cookie
    payload, _, signature = cookie.rpartition(".")
    forged = f"{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    for value in (forged, "garbage", cookie[:-2]):
        stranger = dash.browser()
        stranger.client.cookies.set(COOKIE, value, path="/dashboard")
        assert stranger.get("/dashboard/keys").status_code == 303


def test_sessions_expire(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    dash.clock.advance(SESSION_LIFETIME - timedelta(minutes=1))
    assert browser.get("/dashboard/keys").status_code == 200
    dash.clock.advance(timedelta(minutes=2))
    assert browser.get("/dashboard/keys").status_code == 303


def test_another_accounts_key_is_as_missing_as_an_unknown_one(dash: Dash) -> None:
    alice, bob = dash.open_account(), dash.open_account()
    alices_key = dash.issue_key(alice, "alice-prod")
    dash.record_usage(alice, alices_key)
    mallory = dash.browser().signed_in(bob.management_key)
    csrf = mallory.csrf()
    unknown = "0b7e1a52-0000-4000-8000-000000000000"
    for key in (str(alices_key), unknown, "not-a-uuid"):
        for action in ("history", "scope", "rename", "rotate", "revoke"):
            response = mallory.get(f"/dashboard/keys/{key}/{action}")
            assert response.status_code == 404, (key, action)
            assert "alice-prod" not in response.text
        for action, data in [
            ("revoke", {}),
            ("rename", {"name": "pwned", "confirm": "yes"}),
            ("scope", {"daily_limit": "0", "confirm": "yes"}),
            ("rotate", {"grace_seconds": "0"}),
        ]:
            response = mallory.post(f"/dashboard/keys/{key}/{action}", {**data, "csrf_token": csrf})
            assert response.status_code == 404, (key, action)
    key = dash.runtime.app.get_key(alices_key)
    assert (key.name, key.status_at(dash.clock()), key.scope, key.successor_id) == (
        "alice-prod",
        "active",
        Scope(),
        None,
    )
    assert "alice-prod" not in mallory.get("/dashboard/keys").text
    usage = mallory.get(f"/dashboard/usage?key={alices_key}")
    assert usage.status_code == 200
    assert "alice-prod" not in usage.text
    assert "No such key in this account" in usage.text


def test_pages_carry_security_headers(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser()
    sign_in = browser.get("/dashboard/sign-in")
    browser.signed_in(account.management_key)
    for response in (sign_in, browser.get("/dashboard/keys"), browser.get("/dashboard/nope")):
        assert response.headers["cache-control"].startswith("no-store")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert browser.get("/dashboard/nope").status_code == 404


@pytest.mark.parametrize("size", [70_000])
def test_oversized_forms_are_refused(dash: Dash, size: int) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    response = browser.post(
        "/dashboard/keys/new", {"csrf_token": browser.csrf(), "name": "x" * size}
    )
    assert response.status_code == 413
    assert dash.runtime.app.list_keys(account.id) == []
