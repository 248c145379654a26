"""The dashboard and the management API agree on what may be changed: both ask the access policy
(domain.access), so for every state of a key they allow and refuse the same things."""

from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.access import key_access
from domain.policy import KeyPolicy
from domain.scope import Scope
from tests.dashboard.conftest import OPERATOR, Dash

HOUR = timedelta(hours=1)


def make_active(dash: Dash, key_id: object) -> None:
    pass


def make_rotating(dash: Dash, key_id: object) -> None:
    dash.runtime.app.rotate_key(key_id, OPERATOR, grace=HOUR)


def make_grace_ended(dash: Dash, key_id: object) -> None:
    dash.runtime.app.rotate_key(key_id, OPERATOR, grace=HOUR)
    dash.clock.advance(2 * HOUR)


def make_revoked(dash: Dash, key_id: object) -> None:
    dash.runtime.app.revoke_key(key_id, OPERATOR)


def make_expired(dash: Dash, key_id: object) -> None:
    dash.runtime.app.update_key(
        key_id, OPERATOR, policy_changes={"expires_at": dash.clock() + HOUR}
    )
    dash.clock.advance(2 * HOUR)


STATES: dict[str, Callable[[Dash, object], None]] = {
    "active": make_active,
    "rotating": make_rotating,
    "grace_ended": make_grace_ended,
    "revoked": make_revoked,
    "expired": make_expired,
}


@pytest.mark.parametrize("state", list(STATES))
def test_dashboard_and_api_agree_on_what_may_change(dash: Dash, state: str) -> None:
    account = dash.open_account()
    key_id = dash.runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key.id
    STATES[state](dash, key_id)
    key = dash.runtime.app.get_key(key_id)
    access = key.access_at(dash.clock())
    assert access.state == state  # the setup reached the state it names
    assert access == key_access(
        revoked_at=key.revoked_at,
        grace_deadline=key.grace_deadline,
        policy=key.policy,
        now=dash.clock(),
    )
    mk = {"Authorization": f"Bearer {account.management_key}"}
    browser = dash.browser().signed_in(account.management_key)

    api_shown = dash.api.get(f"/api/v1/keys/{key_id}", headers=mk).json()
    assert api_shown["changeable"] is access.changeable
    api_rename = dash.api.patch(f"/api/v1/keys/{key_id}", headers=mk, json={"name": "renamed"})
    page_rename = browser.get(f"/dashboard/keys/{key_id}/rename")
    page_scope = browser.get(f"/dashboard/keys/{key_id}/scope")
    page_rotate = browser.get(f"/dashboard/keys/{key_id}/rotate")
    expected = 200 if access.changeable else 409
    assert (api_rename.status_code, page_rename.status_code, page_scope.status_code) == (
        expected,
        expected,
        expected,
    ), api_rename.text
    # Rotation: only a key not rotated yet; the API refuses the same ones (409 on both).
    assert page_rotate.status_code == (200 if access.rotatable else 409)
    api_rotate = dash.api.post(f"/api/v1/keys/{key_id}/rotate", headers=mk, json={})
    assert api_rotate.status_code == (201 if access.rotatable else 409), api_rotate.text


def test_the_key_form_sets_the_policy_and_it_shows_in_the_api(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    key_id = dash.runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key.id
    form = browser.get(f"/dashboard/keys/{key_id}/scope")
    fields = {
        "csrf_token": browser.csrf(),
        "region": "",
        "daily_limit": "",
        "expires_at": (dash.clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
        "requests_per_minute": "30",
        "tokens_per_minute": "",
        "max_concurrent": "2",
        "allowed_ips": "10.0.0.0/8\n2001:db8::/32",
        "monthly_limit": "12.5",
    }
    assert form.status_code == 200
    bad = browser.post(f"/dashboard/keys/{key_id}/scope", {**fields, "allowed_ips": "nope"})
    assert bad.status_code == 422 and "not a network" in bad.text
    confirm = browser.post(f"/dashboard/keys/{key_id}/scope", fields)
    assert confirm.status_code == 200 and "Requests per minute" in confirm.text
    done = browser.post(f"/dashboard/keys/{key_id}/scope", {**fields, "confirm": "yes"})
    assert done.status_code in (200, 303)
    key = dash.runtime.app.get_key(key_id)
    assert key.policy == KeyPolicy(
        expires_at=key.policy.expires_at,
        requests_per_minute=30,
        max_concurrent=2,
        allowed_ips=("10.0.0.0/8", "2001:db8::/32"),
        monthly_limit=12_500_000,
    )
    assert key.policy.expires_at is not None
    mk = {"Authorization": f"Bearer {account.management_key}"}
    shown = dash.api.get(f"/api/v1/keys/{key_id}", headers=mk).json()
    assert (shown["requests_per_minute"], shown["monthly_limit"]) == (30, "12.500000")
    history = browser.get(f"/dashboard/keys/{key_id}/history")
    assert "Policy changed" in history.text and "10.0.0.0/8" in history.text
