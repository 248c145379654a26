"""`lowrouter serve --workers 2` under LOWROUTER_LOG_FORMAT=json, after a known mix of requests:
/metrics (parsed with prometheus_client's parser) counts exactly what was sent, summed over
both workers, and its charged credits equal the usage history's total; /readyz follows the
background process's death and restart; every log line of the whole run is JSON, each request
line matches its usage row, and no token appears anywhere."""

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from domain.money import MICRO, format_credits
from domain.tokens import display_of
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from projections.schema import usage
from tests.fake_upstream import run_fake_upstream, write_catalogue
from tests.observability.serving import eventually, issue_key, serving
from tests.support.processes import background_pid
from tests.support.secrets import pieces_of
from tests.support.stores import PEPPER

HELLO = [{"role": "user", "content": "Hello there"}]
METRICS_TOKEN = "scrape-secret-for-tests"
API = "chat.completions"


def samples(text: str, name: str) -> list[Any]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_and_json_logs_of_two_workers_after_a_known_mix(
    tmp_path: Path, postgres_url: str
) -> None:
    runtime = open_runtime(
        load_settings({"LOWROUTER_TOKEN_PEPPER": PEPPER}, database_url=postgres_url),
        prepare_schema=False,
    )
    try:
        account_id, token = issue_key(runtime, "observed", 100 * MICRO)
        broke_account_id, broke_token = issue_key(runtime, "broke", 0)
        with run_fake_upstream() as upstream:
            catalogue = write_catalogue(
                tmp_path / "lowrouter.toml", upstream.base_url, modes=("ok", "error500")
            )
            env = {"LOWROUTER_LOG_FORMAT": "json", "LOWROUTER_METRICS_TOKEN": METRICS_TOKEN}
            with serving(tmp_path, postgres_url, catalogue, workers=2, env=env) as served:
                statuses, request_ids = send_the_mix(served.url, token, broke_token)
                until_both_workers_served(served, token, statuses, request_ids)
                scrape = scrape_metrics(served.url)
                second_scrape = scrape_metrics(served.url)  # whichever worker answers
                readiness_follows_the_background_process(served)
            stdout, stderr = served.output()
        rows = usage_rows(runtime, statuses[200] + statuses[502])
    finally:
        runtime.close()

    # --- the metrics count what was sent, over both workers -----------------------------------
    answered = statuses[200]  # 7 in the mix, and a few more until both workers served
    assert answered >= 7
    assert statuses - Counter({200: answered}) == Counter({502: 1, 401: 1, 402: 1})
    sent = sum(statuses.values())
    for status, count in statuses.items():
        assert total(scrape, "lowrouter_requests_total", api=API, status=str(status)) == count
    assert total(scrape, "lowrouter_requests_total", api=API, model="fake/ok") == answered
    assert total(scrape, "lowrouter_refusals_total", reason="invalid_api_key") == 1
    assert total(scrape, "lowrouter_refusals_total", reason="insufficient_credits") == 1
    assert total(scrape, "lowrouter_refusals_total", reason="invalid_metrics_token") == 2
    assert total(scrape, "lowrouter_refusals_total") == 4  # the two scrapes without the token
    assert total(scrape, "lowrouter_upstream_errors_total", provider="fake-us") == 1
    assert total(scrape, "lowrouter_overhead_seconds_count", api=API) == sent
    assert total(scrape, "lowrouter_request_duration_seconds_count", api=API) == sent
    assert total(second_scrape, "lowrouter_requests_total", api=API) == sent
    # Charged credits are the usage history's total, exactly (to the micro-credit).
    charged = total(scrape, "lowrouter_charged_credits_total")
    assert sum(row.cost for row in rows) > 0
    assert round(charged * MICRO) == sum(row.cost for row in rows)
    assert round(total(scrape, "lowrouter_charged_credits_total", model="fake/ok") * MICRO) == (
        sum(row.cost for row in rows if row.model == "fake/ok")
    )
    # The ledger: a reservation and a settlement per answer and failure, and the refused one.
    assert total(scrape, "lowrouter_ledger_commit_seconds_count") >= 1
    assert total(scrape, "lowrouter_ledger_batch_commands_sum") >= 2 * (answered + 1) + 1
    lag = {s.labels["projection"] for s in samples(scrape, "lowrouter_projection_lag_events")}
    assert {"keys", "usage"} <= lag
    assert samples(scrape, "lowrouter_open_holds")
    # Sub-millisecond buckets exist for the overhead.
    buckets = {float(s.labels["le"]) for s in samples(scrape, "lowrouter_overhead_seconds_bucket")}
    assert {0.0001, 0.00025, 0.0005} <= buckets

    # --- every log line is JSON; request lines match the usage rows; no token anywhere --------
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert stdout.strip() == ""  # even the start-up banner went to the JSON log
    assert any(line.get("event") == "startup" for line in lines)
    assert any(line.get("event") == "background_restart" for line in lines)
    requests = {
        line["request_id"]: line
        for line in lines
        if line.get("event") == "request" and line["path"] == "/api/v1/chat/completions"
    }
    assert set(requests) == set(request_ids)
    assert len({line["pid"] for line in requests.values()}) == 2, "both workers served"
    by_request = {row.request_id: row for row in rows}
    assert len(by_request) == answered + 1  # each reserved request settled once
    for request_id, row in by_request.items():
        line = requests[request_id]
        assert line["status"] == row.status_code
        assert line["key"] == display_of(token)
        assert line["account_id"] == account_id == row.account_id
        assert line["model"] == row.model
        assert line["provider"] == row.provider
        assert line["cost"] == format_credits(row.cost)
        assert line["client_ip"] == row.client_ip
        assert line["latency_ms"] >= row.latency_ms
        assert 0 <= line["overhead_ms"] <= line["latency_ms"]
    refused = [line for line in requests.values() if line["status"] == 402]
    assert [line["account_id"] for line in refused] == [broke_account_id]
    failed = [line for line in lines if line.get("event") == "upstream_error"]
    assert len(failed) == 1 and failed[0]["request_id"] in requests
    for secret in (token, broke_token):  # the token, and any 12 characters of its random part
        for piece in pieces_of(secret):
            for text in (stdout, stderr, scrape):
                assert piece not in text


