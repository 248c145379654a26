"""The dashboard's Webhooks page: add an endpoint (the secret shown once, on the answer to the
POST), see it listed, its deliveries, remove it; a refused URL changes nothing and says why;
another account's endpoint is as missing as an unknown one."""

import re

from tests.dashboard.conftest import Dash, csrf_of, form_id_of

SECRET_FIELD = re.compile(r'id="secret"[^>]*value="(whsec_[^"]+)"')
ROW = re.compile(r'data-webhook-id="([0-9a-f-]{36})"')


def test_webhooks_page_adds_lists_shows_deliveries_and_removes(dash: Dash) -> None:
    dash.runtime.webhooks.check_target = lambda url: None  # no DNS in tests for example.com
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    page = browser.get("/dashboard/webhooks")
    assert page.status_code == 200 and "No webhooks yet" in page.text

    added = browser.post(
        "/dashboard/webhooks",
        [
            ("csrf_token", csrf_of(page.text)),
            ("form_id", form_id_of(page.text)),
            ("url", "https://hooks.example.com/lowrouter"),
            ("events", "key.created"),
            ("events", "key.leaked"),
        ],
    )
    assert added.status_code == 200, added.text
    match = SECRET_FIELD.search(added.text)
    assert match and added.headers["cache-control"].startswith("no-store")
    secret = match.group(1)

    listed = browser.get("/dashboard/webhooks")
    (webhook_id,) = ROW.findall(listed.text)
    assert "key.created, key.leaked" in listed.text and secret not in listed.text

    dash.issue_key(account, "hello")
    dash.runtime.projections.catch_up()
    deliveries = browser.get(f"/dashboard/webhooks/{webhook_id}/deliveries")
    assert deliveries.status_code == 200 and "key.created" in deliveries.text

    other = dash.browser().signed_in(dash.open_account().management_key)
    assert other.get(f"/dashboard/webhooks/{webhook_id}/deliveries").status_code == 404
    assert ROW.findall(other.get("/dashboard/webhooks").text) == []

    removed = browser.post(
        f"/dashboard/webhooks/{webhook_id}/remove", {"csrf_token": browser.csrf()}
    )
    assert removed.status_code == 303
    assert ROW.findall(browser.get("/dashboard/webhooks").text) == []
    assert all(
        secret not in html
        for name, html in dash.all_pages()
        if "POST /dashboard/webhooks" not in name
    )


def test_a_refused_url_changes_nothing_and_says_why(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    page = browser.get("/dashboard/webhooks")
    refused = browser.post(
        "/dashboard/webhooks",
        [
            ("csrf_token", csrf_of(page.text)),
            ("form_id", form_id_of(page.text)),
            ("url", "http://127.0.0.1:9/hook"),
            ("events", "key.created"),
        ],
    )
    assert refused.status_code == 422
    assert "LOWROUTER_WEBHOOKS_ALLOW_PRIVATE" in refused.text and "whsec_" not in refused.text
    assert ROW.findall(browser.get("/dashboard/webhooks").text) == []
    no_csrf = browser.post(
        "/dashboard/webhooks", {"url": "https://x.example/", "events": "key.created"}
    )
    assert no_csrf.status_code == 403
