"""No value from outside can stop the read side: an upstream's absurd usage is bounded before it
becomes an event, every projection keeps following, and other accounts are unaffected."""

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from projections.schema import projection_failures, usage
from tests.security.hostile import completion, hostile_gateway


def settled(runtime: Any, request_id: str) -> None:
    """Until the request's usage row is projected: its settlement lands just after the answer."""
    deadline = time.monotonic() + 10
    query = select(usage.c.request_id).where(usage.c.request_id == request_id)
    while time.monotonic() < deadline:
        runtime.projections.catch_up()
        with runtime.engine.connect() as conn:
            if conn.execute(query).first() is not None:
                return
        time.sleep(0.05)


CHAT = {"model": "hostile/model", "messages": [{"role": "user", "content": "hi"}]}


def test_a_two_to_the_63_usage_answer_is_recorded_safely_and_nothing_stops(
    tmp_path: Path, database_url: str
) -> None:
    with hostile_gateway(tmp_path, database_url) as (gateway, upstream):
        _, _, victim_token = gateway.account("poisoner")
        _, other_mk, other_token = gateway.account("bystander")
        upstream.answer = completion({"prompt_tokens": 2**63, "completion_tokens": 2**63})
        auth = {"Authorization": f"Bearer {victim_token}"}
        poisoned = httpx.post(gateway.api + "/chat/completions", json=CHAT, headers=auth)
        assert poisoned.status_code == 200, poisoned.text
        request_id = poisoned.headers["x-request-id"]

        runner = gateway.runtime.projections
        settled(gateway.runtime, request_id)
        runner.catch_up()
        head = runner.head()
        assert all(status.position == head for status in runner.status()), runner.status()
        with gateway.runtime.engine.connect() as conn:
            assert conn.execute(select(projection_failures)).all() == []
            row = conn.execute(select(usage).where(usage.c.request_id == request_id)).one()
        assert 0 < row.completion_tokens < 2**62 and 0 < row.prompt_tokens < 2**62
        assert "implausible_usage" in row.flags and "over_hold" in row.flags
        assert row.cost == row.held  # charged the hold, never more

        # Another account: reads, writes and completions all still work.
        upstream.answer = completion({"prompt_tokens": 1, "completion_tokens": 1})
        other = {"Authorization": f"Bearer {other_mk}"}
        listed = httpx.get(gateway.api + "/keys", headers=other)
        assert listed.status_code == 200, listed.text
        key_id = listed.json()["data"][0]["id"]
        served = httpx.post(
            gateway.api + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {other_token}"},
        )
        assert served.status_code == 200, served.text
        assert httpx.delete(f"{gateway.api}/keys/{key_id}", headers=other).status_code == 200
        assert httpx.get(gateway.url + "/healthz").status_code == 200
        runner.catch_up()
        assert all(status.position == runner.head() for status in runner.status())


def test_a_failing_usage_projection_stops_neither_access_nor_writes_nor_the_chain(
    tmp_path: Path, database_url: str
) -> None:
    from infrastructure.chain.store import catch_up_chain, chain_position

    with hostile_gateway(tmp_path, database_url) as (gateway, _upstream):
        runtime = gateway.runtime
        _, mk, token = gateway.account("isolated")
        usage_projection = runtime.projections.projections["usage"]
        healthy_apply = usage_projection.apply

        def broken(*_args: object) -> None:
            raise RuntimeError("a bug in the usage projection")

        usage_projection.apply = broken  # type: ignore[method-assign]
        try:
            auth = {"Authorization": f"Bearer {token}"}
            assert httpx.post(gateway.api + "/chat/completions", json=CHAT, headers=auth).is_success
            manage = {"Authorization": f"Bearer {mk}"}
            created = httpx.post(gateway.api + "/keys", json={"name": "new"}, headers=manage)
            assert created.status_code == 201, created.text
            fresh = {"Authorization": f"Bearer {created.json()['key']}"}
            assert httpx.get(gateway.api + "/key", headers=fresh).status_code == 200
            key_id = created.json()["data"]["id"]
            revoked = httpx.delete(f"{gateway.api}/keys/{key_id}", headers=manage)
            assert revoked.status_code == 200, revoked.text  # never a 503 after the write
            assert httpx.get(gateway.api + "/key", headers=fresh).status_code == 401
            assert httpx.get(gateway.api + "/keys", headers=manage).status_code == 200
            assert httpx.get(gateway.url + "/healthz").status_code == 200
            try:
                runtime.projections.catch_up()
            except Exception as failure:
                assert "usage" in str(failure)
            head = runtime.projections.head()
            assert runtime.projections.position("keys") == head
            assert runtime.projections.position("forensics") == head
            assert runtime.projections.position("usage") < head
            assert runtime.projections.failure is None  # access is still judged
            runtime.reconcile()  # the reconciler still runs
            catch_up_chain(runtime)
            assert chain_position(runtime.engine) == runtime.projections.head()
        finally:
            usage_projection.apply = healthy_apply  # type: ignore[method-assign]
        runtime.projections.catch_up()  # fixed: it follows again from where it stopped
        assert runtime.projections.position("usage") == runtime.projections.head()
        assert runtime.projections.failures == {}
