"""The webhook routes on a real gateway process: the secret once, the list, the delivery log,
refusals that change nothing, another account's endpoint as missing; and a gateway killed in the
middle of a delivery delivers it after its restart, with the same webhook-id."""

import signal
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from application import management_keys
from infrastructure.runtime import Runtime
from tests.support.processes import gateway_environment, gateway_process
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import OPERATOR, open_account


def management_token(runtime: Runtime, account_id: object) -> str:
    token = management_keys.issue_management_key(runtime.app, account_id, OPERATOR).token  # type: ignore[arg-type]
    return token.value


def test_webhook_routes(local_runtime: Runtime, receiver: Receiver, tmp_path: Path) -> None:
    runtime = local_runtime
    account, other = open_account(runtime), open_account(runtime)
    mine = {"Authorization": f"Bearer {management_token(runtime, account.id)}"}
    theirs = {"Authorization": f"Bearer {management_token(runtime, other.id)}"}
    env = gateway_environment(
        runtime.settings.database_url, tmp_path, LOWROUTER_WEBHOOKS_ALLOW_PRIVATE="true"
    )
    with gateway_process(env) as gateway:
        url = gateway.url
        api = f"{url}/api/v1/webhooks"
        created = httpx.post(
            api, headers=mine, json={"url": receiver.url, "events": ["key.created"]}
        )
        assert created.status_code == 201, created.text
        secret, webhook = created.json()["secret"], created.json()["data"]
        assert secret.startswith("whsec_") and set(webhook) == {"id", "url", "events", "created_at"}
        listed = httpx.get(api, headers=mine).json()["data"]
        assert listed == [webhook] and secret not in httpx.get(api, headers=mine).text
        assert httpx.get(api, headers=theirs).json()["data"] == []

        for body, param in (
            ({"url": receiver.url, "events": ["key.nope"]}, "events"),
            ({"url": "ftp://x.example/", "events": ["key.created"]}, "url"),
            ({"url": receiver.url}, "events"),
            ({"url": receiver.url, "events": ["key.created"], "secret": "x"}, "secret"),
        ):
            refused = httpx.post(api, headers=mine, json=body)
            assert refused.status_code == 422 and refused.json()["error"]["param"] == param
        assert len(httpx.get(api, headers=mine).json()["data"]) == 1

        account.new_key("hello")
        received = receiver.wait_for(1)  # the gateway's own deliverer sent it
        Webhook(secret).verify(received[0].body, received[0].headers)
        deliveries = f"{api}/{webhook['id']}/deliveries"
        log = httpx.get(deliveries, headers=mine).json()["data"]
        while not log or log[0]["attempt"] == 0:  # the attempt is recorded just after the send
            log = httpx.get(deliveries, headers=mine).json()["data"]
        assert [(d["type"], d["attempt"], d["status_code"]) for d in log] == [
            ("key.created", 1, 200)
        ]
        assert log[0]["event_id"] == received[0].headers["webhook-id"]

        assert httpx.get(deliveries, headers=theirs).status_code == 404
        assert httpx.delete(f"{api}/{webhook['id']}", headers=theirs).status_code == 404
        removed = httpx.delete(f"{api}/{webhook['id']}", headers=mine)
        assert removed.status_code == 200 and removed.json()["removed_at"]
        assert httpx.get(api, headers=mine).json()["data"] == []
        assert httpx.delete(f"{api}/{webhook['id']}", headers=mine).status_code == 409


def test_a_gateway_killed_mid_delivery_delivers_after_restart(
    local_runtime: Runtime, receiver: Receiver, tmp_path: Path
) -> None:
    runtime = local_runtime
    receiver.hang_count, receiver.hang_seconds = 1, 10.0  # the first request gets no answer
    account = open_account(runtime)
    endpoint_id, secret = account.subscribe(receiver.url, ["key.created"])
    env = gateway_environment(
        runtime.settings.database_url,
        tmp_path,
        LOWROUTER_WEBHOOKS_TIMEOUT_SECONDS="2",
        LOWROUTER_WEBHOOKS_RETRY_SCHEDULE="0.5",
        LOWROUTER_WEBHOOKS_ALLOW_PRIVATE="true",
    )
    with gateway_process(env) as gateway:
        account.new_key()
        receiver.wait_for(1)
        gateway.process.send_signal(signal.SIGKILL)  # in the middle of the delivery
        gateway.process.wait()
    with gateway_process(env):
        received = receiver.wait_for(2, timeout=20)  # once the dead one's lease has expired
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]
    Webhook(secret).verify(received[1].body, received[1].headers)
    from projections.webhooks import deliveries_of_endpoint

    log = deliveries_of_endpoint(runtime.engine, endpoint_id)
    assert log[0].status_code == 200 and log[0].delivered_at is not None
    assert len(log) <= 2  # 1; 2 if the killed attempt timed out before the kill and was recorded
