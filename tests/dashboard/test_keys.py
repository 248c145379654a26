"""The keys pages: the token shown once and nowhere else, the keys table, and each change (scope,
rename, rotate, revoke) going through a confirmation that names the key."""

import re
from datetime import timedelta

from domain.money import parse_credits
from domain.scope import Scope
from infrastructure.http.dashboard import ROTATE_AFTER
from tests.dashboard.conftest import Browser, Dash, csrf_of, form_id_of, token_of


def every_page(browser: Browser, key_ids: list[str]) -> list[str]:
    """Every page a signed-in user can open (GET), for the no-token checks."""
    paths = ["/dashboard/overview", "/dashboard/keys", "/dashboard/keys/new", "/dashboard/usage"]
    paths.append("/dashboard/sign-in")
    for key_id in key_ids:
        paths += [
            f"/dashboard/keys/{key_id}/{what}"
            for what in ("history", "scope", "rename", "rotate", "revoke")
        ]
        paths.append(f"/dashboard/usage?key={key_id}")
    return [browser.get(path).text for path in paths]


def test_the_token_is_shown_once_in_the_answer_to_create_and_never_again(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    form = browser.get("/dashboard/keys/new")
    assert form.status_code == 200
    assert 'name="models" value="lowrouter/echo"' in form.text
    assert '<option value="eu">eu</option>' in form.text
    data = [
        ("csrf_token", csrf_of(form.text)),
        ("form_id", form_id_of(form.text)),
        ("name", "prod-server"),
        ("models", "lowrouter/echo"),
        ("region", "local"),
        ("daily_limit", "5"),
    ]
    created = browser.post("/dashboard/keys/new", data)
    assert created.status_code == 200  # the POST's own answer, not a redirect
    assert created.headers["cache-control"].startswith("no-store")
    token = token_of(created.text)
    assert token.startswith("lr-sk-") and len(token) >= 40
    assert "This is the only time the full token is shown" in created.text
    assert "secret manager" in created.text and ".gitignore" in created.text
    assert 'data-copy="token"' in created.text
    assert created.text.count(token) == 1
    assert dash.api_key(token).json()["name"] == "prod-server"
    key = dash.runtime.app.list_keys(account.id)[0]
    assert key.scope == Scope(("lowrouter/echo",), "local", parse_credits("5"))

    # The browser's "reload" of the result resubmits the form: nothing more is created, and the
    # token is not shown again.
    again = browser.post("/dashboard/keys/new", data)
    assert again.status_code == 303
    assert token not in again.text
    assert len(dash.runtime.app.list_keys(account.id)) == 1
    assert "already submitted" in browser.get(again.headers["location"]).text

    for text in every_page(browser, [str(key.id)]):
        assert token not in text
        assert token[6:] not in text
    keys_page = browser.get("/dashboard/keys").text
    assert key.display in keys_page  # lr-sk-AbCd…wXyZ only

    # Rotation: the successor's token once, on the answer to the rotate POST.
    rotate_form = browser.get(f"/dashboard/keys/{key.id}/rotate")
    rotated = browser.post(
        f"/dashboard/keys/{key.id}/rotate",
        {
            "csrf_token": csrf_of(rotate_form.text),
            "form_id": form_id_of(rotate_form.text),
            "grace_seconds": "3600",
        },
    )
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"].startswith("no-store")
    new_token = token_of(rotated.text)
    assert new_token != token and rotated.text.count(new_token) == 1
    assert "keeps working until" in rotated.text
    assert dash.api_key(token).status_code == 200  # in its grace period
    assert dash.api_key(new_token).status_code == 200
    successor = dash.runtime.app.get_key(key.id).successor_id
    assert successor is not None
    for text in every_page(browser, [str(key.id), str(successor)]):
        assert token not in text and new_token not in text
    # Every page the browser was ever shown: each token exactly on its one page.
    showing = [what for what, text in browser.pages if token in text or new_token in text]
    assert showing == [
        "POST /dashboard/keys/new -> 200",
        f"POST /dashboard/keys/{key.id}/rotate -> 200",
    ]


def test_the_keys_table(dash: Dash) -> None:
    account = dash.open_account()
    old = dash.issue_key(account, "old-laptop")
    dash.clock.advance(ROTATE_AFTER + timedelta(days=1))
    scoped = dash.issue_key(
        account, "prod-server", Scope(("acme/big",), "eu", parse_credits("2.5"))
    )
    gone = dash.issue_key(account, "leaked")
    dash.record_usage(account, scoped, model="acme/big", cost="0.25")
    browser = dash.browser().signed_in(account.management_key)
    browser.post(f"/dashboard/keys/{gone}/revoke", {"csrf_token": browser.csrf()})
    html = browser.get("/dashboard/keys").text
    headers = re.findall(r'<th scope="col"[^>]*>([^<]+)</th>', html)
    assert headers == [
        "Name",
        "Key",
        "Status",
        "Scope",
        "Spent today",
        "Last used",
        "Created",
        "Actions",
    ]
    rows = dict(re.findall(r'data-key-id="([0-9a-f-]{36})">(.*?)</tr>', html, re.S))
    ledger = dash.runtime.app
    prod = rows[str(scoped)]
    assert ledger.get_key(scoped).display in prod
    for text in (
        "prod-server",
        "active",
        "acme/big",
        "eu",
        "2.500000 credits a day",
        "0.250000",
        "2026-06-01 09:30 UTC",
        "less than an hour",
    ):
        assert text in prod, text
    assert "rotate at least every 90 days" not in prod
    laptop = rows[str(old)]
    assert "every model" in laptop and "any region" in laptop and "no limit" in laptop
    assert "never" in laptop  # last used
    assert "91 days" in laptop and "rotate at least every 90 days" in laptop
    assert "/rotate" in laptop and "/revoke" in laptop
    leaked = rows[str(gone)]
    assert 'class="key status-revoked"' in html and "revoked" in leaked
    assert "/history" in leaked
    assert "/rotate" not in leaked and "/revoke" not in leaked and "/scope" not in leaked
    assert "rotate at least every 90 days" not in leaked
    # Newest first.
    assert list(rows) == [str(gone), str(scoped), str(old)]


def test_edit_scope_asks_for_a_confirmation_naming_the_key(dash: Dash) -> None:
    account = dash.open_account()
    key_id = dash.issue_key(account, "chatbox-personal")
    display = dash.runtime.app.get_key(key_id).display
    browser = dash.browser().signed_in(account.management_key)
    form = browser.get(f"/dashboard/keys/{key_id}/scope")
    assert "chatbox-personal" in form.text and display in form.text
    csrf = csrf_of(form.text)
    change = [
        ("csrf_token", csrf),
        ("models", "acme/big"),
        ("region", "eu"),
        ("daily_limit", "0.5"),
    ]
    confirm = browser.post(f"/dashboard/keys/{key_id}/scope", change)
    assert confirm.status_code == 200
    assert "Change the scope of chatbox-personal?" in confirm.text and display in confirm.text
    assert "every model" in confirm.text and "acme/big" in confirm.text
    assert "0.500000 credits a day" in confirm.text
    assert dash.runtime.app.get_key(key_id).scope == Scope()  # not yet
    done = browser.post(f"/dashboard/keys/{key_id}/scope", [*change, ("confirm", "yes")])
    assert done.status_code == 303
    assert dash.runtime.app.get_key(key_id).scope == Scope(
        ("acme/big",), "eu", parse_credits("0.5")
    )
    assert "The scope of chatbox-personal" in browser.get(done.headers["location"]).text
    # Back to every model, any region, no limit.
    clear = [("csrf_token", csrf), ("region", ""), ("daily_limit", ""), ("confirm", "yes")]
    assert browser.post(f"/dashboard/keys/{key_id}/scope", clear).status_code == 303
    assert dash.runtime.app.get_key(key_id).scope == Scope()
    # Refusals name the field and change nothing.
    for bad, says in [
        ([("models", "nope/model")], "not a model of this gateway"),
        ([("region", "mars")], "serves region"),
        ([("daily_limit", "-1")], "negative"),
        ([("daily_limit", "0.0000001")], "6 decimal places"),
        ([("daily_limit", "lots")], "not a number"),
    ]:
        response = browser.post(
            f"/dashboard/keys/{key_id}/scope", [("csrf_token", csrf), *bad, ("confirm", "yes")]
        )
        assert response.status_code == 422, bad
        assert says in response.text
    assert dash.runtime.app.get_key(key_id).scope == Scope()


def test_rename_asks_for_a_confirmation_naming_the_key(dash: Dash) -> None:
    account = dash.open_account()
    key_id = dash.issue_key(account, "local-dev")
    browser = dash.browser().signed_in(account.management_key)
    csrf = csrf_of(browser.get(f"/dashboard/keys/{key_id}/rename").text)
    confirm = browser.post(f"/dashboard/keys/{key_id}/rename", {"csrf_token": csrf, "name": "ci"})
    assert confirm.status_code == 200
    assert "Rename local-dev?" in confirm.text
    assert dash.runtime.app.get_key(key_id).name == "local-dev"
    done = browser.post(
        f"/dashboard/keys/{key_id}/rename", {"csrf_token": csrf, "name": "ci", "confirm": "yes"}
    )
    assert done.status_code == 303
    assert dash.runtime.app.get_key(key_id).name == "ci"
    bad = browser.post(
        f"/dashboard/keys/{key_id}/rename", {"csrf_token": csrf, "name": " ", "confirm": "yes"}
    )
    assert bad.status_code == 422 and "not blank" in bad.text
    assert dash.runtime.app.get_key(key_id).name == "ci"


def test_rotate_and_revoke_confirm_and_take_effect_on_the_next_request(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    key_id, token = browser.create_key("prod-server")
    page = browser.get(f"/dashboard/keys/{key_id}/rotate")
    assert "Rotate prod-server" in page.text
    bad = browser.post(
        f"/dashboard/keys/{key_id}/rotate",
        {"csrf_token": csrf_of(page.text), "form_id": form_id_of(page.text), "grace_seconds": "-5"},
    )
    assert bad.status_code == 422 and "whole number of seconds" in bad.text
    rotated = browser.post(
        f"/dashboard/keys/{key_id}/rotate",
        {"csrf_token": csrf_of(page.text), "form_id": form_id_of(page.text), "grace_seconds": "0"},
    )
    assert rotated.status_code == 200
    new_token = token_of(rotated.text)
    assert "stopped working now" in rotated.text
    assert dash.api_key(token).status_code == 401
    successor = dash.runtime.app.get_key(key_id).successor_id
    assert successor is not None
    # The old key can no longer be changed; the successor can.
    assert browser.get(f"/dashboard/keys/{key_id}/rotate").status_code == 409
    confirm = browser.get(f"/dashboard/keys/{successor}/revoke")
    assert confirm.status_code == 200
    assert "Delete prod-server" in confirm.text
    assert dash.runtime.app.get_key(successor).display in confirm.text
    assert dash.api_key(new_token).status_code == 200
    done = browser.post(f"/dashboard/keys/{successor}/revoke", {"csrf_token": browser.csrf()})
    assert done.status_code == 303
    refused = dash.api_key(new_token)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    assert "is revoked" in browser.get(done.headers["location"]).text
    again = browser.post(f"/dashboard/keys/{successor}/revoke", {"csrf_token": browser.csrf()})
    assert again.status_code == 409
    assert browser.get(f"/dashboard/keys/{successor}/revoke").status_code == 409


def test_key_history_shows_who_and_when_and_never_the_hash(dash: Dash) -> None:
    account = dash.open_account()
    key_id = dash.issue_key(account, "first-name")
    browser = dash.browser().signed_in(account.management_key)
    csrf = browser.csrf()
    browser.post(
        f"/dashboard/keys/{key_id}/rename",
        {"csrf_token": csrf, "name": "second-name", "confirm": "yes"},
    )
    dash.clock.advance(timedelta(minutes=5))
    browser.post(
        f"/dashboard/keys/{key_id}/scope",
        {"csrf_token": csrf, "daily_limit": "3", "confirm": "yes"},
    )
    browser.post(f"/dashboard/keys/{key_id}/revoke", {"csrf_token": csrf})
    html = browser.get(f"/dashboard/keys/{key_id}/history").text
    whats = re.findall(r'<th scope="row"[^>]*>([^<]+)</th>', html)
    assert whats == ["Created", "Renamed", "Scope changed", "Revoked"]
    assert "cli:dashboard-tests (operator)" in html
    session_of = f"session of {account.management_key[:10]}…{account.management_key[-4:]}"
    assert html.count(f"{session_of} (dashboard)") == 3
    assert "2026-03-02 09:30 UTC" in html and "2026-03-02 09:35 UTC" in html
    assert "3.000000 credits a day" in html and "revoked from the dashboard" in html
    key = dash.runtime.app.get_key(key_id)
    assert key.token_hash not in html
    assert "token_hash" not in html


def test_unexpected_usage_is_flagged_on_the_keys_page(dash: Dash) -> None:
    account = dash.open_account()
    quiet = dash.issue_key(account, "quiet")
    roaming = dash.issue_key(account, "roaming")
    dash.record_usage(account, quiet, client_ip="10.0.0.1")
    dash.record_usage(account, roaming, client_ip="10.0.0.1")
    dash.record_usage(account, roaming, client_ip="198.51.100.23")  # never seen before
    browser = dash.browser().signed_in(account.management_key)
    html = browser.get("/dashboard/keys").text
    rows = dict(re.findall(r'data-key-id="([0-9a-f-]{36})">(.*?)</tr>', html, re.S))
    assert "Unexpected usage" in rows[str(roaming)] and "198.51.100.23" in rows[str(roaming)]
    assert "Unexpected usage" not in rows[str(quiet)]


def test_a_rotated_keys_spent_today_is_its_lineages(dash: Dash) -> None:
    """The keys page shows what the daily limit is checked against: a successor starts from
    its predecessor's spend (limits follow the rotation lineage)."""
    from domain.scope import Scope
    from tests.dashboard.conftest import OPERATOR

    account = dash.open_account()
    ledger = dash.runtime.app
    first = ledger.create_key(account.id, "rotating", Scope(), OPERATOR).key.id
    dash.record_usage(account, first, cost="2.5")
    successor = ledger.rotate_key(first, OPERATOR).key.id

    html = dash.browser().signed_in(account.management_key).get("/dashboard/keys").text
    rows = dict(re.findall(r'data-key-id="([0-9a-f-]{36})">(.*?)</tr>', html, re.S))
    assert "2.500000" in rows[str(successor)]
