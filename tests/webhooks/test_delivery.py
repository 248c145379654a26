"""Webhooks as an outbox of the event log, on SQLite and PostgreSQL: signed the Standard Webhooks
way, retried with the same id, shown in the delivery log, never sent twice by a rebuild."""

import orjson
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from application.webhooks import new_secret
from domain.webhooks import InvalidWebhook
from infrastructure.runtime import Runtime
from infrastructure.webhooks.vault import secrets_table
from projections.rebuild import rebuild
from projections.webhooks import deliveries_of_endpoint, endpoints_of_account
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import OPERATOR, deliver, make_deliverer, open_account


def test_a_delivery_is_signed_and_verifies_with_the_standardwebhooks_verifier(
    runtime: Runtime, receiver: Receiver
) -> None:
    account = open_account(runtime)
    _, secret = account.subscribe(receiver.url, ["key.created", "key.revoked"])
    key_id, token = account.new_key("ci")
    runtime.app.revoke_key(key_id, OPERATOR)

    assert deliver(runtime, make_deliverer(runtime)) == 2
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in receiver.wait_for(2)]
    assert sorted(b["type"] for b in bodies) == ["key.created", "key.revoked"]
    created = next(b for b in bodies if b["type"] == "key.created")
    assert created["data"]["key"]["id"] == str(key_id)
    assert created["data"]["key"]["name"] == "ci"
    assert set(created) == {"type", "timestamp", "data"}
    assert all(token.encode() not in r.body for r in receiver.received)
    with pytest.raises(Exception, match="signature"):  # another secret does not verify
        Webhook(new_secret()).verify(receiver.received[0].body, receiver.received[0].headers)


def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(receiver.url, ["key.created"])
    account.new_key()

    deliver(runtime, make_deliverer(runtime), passes=4)
    ids = receiver.ids()
    assert len(ids) == 3 and len(set(ids)) == 1
    log = deliveries_of_endpoint(runtime.engine, endpoint_id)
    assert [(d.attempt, d.status_code) for d in log] == [(3, 200), (2, 500), (1, 500)]
    assert log[0].delivered_at is not None and log[0].next_attempt_at is None
    assert log[1].delivered_at is None and log[1].next_attempt_at is not None
    assert {d.event_id for d in log} == set(ids)


