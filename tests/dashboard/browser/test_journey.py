"""End to end in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright)
against a real uvicorn server with the demo catalogue.

A new user signs in with the account's management key, creates a key and reads its token once,
uses it for a completion through the gateway, finds the usage row under the key's name, edits the
key's scope, rotates it, revokes it, and the revoked key fails on the next request. Then the same
with JavaScript switched off. Every page is saved as a screenshot in tests/artifacts/.
"""

import time
from typing import Any

import httpx

from infrastructure.catalogue import DEMO_MODEL
from infrastructure.http.dashboard import COOKIE
from tests.dashboard.browser.conftest import ARTIFACTS, Chromium, Live


def nav(page: Any, name: str) -> None:
    nav_bar = page.get_by_role("navigation", name="Dashboard")
    nav_bar.get_by_role("link", name=name, exact=True).click()  # "Keys", not "Management keys"


def act(page: Any, key_name: str, action: str, scope: Any = None) -> None:
    """Open the key's Actions menu, then follow one of its links."""
    where = scope or page
    where.locator("summary", has_text=f"Actions for {key_name}").click()
    where.get_by_role("link", name=action).click()


def test_a_new_user_creates_uses_rotates_and_revokes_a_key_in_a_browser(
    live: Live, chromium: Chromium
) -> None:
    expect = chromium.sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    browser = chromium.browser
    if True:  # one shared browser: this test opens and closes its own contexts
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status}: {r.url}") if r.status == 404 else None,
        )

        def shot(name: str, *mask: Any) -> None:
            page.screenshot(path=str(ARTIFACTS / name), full_page=True, mask=list(mask))

        # Sign in with the management key.
        page.goto(f"{live.url}/dashboard")
        expect(page).to_have_url(f"{live.url}/dashboard/sign-in")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("dashboard-01-sign-in.png")
        page.get_by_label("Management key").fill(live.management_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{live.url}/dashboard/overview")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        nav(page, "Keys")
        expect(page.get_by_text("No keys yet")).to_be_visible()
        shot("dashboard-02-keys-empty.png")
        cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert live.management_key not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # invisible to scripts

        # Dashboard → Keys → New key; name it, scope it, Create.
        page.get_by_role("link", name="New key").click()
        page.get_by_label("Name", exact=True).fill("prod-server")
        page.get_by_label("Daily limit (credits per UTC day)").fill("5")
        shot("dashboard-03-new-key.png")
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("heading", name="Key created: prod-server")).to_be_visible()
        token = page.get_by_label("Token", exact=True).input_value()
        assert token.startswith("lr-sk-") and len(token) >= 40
        copy = page.get_by_role("button", name="Copy")
        expect(copy).to_be_visible()  # shown by the script
        copy.click()
        expect(page.get_by_text("Copied.")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == token
        shot("dashboard-04-key-created.png", page.get_by_label("Token", exact=True))

        # Reloading never shows it again (the reload resubmits the form: nothing more is made).
        page.reload()
        expect(page).to_have_url(f"{live.url}/dashboard/keys?notice=already-done")
        expect(page.get_by_role("status")).to_contain_text("never shown twice")
        assert token not in page.content()
        page.goto(f"{live.url}/dashboard/keys")
        assert token not in page.content()
        row = page.locator("tr", has_text="prod-server")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(f"{token[:10]}…{token[-4:]}")
        expect(row).to_contain_text("5.000000 credits a day")

        # Use it for a completion through the gateway.
        response = live.chat(token)
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]

        # The usage row, under the key's name.
        nav(page, "Usage")
        expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
        for _ in range(50):
            if page.locator("table.usage tbody tr", has_text="prod-server").count():
                break
            time.sleep(0.1)
            page.reload()
        usage_row = page.locator("table.usage tbody tr").first
        expect(usage_row).to_contain_text("prod-server")
        expect(usage_row).to_contain_text(DEMO_MODEL)
        expect(page.locator("figure.chart rect title").first).to_contain_text("prod-server")
        assert request_id  # the row is the request we just made: one completion so far
        expect(page.locator("table.usage tbody tr")).to_have_count(1)
        shot("dashboard-05-usage.png")
        assert token not in page.content()

        nav(page, "Keys")
        expect(page.locator("tr", has_text="prod-server")).not_to_contain_text("never")
        shot("dashboard-keys.png")

        # Edit its scope: a confirmation naming the key, then the change.
        act(page, "prod-server", "Edit scope of prod-server")
        page.get_by_role("checkbox", name=f"{DEMO_MODEL} (demo)", exact=True).check()
        page.get_by_label("Region").select_option("local")
        page.get_by_label("Daily limit (credits per UTC day)").fill("2")
        shot("dashboard-06-edit-scope.png")
        page.get_by_role("button", name="Review the change").click()
        expect(page.get_by_role("heading", name="Change the scope of prod-server?")).to_be_visible()
        shot("dashboard-07-edit-scope-confirm.png")
        page.get_by_role("button", name="Change scope: prod-server").click()
        expect(page.get_by_role("status")).to_contain_text("The scope of prod-server")
        scope = httpx.get(
            f"{live.url}/api/v1/key", headers={"Authorization": f"Bearer {token}"}
        ).json()["scope"]
        assert scope == {"models": [DEMO_MODEL], "region": "local", "daily_limit": "2.000000"}

        # Its history: who changed what, when.
        nav(page, "Keys")
        act(page, "prod-server", "History of prod-server")
        history = page.locator("table.history")
        expect(history).to_contain_text("Created")
        expect(history).to_contain_text("Scope changed")
        expect(history).to_contain_text("session of lr-mk-")
        shot("dashboard-08-history.png")

        # Rotate with no grace: the new token once; the old one stops at once.
        nav(page, "Keys")
        act(page, "prod-server", "Rotate prod-server")
        expect(page.get_by_role("heading", name="Rotate prod-server")).to_be_visible()
        shot("dashboard-09-rotate.png")
        page.get_by_role("button", name="Rotate prod-server").click()
        expect(page.get_by_role("heading", name="Key rotated: prod-server")).to_be_visible()
        new_token = page.get_by_label("Token", exact=True).input_value()
        assert new_token.startswith("lr-sk-") and new_token != token
        shot("dashboard-10-key-rotated.png", page.get_by_label("Token", exact=True))
        assert live.chat(token).status_code == 401
        assert live.chat(new_token).status_code == 200

        # Delete (revoke) it: a confirmation naming the key; the next request fails.
        page.get_by_role("link", name="I have stored it").click()
        active = page.locator("tr.status-active", has_text="prod-server")
        expect(active).to_have_count(1)
        act(page, "prod-server", "Delete prod-server", scope=active)
        expect(page.get_by_role("heading", name="Delete prod-server")).to_be_visible()
        expect(page.locator("main")).to_contain_text(f"{new_token[:10]}…{new_token[-4:]}")
        shot("dashboard-11-revoke-confirm.png")
        page.get_by_role("button", name="Revoke prod-server").click()
        expect(page.get_by_role("status")).to_contain_text("is revoked")
        expect(page.locator("tr.status-revoked")).to_have_count(2)  # greyed, still listed
        shot("dashboard-12-keys-revoked.png")
        refused = live.chat(new_token)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "revoked_api_key"
        for text in (page.content(),):
            assert token not in text and new_token not in text

        # Sign out: the session is over.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        shot("dashboard-13-signed-out.png")
        page.goto(f"{live.url}/dashboard/keys")
        expect(page).to_have_url(f"{live.url}/dashboard/sign-in")
        context.close()

        # Without JavaScript: every action still works; only the copy button stays hidden.
        plain = browser.new_context(
            java_script_enabled=False, viewport={"width": 1360, "height": 860}
        )
        page = plain.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{live.url}/dashboard/sign-in")
        page.get_by_label("Management key").fill(live.management_key)
        page.get_by_role("button", name="Sign in").click()
        nav(page, "Keys")
        page.get_by_role("link", name="New key").click()
        page.get_by_label("Name", exact=True).fill("no-js")
        page.get_by_role("button", name="Create").click()
        no_js_token = page.get_by_label("Token", exact=True).input_value()
        expect(page.get_by_role("button", name="Copy")).to_be_hidden()
        assert live.chat(no_js_token).status_code == 200
        page.get_by_role("link", name="I have stored it").click()
        act(page, "no-js", "Rename no-js")
        page.get_by_label("New name").fill("plain-html")
        page.get_by_role("button", name="Review the change").click()
        page.get_by_role("button", name="Rename: no-js").click()
        act(page, "plain-html", "Delete plain-html")
        page.get_by_role("button", name="Revoke plain-html").click()
        expect(page.locator("tr.status-revoked", has_text="plain-html")).to_have_count(1)
        shot("dashboard-14-no-javascript.png")
        assert live.chat(no_js_token).status_code == 401
        plain.close()

    assert problems == [], problems
