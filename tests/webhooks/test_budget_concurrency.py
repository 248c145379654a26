"""`budget.threshold` fires exactly once per threshold when 200 concurrent requests from two
gateway processes (on one PostgreSQL) cross a key's daily limit: the ledger orders the events,
the outbox reads them in that order, and each message has one id however many processes run
the projection and the deliverer."""

import asyncio
import time
from pathlib import Path

import orjson
from sqlalchemy import select

from domain.scope import Scope
from infrastructure.runtime import Runtime
from projections.webhooks import delivery_state, messages
from tests.support.processes import (
    fire,
    gateway_environment,
    gateway_process,
    worst_case_of_one_request,
)
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import open_account


def test_budget_threshold_fires_once_per_threshold_under_200_concurrent_requests(
    pg_runtime: Runtime, receiver: Receiver, tmp_path: Path
) -> None:
    runtime = pg_runtime
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(receiver.url, ["budget.threshold"])
    limit = worst_case_of_one_request() * 40  # room for about 40 requests' holds
    key_id, token = account.new_key("busy", Scope(daily_limit=limit))
    env = gateway_environment(
        runtime.settings.database_url, tmp_path, LOWROUTER_WEBHOOKS_ALLOW_PRIVATE="true"
    )
    with gateway_process(env) as first, gateway_process(env) as second:
        statuses = asyncio.run(fire([f"{first.url}/api/v1", f"{second.url}/api/v1"], [token], 200))
        assert statuses.count(200) >= 40 and statuses.count(429) > 0, sorted(set(statuses))
        assert statuses.count(200) + statuses.count(429) == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receiver.received) < 3:
            time.sleep(0.1)
        time.sleep(1.0)  # both processes' deliverers had time to send anything twice

    runtime.projections.catch_up()
    with runtime.engine.connect() as conn:
        owed = conn.execute(
            select(messages.c.message_id, delivery_state.c.delivered_us)
            .outerjoin(delivery_state, delivery_state.c.message_id == messages.c.message_id)
            .where(messages.c.endpoint_id == str(endpoint_id))
        ).all()
    assert len(owed) == 3 and all(row.delivered_us is not None for row in owed)
    percents = sorted(orjson.loads(r.body)["data"]["percent"] for r in receiver.received)
    assert percents == [50, 80, 100]
    assert sorted(receiver.ids()) == sorted(row.message_id for row in owed)
    assert all(orjson.loads(r.body)["data"]["key"]["id"] == str(key_id) for r in receiver.received)
