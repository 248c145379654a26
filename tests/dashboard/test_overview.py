"""The overview, the landing page after sign-in: its figures equal the usage history's sums for a
seeded history (spend today and this month, by model and by key, per day), keys closest to their
limits show their headroom, and open alerts are listed."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.money import MICRO, format_credits, parse_credits
from domain.scope import Scope
from projections.queries.management import usage_page
from projections.schema import from_us
from tests.dashboard.conftest import Dash

TABLE_ROW = re.compile(
    r'<tr><th scope="row">(?:<code>)?([^<]+?)(?:</code>)?(?: <code>[^<]*</code>)?</th>'
    r'<td class="num money">([0-9.]+)</td></tr>'
)


def figure(html: str, figure_id: str) -> int:
    match = re.search(rf'id="{figure_id}"><span class="money">([0-9.]+)</span>', html)
    assert match, figure_id
    return parse_credits(match.group(1))


def table(html: str, table_id: str) -> dict[str, int]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return {name: parse_credits(amount) for name, amount in TABLE_ROW.findall(body)}


def test_the_overview_figures_are_the_usage_historys_sums(dash: Dash) -> None:
    dash.clock.now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    account = dash.open_account("1000")
    prod = dash.issue_key(account, "prod-server")
    dev = dash.issue_key(account, "local-dev", Scope(daily_limit=parse_credits("1")))
    seeded = [  # (when, key, model, cost)
        (datetime(2026, 2, 1, 8, 0, tzinfo=UTC), prod, "acme/big", "3.5"),
        (datetime(2026, 2, 2, 8, 0, tzinfo=UTC), dev, "lowrouter/echo", "0.4"),
        (datetime(2026, 2, 20, 8, 0, tzinfo=UTC), prod, "lowrouter/echo", "7"),  # after Feb 1–2
        (datetime(2026, 3, 1, 23, 59, tzinfo=UTC), prod, "acme/big", "1.25"),
        (datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC), dev, "acme/big", "0.000013"),
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), prod, "lowrouter/echo", "0.00001"),
        (datetime(2026, 3, 2, 9, 0, tzinfo=UTC), dev, "lowrouter/echo", "0.25"),
        (datetime(2026, 3, 2, 9, 10, tzinfo=UTC), prod, "acme/big", "2"),
    ]
    for moment, key, model, cost in seeded:
        dash.clock.now = moment
        dash.record_usage(account, key, model=model, cost=cost)
    dash.clock.now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    browser = dash.browser().signed_in(account.management_key)
    html = browser.get("/dashboard/overview").text

    rows = [  # the usage history, as the management API reads it, with each row's UTC day
        {**row, "day": from_us(row["at_us"]).date().isoformat()}  # type: ignore[union-attr]
        for row in usage_page.run(dash.runtime.engine, account.id, limit=1000)
    ]
    assert len(rows) == len(seeded)

    def total(**where: str) -> int:
        return sum(
            int(r["cost"]) for r in rows if all(str(r[k]).startswith(v) for k, v in where.items())
        )

    assert figure(html, "figure-1") == total(day="2026-03-02")  # spent today
    assert figure(html, "figure-2") == total(day="2026-03")  # spent this month
    march = [r for r in rows if r["day"].startswith("2026-03")]
    by_model: dict[str, int] = {}
    by_key: dict[str, int] = {}
    for r in march:
        by_model[r["model"]] = by_model.get(r["model"], 0) + int(r["cost"])
        by_key[r["key_name"]] = by_key.get(r["key_name"], 0) + int(r["cost"])
    assert table(html, "month-by-model") == by_model
    assert table(html, "month-by-key") == by_key
    # The change against the period before: yesterday, and the same days of last month.
    yesterday, last_month_same_days = total(day="2026-03-01"), total(day="2026-02-0")
    change = Decimal(total(day="2026-03-02") - yesterday) / MICRO
    assert f"+{change:.6f} credits" in html and format_credits(yesterday) in html
    assert "February 1–2" in html and format_credits(last_month_same_days) in html
    # The daily chart's table: every day's total is that day's sum of the history.
    chart_table = html.split('id="by-model-table"', 1)[1].split("</table>", 1)[0]
    for day, day_total in re.findall(
        r'<th scope="row">(\d{4}-\d\d-\d\d)</th>.*?<td class="num">([0-9.]+)</td></tr>', chart_table
    ):
        assert parse_credits(day_total) == total(day=day), day
    # The balance and what is available.
    spent = sum(int(r["cost"]) for r in rows)
    assert figure(html, "figure-available") == 1000 * MICRO - spent
    # Headroom: the key with a daily limit, as figures (not only a bar).
    assert "0.250000 of 1.000000 credit today (25%)" in html
    assert 'aria-label="Daily limit used by local-dev"' in html


def test_the_overview_is_the_landing_page_and_lists_nothing_when_all_is_quiet(dash: Dash) -> None:
    account = dash.open_account()
    key = dash.issue_key(account, "prod-server")
    dash.record_usage(account, key, client_ip="198.51.100.1")  # its first client: the baseline
    dash.record_usage(account, key, client_ip="198.51.100.1")
    browser = dash.browser()
    signed = browser.sign_in(account.management_key)
    assert signed.headers["location"] == "/dashboard/overview"
    assert browser.get("/dashboard/").headers["location"] == "/dashboard/overview"
    html = browser.get("/dashboard/overview").text
    assert "All clear" in html and "Unexpected usage" not in html
    assert '<a href="/dashboard/overview" aria-current="page">Overview</a>' in html


def test_old_keys_and_refusals_show_on_the_overview(dash: Dash) -> None:
    account = dash.open_account("0.000001")
    key = dash.issue_key(account, "old-laptop")
    dash.clock.advance(timedelta(days=91))
    token_owner = dash.runtime.spend
    token_owner.record_refusal(account.id, key, "insufficient_credits")
    browser = dash.browser().signed_in(account.management_key)
    html = browser.get("/dashboard/overview").text
    assert "old-laptop" in html and "91 days old with no expiry" in html
    traffic = html.split('id="traffic"', 1)[1].split("</table>", 1)[0]
    assert "Refused: Not enough credits" in traffic
    cells = re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", traffic.split("<tbody>", 1)[1])
    assert cells[:4] == ["2026-06-01", "0", "0", "1"]


def test_the_key_policy_shows_on_the_keys_page_and_as_headroom_and_alerts(dash: Dash) -> None:
    from domain.policy import KeyPolicy
    from tests.dashboard.conftest import OPERATOR

    account = dash.open_account()
    ledger = dash.runtime.app
    policy = KeyPolicy(
        expires_at=dash.clock.now + timedelta(days=3),
        requests_per_minute=1,
        tokens_per_minute=5000,
        max_concurrent=2,
        allowed_ips=("203.0.113.0/24",),
        monthly_limit=parse_credits("10"),
    )
    key = ledger.create_key(account.id, "batch-job", Scope(), OPERATOR, policy).key.id
    dash.record_usage(account, key, cost="2.5")
    browser = dash.browser().signed_in(account.management_key)

    keys_page = browser.get("/dashboard/keys").text
    row = keys_page.split(f'data-key-id="{key}"', 1)[1].split("</tr>", 1)[0]
    for text in (
        "10.000000 credits a month",
        "1 request a minute · 5000 tokens a minute · 2 at once",
        "from 203.0.113.0/24",
        "expires 2026-03-05 09:30 UTC (in 3 days)",
    ):
        assert text in row, text
    overview = browser.get("/dashboard/overview").text
    assert "2.500000 of 10.000000 credits this month (25%)" in overview
    assert 'aria-label="Monthly limit used by batch-job"' in overview
    assert "batch-job" in overview and "expires 2026-03-05 09:30 UTC" in overview
    history = browser.get(f"/dashboard/keys/{key}/history").text
    assert "Policy changed" in history and "from 203.0.113.0/24" in history


def test_per_minute_limits_show_their_headroom_in_the_trailing_minute(dash: Dash) -> None:
    from domain.policy import KeyPolicy
    from tests.dashboard.conftest import OPERATOR

    account = dash.open_account()
    ledger, spend = dash.runtime.app, dash.runtime.spend
    policy = KeyPolicy(requests_per_minute=10, tokens_per_minute=1000)
    first = ledger.create_key(account.id, "paced", Scope(), OPERATOR, policy).key.id
    # Rotated with a grace: both keys live, and the successor shares its lineage's minute.
    successor = ledger.rotate_key(first, OPERATOR, grace=timedelta(hours=1)).key.id
    for n, key in enumerate([first, first, successor]):
        spend.admit(
            account.id,
            f"req-{n}",
            key,
            "lowrouter/echo",
            1,
            None,
            policy=policy,
            tokens=150,
            meter=str(first),  # the lineage's meter, as metering does
        ).result(timeout=10)
    browser = dash.browser().signed_in(account.management_key)

    overview = browser.get("/dashboard/overview").text
    headroom = overview.split('id="headroom-heading"', 1)[1].split("</section>", 1)[0]
    assert headroom.count("3 of 10 requests in the last minute (30%)") == 2  # each live key
    assert headroom.count("450 of 1000 tokens in the last minute (45%)") == 2
    assert 'aria-label="Requests a minute used by paced"' in headroom

    dash.clock.advance(timedelta(seconds=61))  # the minute has passed
    later = browser.get("/dashboard/overview").text
    assert "0 of 10 requests in the last minute (0%)" in later
    assert "3 of 10 requests" not in later


def test_a_rotated_keys_headroom_counts_what_its_predecessor_spent(dash: Dash) -> None:
    """The limit bars are the ledger's figures of the rotation lineage (issue 15): the successor
    starts from its predecessor's spend, as its limits do, not from nothing."""
    from tests.dashboard.conftest import OPERATOR

    account = dash.open_account()
    ledger = dash.runtime.app
    scope = Scope(daily_limit=parse_credits("10"))
    first = ledger.create_key(account.id, "rotating", scope, OPERATOR).key.id
    dash.record_usage(account, first, cost="2.5")
    successor = ledger.rotate_key(first, OPERATOR).key.id  # no grace: the first is revoked

    overview = dash.browser().signed_in(account.management_key).get("/dashboard/overview").text
    section = overview.split('id="headroom-heading"', 1)[1].split("</section>", 1)[0]
    assert f"#key-{successor}" in section and f"#key-{first}" not in section
    assert "2.500000 of 10.000000 credits today (25%)" in section
