"""The usage page: a chart of daily spend per key over 30 days, and the usage history newest
first with the key's name on every row, filters and paging."""

import re
from datetime import timedelta
from typing import Any

import pytest

from infrastructure.http.dashboard import usage as usage_pages
from tests.dashboard.conftest import OPERATOR, Dash

ROW = re.compile(
    r"<tr>\s*<td[^>]*><time[^>]*>([^<]+)</time></td>\s*<th scope=\"row\"[^>]*>(.*?)</th>"
    r"\s*<td[^>]*><code>([^<]+)</code>",
    re.S,
)


def rows_of(html: str) -> list[tuple[str, str, str]]:
    """(when, key cell, model) of each usage row."""
    return ROW.findall(html)


def test_usage_history_chart_filters_and_paging(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_pages, "USAGE_PAGE_SIZE", 2)
    account = dash.open_account()
    prod = dash.issue_key(account, "prod-server")
    dev = dash.issue_key(account, "local-dev")
    dash.record_usage(account, prod, cost="1.5")  # 2026-03-02
    dash.clock.advance(timedelta(days=1))
    dash.record_usage(account, dev, model="acme/big", cost="0.25")  # 2026-03-03
    dash.clock.advance(timedelta(hours=1))
    dash.record_usage(account, prod, cost="0.5")
    dash.clock.advance(timedelta(minutes=1))
    dash.record_usage(account, dev, cost="0.125")
    dash.runtime.app.rename_key(prod, "prod-api", OPERATOR)
    browser = dash.browser().signed_in(account.management_key)

    page = browser.get("/dashboard/usage")
    assert page.status_code == 200
    html = page.text
    # The chart: one bar per key and day, titled, with a legend and a table of its figures.
    bars = re.findall(
        r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" fill="(#[0-9a-f]{6})"[^>]*>'
        r"<title>([^<]+)</title>",
        html,
    )
    assert sorted(title for _colour, title in bars) == [
        "2026-03-02 · prod-api: 1.500000 credits",
        "2026-03-03 · local-dev: 0.375000 credits",
        "2026-03-03 · prod-api: 0.500000 credits",
    ]
    assert len({colour for colour, _title in bars}) == 2
    legend = '<span class="series">prod-api</span> <code>'
    assert legend in html and '"money">2.000000</span> credits</li>' in html  # legend totals
    assert "Daily spend per key from 2026-02-02 to 2026-03-03: 2.375000 credits in all" in html
    cells = '<td class="num">0.500000</td><td class="num">0.375000</td>'
    assert '<th scope="row">2026-03-03</th>' + cells in html

    # Newest first, two a page, the key's (current) name on every row.
    first = rows_of(html)
    assert [(when, model) for when, _, model in first] == [
        ("2026-03-03 10:31 UTC", "lowrouter/echo"),
        ("2026-03-03 10:30 UTC", "lowrouter/echo"),
    ]
    assert "local-dev" in first[0][1] and "prod-api" in first[1][1]
    assert "then “prod-server”" in first[1][1]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', html)
    assert older
    second = browser.get(older.group(1).replace("&amp;", "&")).text
    rest = rows_of(second)
    assert [(when, model) for when, _, model in rest] == [
        ("2026-03-03 09:30 UTC", "acme/big"),
        ("2026-03-02 09:30 UTC", "lowrouter/echo"),
    ]
    assert "local-dev" in rest[0][1] and "prod-api" in rest[1][1]
    assert 'rel="next"' not in second and ">Newest</a>" in second

    # Filters: by key, by model, since a day; kept across pages.
    by_key = rows_of(browser.get(f"/dashboard/usage?key={dev}").text)
    assert [model for _, _, model in by_key] == ["lowrouter/echo", "acme/big"]
    assert all("local-dev" in cell for _, cell, _ in by_key)
    by_model = browser.get("/dashboard/usage?model=lowrouter/echo").text
    next_link = re.search(r'<a href="([^"]+)" rel="next">', by_model)
    assert next_link and "model=lowrouter%2Fecho" in next_link.group(1)
    by_model_rest = rows_of(browser.get(next_link.group(1).replace("&amp;", "&")).text)
    assert [when for when, _, _ in by_model_rest] == ["2026-03-02 09:30 UTC"]
    since = rows_of(browser.get("/dashboard/usage?since=2026-03-03&key=" + str(prod)).text)
    assert [when for when, _, _ in since] == ["2026-03-03 10:30 UTC"]
    bad = browser.get("/dashboard/usage?since=yesterday")
    assert bad.status_code == 200 and "must be a day" in bad.text
    assert "No completions match" in browser.get("/dashboard/usage?model=nope/none").text


def test_usage_page_with_nothing_yet(dash: Dash) -> None:
    account = dash.open_account()
    browser = dash.browser().signed_in(account.management_key)
    html = browser.get("/dashboard/usage").text
    assert "No spend in the last 30 days." in html
    assert "No completions yet." in html


def test_the_csv_is_exactly_the_filtered_rows_and_the_page_says_where_it_is(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io

    from domain.money import format_credits
    from projections.queries.management import usage_page
    from projections.schema import from_us

    monkeypatch.setattr(usage_pages, "USAGE_PAGE_SIZE", 2)
    monkeypatch.setattr(usage_pages, "CSV_PAGE", 2)  # the download reads page after page
    account = dash.open_account()
    prod = dash.issue_key(account, "prod-server")
    dev = dash.issue_key(account, "local-dev")
    for n in range(5):
        dash.record_usage(account, prod, cost=f"0.00{n + 1}")
        dash.record_usage(account, dev, model="acme/big", cost="0.5")
        dash.clock.advance(timedelta(days=1))
    dash.record_usage(account, prod, cost="0.25", client_ip="=1+2")  # a formula, if unguarded
    browser = dash.browser().signed_in(account.management_key)
    query = f"key={prod}&model=lowrouter/echo&since=2026-03-03&until=2026-03-07"

    page = browser.get(f"/dashboard/usage?{query}").text
    expected = [
        row
        for row in usage_page.run(dash.runtime.engine, account.id, key_id=prod, limit=100)
        if "2026-03-03" <= from_us(row["at_us"]).date().isoformat() <= "2026-03-07"  # type: ignore[union-attr]
    ]
    assert len(expected) == 5  # March 3, 4, 5, 6 and the formula on the 7th
    assert 'id="total-completions">5 completions<' in page
    total = sum(int(r["cost"]) for r in expected)
    assert f'id="total-cost">{format_credits(total)}<' in page
    assert "Completions 1–2 of 5, newest first (page 1 of 3)." in page
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page)
    assert older
    second = browser.get(older.group(1).replace("&amp;", "&")).text
    assert "Completions 3–4 of 5, newest first (page 2 of 3)." in second

    link = re.search(r'<a href="(/dashboard/usage\.csv\?[^"]+)" download>', page)
    assert link
    download = browser.get(link.group(1).replace("&amp;", "&"))
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(download.text)))
    assert [line["request_id"] for line in lines] == [r["request_id"] for r in expected]
    for line, row in zip(lines, expected, strict=True):
        assert line["cost"] == format_credits(int(row["cost"]))
        assert line["key_id"] == str(prod) and line["model"] == "lowrouter/echo"
        assert line["at"] == from_us(row["at_us"]).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
        assert int(line["prompt_tokens"]) == row["prompt_tokens"]
    assert lines[0]["client_ip"] == "'=1+2"  # a spreadsheet shows it, never runs it

    everything = list(csv.DictReader(io.StringIO(browser.get("/dashboard/usage.csv").text)))
    assert len(everything) == 11
    bad = browser.get("/dashboard/usage.csv?since=soon")  # an unusable filter is ignored
    assert bad.status_code == 200 and len(list(csv.DictReader(io.StringIO(bad.text)))) == 11
    assert browser.get("/dashboard/usage?before=" + "9" * 5000).status_code == 200