def send_the_mix(url: str, token: str, broke_token: str) -> tuple[Counter[int], list[str]]:
    """5 answers, 2 streams, 1 upstream failure, 2 refusals; each on a new connection, so
    both workers take some."""
    api = url + "/api/v1/chat/completions"
    auth = {"Authorization": f"Bearer {token}"}
    statuses: Counter[int] = Counter()
    request_ids = []

    def sent(response: httpx.Response) -> None:
        statuses[response.status_code] += 1
        request_ids.append(response.headers["x-request-id"])
        assert float(response.headers["x-lowrouter-overhead-ms"]) >= 0

    for _ in range(5):
        answer = httpx.post(api, headers=auth, json={"model": "fake/ok", "messages": HELLO})
        sent(answer)
        cost = json.loads(answer.text, parse_float=Decimal)["usage"]["cost"]  # exact digits
        assert Decimal(answer.headers["x-lowrouter-cost"]) == cost > 0
    for _ in range(2):
        body = {"model": "fake/ok", "messages": HELLO, "stream": True}
        with httpx.stream("POST", api, headers=auth, json=body) as stream:
            assert b"[DONE]" in stream.read()
            assert "x-lowrouter-cost" not in stream.headers
            sent(stream)
    sent(httpx.post(api, headers=auth, json={"model": "fake/error500", "messages": HELLO}))
    bad = {"Authorization": "Bearer lr-sk-not-a-real-token"}
    sent(httpx.post(api, headers=bad, json={"model": "fake/ok", "messages": HELLO}))
    broke = {"Authorization": f"Bearer {broke_token}"}
    sent(httpx.post(api, headers=broke, json={"model": "fake/ok", "messages": HELLO}))
    return statuses, request_ids


def until_both_workers_served(
    served: Any, token: str, statuses: Counter[int], request_ids: list[str]
) -> None:
    """Sequential requests may all land on one worker: add concurrent answers (counted like
    the mix) until the request lines show both workers' process ids."""
    api = served.url + "/api/v1/chat/completions"
    auth = {"Authorization": f"Bearer {token}"}

    def one(_: int) -> httpx.Response:
        return httpx.post(api, headers=auth, json={"model": "fake/ok", "messages": HELLO})

    deadline = time.monotonic() + 30  # the second worker may still be starting
    while time.monotonic() < deadline:
        pids = {
            line["pid"]
            for line in map(json.loads, served.stderr.read_text().splitlines())
            if line.get("event") == "request"
        }
        if len(pids) >= 2:
            return
        with ThreadPoolExecutor(4) as pool:
            for response in pool.map(one, range(4)):
                assert response.status_code == 200
                statuses[200] += 1
                request_ids.append(response.headers["x-request-id"])
        time.sleep(0.2)


def readiness_follows_the_background_process(served: Any) -> None:
    """/readyz: 503 once the background process died (killed), 200 once `serve` restarted it."""
    ready = eventually(served.url, 200)
    assert ready.status_code == 200, ready.text
    first = background_pid(served.process.pid)
    os.kill(first, signal.SIGKILL)  # `serve` restarts it after a delay
    down = eventually(served.url, 503, timeout=5)
    assert down.status_code == 503, down.text
    assert down.json()["checks"]["background"].startswith("no process runs the projections")
    assert down.json()["checks"]["store"] == "ok"
    assert httpx.get(served.url + "/healthz").status_code == 200  # alive all the same
    assert background_pid(served.process.pid, not_this=first) != first
    back = eventually(served.url, 200)
    assert back.status_code == 200, back.text


def scrape_metrics(url: str) -> str:
    assert httpx.get(url + "/metrics").status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert httpx.get(url + "/metrics", headers=wrong).status_code == 401
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def usage_rows(runtime: Any, expected: int) -> list[Any]:
    """Every usage row of the run, once the projection has them all."""
    deadline = time.monotonic() + 10
    while True:
        runtime.projections.catch_up(["usage"])
        with runtime.engine.connect() as conn:
            rows = list(conn.execute(select(usage)).all())
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
