"""Every dashboard page on a laptop (1280 × 900) and a phone (390 × 844): nothing runs off the
right edge (`scrollWidth <= innerWidth`), axe-core finds no serious or critical accessibility
violation, and a screenshot of each is saved in tests/artifacts/layout/.

The account is seeded with what makes pages wide: long key names, many models, a key with
unexpected usage, refusals, a rotated and a revoked key, management keys (one rotating), and a
webhook with delivered and failed attempts.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from application import management_keys
from domain.money import parse_credits
from domain.policy import NO_POLICY, KeyPolicy
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.catalogue import DEMO_MODEL
from infrastructure.webhooks.wiring import deliverer_for
from projections.webhooks import deliveries_of_endpoint
from tests.dashboard.browser.conftest import ARTIFACTS, OPERATOR, Chromium, Live

VIEWPORTS = {"laptop": (1280, 900), "phone": (390, 844)}
SERIOUS = ("serious", "critical")
SHOTS = ARTIFACTS / "layout"
FIRST_SCREENS = ("overview", "keys", "usage")


def seed(live: Live) -> dict[str, UUID]:
    ledger, spend = live.runtime.app, live.runtime.spend
    account = live.account_id

    def key(name: str, scope: Scope | None = None, policy: KeyPolicy = NO_POLICY) -> UUID:
        return ledger.create_key(account, name, scope or Scope(), OPERATOR, policy).key.id

    policy = KeyPolicy(  # every field set: the widest scope cell
        expires_at=datetime.now(UTC) + timedelta(days=5),
        requests_per_minute=600,
        tokens_per_minute=200_000,
        max_concurrent=8,
        allowed_ips=("203.0.113.0/24", "2001:db8:85a3::/48", "198.51.100.7/32"),
        monthly_limit=parse_credits("150"),
    )

    webhooks = live.runtime.webhooks
    webhooks.check_target = lambda url: None  # no DNS here: the URL is never called
    keys: dict[str, UUID] = {
        "webhook": webhooks.add(
            account,
            "https://hooks.example.com/lowrouter/production/alerts-and-key-lifecycle-events",
            ["key.created", "key.revoked", "key.leaked", "credits.low"],
            OPERATOR,
        ).endpoint.id
    }
    keys |= {
        "prod": key("prod-server", Scope((DEMO_MODEL,), "local", parse_credits("5")), policy),
        "long": key("staging-cluster-eu-west-1-batch-summariser-nightly-jobs"),
        "dev": key("local-dev", Scope(daily_limit=parse_credits("1"))),
        "old": key("old-laptop"),
    }
    ledger.revoke_key(key("leaked-in-a-gist"), OPERATOR, "leak")
    ledger.rotate_key(keys["old"], OPERATOR, timedelta(days=7))
    models = ["openai/gpt-4o-mini-2024-07-18", "anthropic/claude-sonnet-4-5", DEMO_MODEL]
    for n in range(12):
        name = ("prod", "long", "dev")[n % 3]
        request = f"req_{uuid.uuid4().hex}"
        cost = 1_000 + 7_113 * n
        spend.reserve(account, request, keys[name], models[n % 3], cost, None).result(timeout=10)
        spend.settle(
            account,
            request,
            cost,
            Usage(
                key_name=name,
                model=models[n % 3],
                provider="lowrouter-demo",
                region="local",
                prompt_tokens=1200 + n,
                completion_tokens=300 + n,
                status="ok" if n % 7 else "upstream_error",
                status_code=200 if n % 7 else 502,
                latency_ms=420 + n,
                streamed=bool(n % 2),
                client_ip="198.51.100.7" if n < 8 else "2001:db8:85a3::8a2e:370:7334",
                user_agent="OpenAI/Python 1.99.0" if n < 10 else "curl/8.5.0",
                api=("chat.completions", "messages", "responses")[n % 3],
            ),
        ).result(timeout=10)
    spend.record_refusal(account, keys["dev"], "daily_limit_exceeded")
    ci = management_keys.issue_management_key(ledger, account, OPERATOR, "ci deploys (github)")
    keys["mk"] = management_keys.rotate_management_key(
        ledger, account, ci.key.id, OPERATOR, timedelta(days=2)
    ).key.id
    live.runtime.projections.catch_up()
    record_deliveries(live, keys["webhook"])
    return keys


def record_deliveries(live: Live, endpoint_id: UUID) -> None:
    """The live server's deliverer tries each message (hooks.example.com does not resolve here:
    each first attempt fails); then a retry of some is recorded as delivered, as the deliverer
    records one."""
    engine, deliverer = live.runtime.engine, deliverer_for(live.runtime)
    deadline = time.monotonic() + 20
    while len(tried := [d for d in deliveries_of_endpoint(engine, endpoint_id) if d.attempt]) < 3:
        assert time.monotonic() < deadline, "the deliverer made no attempt"
        time.sleep(0.1)
    for attempt in tried[:2]:
        deliverer.record(attempt.event_id, str(endpoint_id), 200, None)


def check(page: Any, name: str, width: int, axe_source: str, problems: list[str]) -> None:
    """No sideways scrolling, no serious accessibility violation; a screenshot either way."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    if name.split("-")[0] in FIRST_SCREENS:  # what an owner sees before scrolling
        page.screenshot(path=str(SHOTS / f"{name}-{width}-first-screen.png"))
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if scroll > inner:
        problems.append(f"{name} at {width} px: scrollWidth {scroll} > innerWidth {inner}")
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(axe_source)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    for violation in found:
        if violation["impact"] in SERIOUS:
            where = [node["target"] for node in violation["nodes"][:3]]
            problems.append(
                f"{name} at {width} px: {violation['impact']} {violation['id']}: "
                f"{violation['help']} {where}"
            )