def test_usage_filters_by_api_and_status_and_the_csv_names_the_api(dash: Dash) -> None:
    import csv
    import io

    account = dash.open_account()
    key = dash.issue_key(account, "claude-code")
    dash.record_usage(account, key, api="messages")
    dash.record_usage(account, key, api="chat.completions")
    dash.record_usage(account, key, api="messages")
    browser = dash.browser().signed_in(account.management_key)
    page = browser.get("/dashboard/usage").text
    assert '<select id="filter-api" name="api">' in page
    assert '<option value="messages">messages</option>' in page
    filtered = browser.get("/dashboard/usage?api=messages").text
    assert 'id="total-completions">2 completions<' in filtered
    assert filtered.count("messages · lowrouter-demo") == 2
    assert "chat.completions · lowrouter-demo" not in filtered
    lines = list(csv.DictReader(io.StringIO(browser.get("/dashboard/usage.csv?api=messages").text)))
    assert [line["api"] for line in lines] == ["messages", "messages"]
    assert {line["cost_source"] for line in lines} == {"reported"}
    assert (
        'id="total-completions">0 completions<'
        in browser.get("/dashboard/usage?api=messages&status=upstream_error").text
    )


def test_the_csv_includes_a_settlement_this_gateway_still_had_queued(dash: Dash) -> None:
    """Settling after the answer: a usage row may still be in the ledger writer's queue when
    the export is asked for. The export waits for the account's queued settlements first
    (ReadSide.ask_after_settlements), as the usage page and the management API do."""
    import csv
    import io
    import threading

    from domain.ledger import LedgerPage

    account = dash.open_account()
    key = dash.issue_key(account, "batch-job")
    browser = dash.browser().signed_in(account.management_key)
    app = dash.runtime.app
    save, settling, landed = app.save, threading.Event(), threading.Event()

    def slow_settlement_save(*aggregates: Any, **kwargs: Any) -> Any:
        if any(
            isinstance(event, LedgerPage.Settled)
            for aggregate in aggregates
            for event in aggregate.pending_events
        ):
            settling.set()
            landed.wait(10)
        return save(*aggregates, **kwargs)

    app.save = slow_settlement_save  # type: ignore[method-assign]
    recorded: list[str] = []
    recording = threading.Thread(target=lambda: recorded.append(dash.record_usage(account, key)))
    recording.start()
    try:
        assert settling.wait(10)  # the settlement is being written, not yet durable
        threading.Timer(0.3, landed.set).start()
        download = browser.get("/dashboard/usage.csv")
    finally:
        landed.set()
        recording.join(10)
        app.save = save  # type: ignore[method-assign]
    lines = list(csv.DictReader(io.StringIO(download.text)))
    assert [line["request_id"] for line in lines] == recorded