def test_a_message_is_given_up_when_the_schedule_ends(
    local_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = local_runtime
    receiver.status = 503
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(receiver.url, ["key.created"])
    account.new_key()
    deliver(runtime, make_deliverer(runtime, schedule=(0.0,)), passes=4)
    assert len(receiver.received) == 2  # the first attempt and the one retry of the schedule
    last, first = deliveries_of_endpoint(runtime.engine, endpoint_id)
    assert (last.attempt, last.status_code, last.next_attempt_at) == (2, 503, None)
    assert first.next_attempt_at is not None


def test_redirects_are_not_followed(local_runtime: Runtime, receiver: Receiver) -> None:
    runtime = local_runtime
    receiver.status = 307
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(receiver.url, ["key.created"])
    account.new_key()
    deliver(runtime, make_deliverer(runtime, schedule=()))
    assert len(receiver.received) == 1
    (attempt,) = deliveries_of_endpoint(runtime.engine, endpoint_id)
    assert attempt.status_code == 307 and attempt.delivered_at is None


@pytest.mark.parametrize("how", ["reset", "online"])
def test_a_projection_rebuild_sends_nothing_twice(
    runtime: Runtime, receiver: Receiver, how: str
) -> None:
    account = open_account(runtime)
    account.subscribe(receiver.url, ["key.created", "key.updated"])
    key_id, _ = account.new_key()
    deliverer = make_deliverer(runtime)
    deliver(runtime, deliverer)
    assert len(receiver.wait_for(1)) == 1

    if how == "reset":
        runtime.projections.reset("webhooks")
    else:
        rebuild(runtime.projections, "webhooks")
    runtime.app.rename_key(key_id, "renamed", OPERATOR)  # one new message after the rebuild
    deliver(runtime, deliverer, passes=2)

    bodies = [orjson.loads(r.body) for r in receiver.received]
    assert [b["type"] for b in bodies] == ["key.created", "key.updated"]
    assert len(set(receiver.ids())) == 2


def test_an_endpoint_gets_only_what_happened_while_it_was_subscribed(
    local_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    account.new_key("before")
    endpoint_id, _ = account.subscribe(receiver.url, ["key.created"])
    account.new_key("during")
    other = open_account(runtime)
    other.new_key("another account's")
    deliverer = make_deliverer(runtime)
    deliver(runtime, deliverer)
    runtime.webhooks.remove(endpoint_id, OPERATOR, account.id)
    account.new_key("after")
    deliver(runtime, deliverer, passes=2)

    names = [orjson.loads(r.body)["data"]["key"]["name"] for r in receiver.received]
    assert names == ["during"]
    assert endpoints_of_account(runtime.engine, account.id) == []


def test_messages_still_pending_when_an_endpoint_is_removed_are_not_sent(
    local_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(receiver.url, ["key.created"])
    account.new_key("pending")
    runtime.webhooks.remove(endpoint_id, OPERATOR, account.id)
    assert deliver(runtime, make_deliverer(runtime)) == 0
    assert receiver.received == []


def test_the_secret_is_stored_encrypted_and_erased_on_removal(
    local_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    endpoint_id, secret = account.subscribe(receiver.url, ["key.created"])
    with runtime.engine.connect() as conn:
        (stored,) = conn.execute(select(secrets_table.c.ciphertext)).scalars().all()
    raw = secret.removeprefix("whsec_")
    assert raw not in stored and secret not in stored
    events = runtime.app.recorder.select_notifications(start=1, limit=10_000)
    assert all(raw.encode() not in n.state for n in events)

    runtime.webhooks.remove(endpoint_id, OPERATOR, account.id)
    with runtime.engine.connect() as conn:
        assert conn.execute(select(secrets_table)).all() == []


def test_private_and_loopback_targets_are_refused_unless_allowed(local_runtime: Runtime) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    refusing = runtime.webhooks
    refusing.check_target = lambda url: __import__(
        "infrastructure.webhooks.targets", fromlist=["check_target"]
    ).check_target(url, False)
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
    ):
        with pytest.raises(InvalidWebhook, match="ALLOW_PRIVATE"):
            refusing.add(account.id, url, ["key.created"], OPERATOR)
    for url, events in (
        ("ftp://example.com/x", ["key.created"]),
        ("https://user:pw@example.com/x", ["key.created"]),
        ("https://example.com/x", ["key.nope"]),
        ("https://example.com/x", []),
    ):
        with pytest.raises(InvalidWebhook):
            refusing.add(account.id, url, events, OPERATOR)
    assert endpoints_of_account(runtime.engine, account.id) == []


def test_a_slow_endpoint_does_not_hold_up_another(local_runtime: Runtime) -> None:
    import asyncio
    import time

    from tests.support.webhook_receiver import run_receiver

    runtime = local_runtime
    with run_receiver() as slow, run_receiver() as fast:
        slow.hang_count, slow.hang_seconds = 100, 3.0
        account = open_account(runtime)
        account.subscribe(slow.url, ["key.created"])
        account.subscribe(fast.url, ["key.created"])
        for number in range(6):  # more messages than the slow endpoint may have in flight
            account.new_key(f"k{number}")
        runtime.projections.catch_up()
        deliverer = make_deliverer(runtime, timeout=5.0)

        async def run() -> float:
            async with deliverer.session() as session:
                started = time.monotonic()
                while len(fast.received) < 6 and time.monotonic() - started < 10:
                    await deliverer.send_due(session)  # as the deliverer's loop does
                    await asyncio.sleep(0.05)
                took = time.monotonic() - started
                await deliverer.wait_idle()
                return took

        took = asyncio.run(run())
    assert len(fast.received) == 6 and took < 3.0  # all sent while the slow one still hangs
    assert len(slow.received) == 4  # at most 4 in flight per endpoint; the rest wait their turn
