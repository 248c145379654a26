"""Noise control for unexpected usage: a key's first client is its baseline (no alert); a new
address is an open alert on the overview and a badge on the keys page; acknowledging it from the
dashboard is an event on the key (in its history), and it stays acknowledged after the forensics
projection is rebuilt from the log."""

import re

from projections.queries.forensics import flags_for_keys
from projections.rebuild import rebuild
from tests.dashboard.conftest import Dash, csrf_of


def test_an_acknowledged_flag_stays_acknowledged_after_a_rebuild(dash: Dash) -> None:
    account = dash.open_account()
    key = dash.issue_key(account, "prod-server")
    dash.record_usage(account, key, client_ip="198.51.100.1")  # the baseline
    browser = dash.browser().signed_in(account.management_key)
    assert "All clear" in browser.get("/dashboard/overview").text
    keys_page = browser.get("/dashboard/keys").text
    assert "Unexpected usage" not in keys_page

    dash.record_usage(account, key, client_ip="203.0.113.9")  # somewhere new
    overview = browser.get("/dashboard/overview").text
    assert "Unexpected usage" in overview and "New address: 203.0.113.9" in overview
    keys_page = browser.get("/dashboard/keys").text
    assert "⚠ Unexpected usage (1)" in keys_page
    assert "first use from address 203.0.113.9" in keys_page

    # A flag the key does not have, or a post without the session's token, changes nothing.
    csrf = csrf_of(keys_page)
    action = f"/dashboard/keys/{key}/flags/acknowledge"
    wrong = {"csrf_token": csrf, "kind": "new_address", "subject": "192.0.2.1"}
    assert browser.post(action, wrong).status_code == 404
    forged = {"csrf_token": "nope", "kind": "new_address", "subject": "203.0.113.9"}
    assert browser.post(action, forged).status_code == 403
    assert not any(f.acknowledged for f in flags_for_keys.run(dash.runtime.engine, [key])[str(key)])

    done = browser.post(action, {**forged, "csrf_token": csrf})
    assert done.status_code == 303 and "notice=acknowledged" in done.headers["location"]

    def acknowledged() -> list[tuple[str, str, bool]]:
        flags = flags_for_keys.run(dash.runtime.engine, [key])[str(key)]
        return [(f.kind, f.subject, f.acknowledged) for f in flags]

    dash.runtime.projections.catch_up()
    assert acknowledged() == [("new_address", "203.0.113.9", True)]
    assert "All clear" in browser.get("/dashboard/overview").text
    keys_page = browser.get("/dashboard/keys").text
    assert "⚠ Unexpected usage" not in keys_page
    assert re.search(r"Acknowledged by session of lr-mk-[^ ]+ \(dashboard\), 2026-03-02", keys_page)
    history = browser.get(f"/dashboard/keys/{key}/history").text
    assert "Unexpected usage acknowledged" in history and "New address: 203.0.113.9" in history

    rebuild(dash.runtime.projections, "forensics")
    assert acknowledged() == [("new_address", "203.0.113.9", True)]
    dash.runtime.projections.reset("forensics")
    dash.runtime.projections.catch_up(["forensics"])
    assert acknowledged() == [("new_address", "203.0.113.9", True)]
    assert "All clear" in browser.get("/dashboard/overview").text
