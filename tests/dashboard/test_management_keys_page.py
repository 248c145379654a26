"""The Management keys page: list, issue (the token shown once), rotate with a grace period and
revoke, through the dashboard's forms, with the management API's rules
(application.management_keys)."""

import re

from tests.dashboard.conftest import Dash, csrf_of, form_id_of

MGMT_TOKEN = re.compile(r'id="token"[^>]*value="(lr-mk-[^"]+)"')
NAME_CELL = r'<th scope="row" data-label="Name">([^<]+)'
ROW = re.compile(r'data-management-key-id="([0-9a-f-]+)">\s*' + NAME_CELL)
PAGE = "/dashboard/management-keys"


def shown_token(html: str) -> str:
    match = MGMT_TOKEN.search(html)
    assert match, "the page shows no management token"
    return match.group(1)


def rows(html: str) -> dict[str, str]:
    """Name -> the row's HTML, for each management key listed."""
    found = {}
    for part in html.split("data-management-key-id=")[1:]:
        name = re.search(NAME_CELL, part)
        assert name
        found[name.group(1).strip()] = part.split("</tr>", 1)[0]
    return found


def management_api(dash: Dash, token: str) -> int:
    return dash.api.get("/api/v1/keys", headers={"Authorization": f"Bearer {token}"}).status_code


def test_management_keys_are_issued_rotated_and_revoked_from_the_dashboard(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    listing = browser.get(PAGE)
    assert listing.status_code == 200
    assert '<a href="/dashboard/management-keys" aria-current="page">' in listing.text
    assert "this session" in rows(listing.text)["management key"]

    # Issue: the token once, on the POST's answer, never cached, never listed.
    issued = browser.post(
        PAGE,
        {"csrf_token": csrf_of(listing.text), "form_id": form_id_of(listing.text), "name": "ci"},
    )
    assert issued.status_code == 200 and "no-store" in issued.headers["cache-control"]
    ci_token = shown_token(issued.text)
    assert management_api(dash, ci_token) == 200
    listing = browser.get(PAGE)
    assert ci_token not in listing.text and "active" in rows(listing.text)["ci"]
    ci_id = next(k for k, name in ROW.findall(listing.text) if name.strip() == "ci")

    # Rotate with an hour's grace: the old token works until then, the new one at once.
    confirm = browser.get(f"{PAGE}/{ci_id}/rotate")
    assert confirm.status_code == 200 and "Rotate ci" in confirm.text
    rotated = browser.post(
        f"{PAGE}/{ci_id}/rotate",
        {
            "csrf_token": csrf_of(confirm.text),
            "form_id": form_id_of(confirm.text),
            "grace_seconds": "3600",
        },
    )
    assert rotated.status_code == 200, rotated.text
    new_token = shown_token(rotated.text)
    assert "keeps working until" in rotated.text
    assert management_api(dash, new_token) == 200 and management_api(dash, ci_token) == 200
    listing = browser.get(PAGE).text
    assert "rotating: works until" in listing

    # Bad grace: a clear error, nothing changed.
    refused = browser.post(
        f"{PAGE}/{next(k for k, n in ROW.findall(listing) if n.strip() == 'management key')}"
        "/rotate",
        {
            "csrf_token": csrf_of(listing),
            "form_id": form_id_of(confirm.text),
            "grace_seconds": "-1",
        },
    )
    assert refused.status_code == 422 and "whole number of seconds" in refused.text

    # Revoke the rotated key's successor: it fails on the next request.
    new_id = next(k for k, n in ROW.findall(listing) if n.strip() == "ci" and k != ci_id)
    revoke = browser.get(f"{PAGE}/{new_id}/revoke")
    assert revoke.status_code == 200 and "cannot be undone" in revoke.text
    done = browser.post(f"{PAGE}/{new_id}/revoke", {"csrf_token": csrf_of(revoke.text)})
    assert done.status_code == 303 and "notice=revoked" in done.headers["location"]
    assert management_api(dash, new_token) == 401
    assert browser.get(PAGE).status_code == 200  # this session's key still works

    # The session's own key, now the only active one, is kept (else the owner is locked out).
    own = account.management_key_id
    locked_out = browser.post(f"{PAGE}/{own}/revoke", {"csrf_token": csrf_of(listing)})
    assert locked_out.status_code == 409 and "create another first" in locked_out.text
    assert management_api(dash, account.management_key) == 200


def test_another_accounts_management_key_is_not_found(dash: Dash) -> None:
    mine, theirs = dash.open_account(), dash.open_account()
    browser = dash.browser().signed_in(mine.management_key)
    assert browser.get(f"{PAGE}/{theirs.management_key_id}/rotate").status_code == 404
    csrf = csrf_of(browser.get(PAGE).text)
    answer = browser.post(f"{PAGE}/{theirs.management_key_id}/revoke", {"csrf_token": csrf})
    assert answer.status_code == 404
    assert management_api(dash, theirs.management_key) == 200
