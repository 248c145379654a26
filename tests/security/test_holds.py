"""Holds are true upper bounds, end to end (issue 15): what reached a (hostile) upstream is the
cap the gateway held for, fields outside the API's schema are refused before anything is held,
and an upstream that still reports more than the hold shows it everywhere."""

from pathlib import Path

import httpx
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from domain.money import parse_credits
from infrastructure.webhooks.wiring import start_deliverer
from projections.queries.forensics import flags_for_keys
from projections.schema import usage
from tests.security.hostile import OPERATOR, completion, hostile_gateway
from tests.support.webhook_receiver import run_receiver


def chat(**fields: object) -> dict[str, object]:
    return {"model": "hostile/model", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_the_held_cap_is_what_reaches_the_upstream_and_other_fields_are_refused(
    tmp_path: Path, database_url: str
) -> None:
    with hostile_gateway(tmp_path, database_url, provider_lines='extra_fields = ["top_k"]') as (
        gateway,
        upstream,
    ):
        account_id, _, token = gateway.account("capped")
        auth = {"Authorization": f"Bearer {token}"}
        url = gateway.api + "/chat/completions"

        # No cap from the client: the model's cap (1000) is sent, in both fields.
        assert httpx.post(url, json=chat(), headers=auth).status_code == 200
        sent = upstream.received[-1]
        assert (sent["max_tokens"], sent["max_completion_tokens"]) == (1000, 1000)

        # The finding's pair: held for 1 token, so 1 is what every cap field says.
        pair = chat(max_completion_tokens=1, max_tokens=100_000, top_k=3)
        assert httpx.post(url, json=pair, headers=auth).status_code == 200
        sent = upstream.received[-1]
        assert (sent["max_tokens"], sent["max_completion_tokens"], sent["top_k"]) == (1, 1, 3)

        # llama.cpp's n_predict steers length behind the hold: refused, nothing held or sent.
        before = len(upstream.received)
        refused = httpx.post(url, json=chat(n_predict=100_000), headers=auth)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "n_predict")
        assert "n_predict" in error["message"]
        for steering in ({"models": ["x/y"]}, {"provider": {"order": ["x"]}}, {"plugins": []}):
            assert httpx.post(url, json=chat(**steering), headers=auth).status_code == 400
        # A built-in tool bills per call beyond the prices: refused unless the provider lists it.
        tooled = httpx.post(url, json=chat(tools=[{"type": "web_search"}]), headers=auth)
        assert tooled.status_code == 400, tooled.text
        assert tooled.json()["error"]["param"] == "tools.web_search"
        assert len(upstream.received) == before
        gateway.runtime.projections.catch_up()
        with gateway.runtime.engine.connect() as conn:
            rows = conn.execute(
                select(usage.c.request_id).where(usage.c.account_id == str(account_id))
            ).all()
        assert len(rows) == 2  # the refused requests held and recorded nothing


def test_usage_beyond_the_hold_shows_in_the_usage_api_metrics_and_alerts(
    tmp_path: Path, database_url: str
) -> None:
    with hostile_gateway(tmp_path, database_url) as (gateway, upstream):
        _, mk, token = gateway.account("overrun")
        upstream.answer = completion({"prompt_tokens": 10, "completion_tokens": 50_000})
        auth = {"Authorization": f"Bearer {token}"}
        served = httpx.post(
            gateway.api + "/chat/completions", json=chat(max_tokens=10), headers=auth
        )
        assert served.status_code == 200, served.text

        gateway.runtime.projections.catch_up()
        [row] = httpx.get(gateway.api + "/usage", headers={"Authorization": f"Bearer {mk}"}).json()[
            "data"
        ]
        # held: prompt bound at 1.00 + 10 tokens at 2.00; real: 10 + 50,000 tokens
        assert row["over_hold"] is True
        real, charged = 10 * 1 + 50_000 * 2, parse_credits(row["cost"])  # micro-credits
        assert parse_credits(row["unbilled"]) == real - charged > 0

        metrics = httpx.get(gateway.url + "/metrics").text
        assert 'lowrouter_over_hold_total{model="hostile/model"}' in metrics
        assert 'lowrouter_unbilled_credits_total{model="hostile/model"}' in metrics

        flags = flags_for_keys.run(gateway.runtime.engine, [row["key_id"]])[row["key_id"]]
        [flag] = [f for f in flags if f.kind == "over_hold"]
        assert (flag.subject, flag.amount) == (row["request_id"], real - charged)
        assert "served and not charged" in flag.describe()


def test_usage_beyond_the_hold_raises_the_usage_unexpected_webhook(
    tmp_path: Path, sqlite_url: str
) -> None:
    """End to end: a hostile upstream's usage over the hold is served, the forensics projection
    flags it, and the deliverer a gateway runs sends the owner a signed `usage.unexpected`."""
    env = {"LOWROUTER_WEBHOOKS_ALLOW_PRIVATE": "true"}
    with (
        run_receiver() as receiver,
        hostile_gateway(tmp_path, sqlite_url, env) as (gateway, upstream),
    ):
        runtime = gateway.runtime
        account_id, _, token = gateway.account("overrun")
        secret = runtime.webhooks.add(account_id, receiver.url, ["usage.unexpected"], OPERATOR)
        upstream.answer = completion({"prompt_tokens": 10, "completion_tokens": 50_000})
        served = httpx.post(
            gateway.api + "/chat/completions",
            json=chat(max_tokens=10),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert served.status_code == 200, served.text

        runtime.projections.catch_up()
        deliverer = start_deliverer(runtime)
        try:
            [request] = receiver.wait_for(1)
        finally:
            deliverer.stop()
    event = Webhook(secret.secret).verify(request.body, request.headers)
    assert event["type"] == "usage.unexpected"
    flag = event["data"]["flag"]
    assert flag["kind"] == "over_hold"
    assert flag["subject"] == served.headers["x-request-id"]