def test_every_page_fits_a_laptop_and_a_phone_and_passes_axe(
    live: Live, chromium: Chromium, axe_source: str
) -> None:
    keys = seed(live)
    base = f"{live.url}/dashboard"
    pages = {
        "overview": "/overview",
        "keys": "/keys",
        "new-key": "/keys/new",
        "scope": f"/keys/{keys['prod']}/scope",
        "rename": f"/keys/{keys['long']}/rename",
        "rotate": f"/keys/{keys['dev']}/rotate",
        "revoke": f"/keys/{keys['long']}/revoke",
        "history": f"/keys/{keys['old']}/history",
        "usage": "/usage",
        "usage-filtered": (
            f"/usage?key={keys['prod']}&status=ok&api=chat.completions&since=2020-01-01"
        ),
        "webhooks": "/webhooks",
        "deliveries": f"/webhooks/{keys['webhook']}/deliveries",
        "management-keys": "/management-keys",
        "management-key-rotate": f"/management-keys/{keys['mk']}/rotate",
        "management-key-revoke": f"/management-keys/{keys['mk']}/revoke",
        "not-found": f"/keys/{uuid.UUID(int=0)}/history",
    }
    problems: list[str] = []
    for device, (width, height) in VIEWPORTS.items():
        context = chromium.context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{base}/sign-in")
        check(page, f"sign-in-{device}", width, axe_source, problems)
        page.get_by_label("Management key").fill(live.management_key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/overview")
        for name, path in pages.items():
            page.goto(base + path)
            check(page, f"{name}-{device}", width, axe_source, problems)
        # The keys page with a menu open, a flag's details, and the pages that answer a POST.
        page.goto(f"{base}/keys")
        # From the keyboard: Enter opens a key's menu, Tab reaches its first action.
        page.locator("summary", has_text="Actions for local-dev").focus()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        if focused != "History of local-dev":
            problems.append(
                f"keyboard at {width} px: Tab after opening the menu reached {focused!r}"
            )
        check(page, f"keys-menu-open-{device}", width, axe_source, problems)
        page.goto(f"{base}/keys/{keys['dev']}/scope")
        page.get_by_label("Daily limit (credits per UTC day)").fill("2")
        page.get_by_role("button", name="Review the change").click()
        check(page, f"confirm-{device}", width, axe_source, problems)
        page.goto(f"{base}/keys/new")
        page.get_by_label("Name", exact=True).fill(f"ci-runner-{device}")
        page.get_by_role("button", name="Create").click()
        check(page, f"token-{device}", width, axe_source, problems)
        page.goto(f"{base}/management-keys")
        page.get_by_label("Name", exact=True).fill(f"owner-laptop-{device}")
        page.get_by_role("button", name="Issue").click()
        check(page, f"management-key-token-{device}", width, axe_source, problems)
        context.close()
    assert problems == [], "\n".join(problems)
