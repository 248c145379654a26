"""GitHub's secret-scanning partner endpoint, end to end on two gateway processes and a test key
pair: a valid report of a live key revokes it (the next request on the other process is a 401),
records where it was found and sends a signed `key.leaked`; a bad signature is a 401 and changes
nothing; unknown and malformed tokens are false positives; a repeated report changes nothing."""

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from standardwebhooks.webhooks import Webhook

from application.leaks import handle_leak
from domain.tokens import TokenKind, generate_token
from infrastructure.http.secret_scanning import GITHUB
from infrastructure.runtime import Runtime
from tests.support.processes import gateway_environment, gateway_process
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import open_account

KEY_ID = "github-test-key-1"
LEAK_URL = "https://github.com/acme/app/blob/abc123/config.py#L3"


@pytest.fixture
def github_key(tmp_path: Path) -> Iterator[tuple[ec.EllipticCurvePrivateKey, Path]]:
    private = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())  # published too, but not the signer
    document = {
        "public_keys": [
            {"key_identifier": "old-key", "key": _pem(other), "is_current": False},
            {"key_identifier": KEY_ID, "key": _pem(private), "is_current": True},
        ]
    }
    path = tmp_path / "github_keys.json"
    path.write_bytes(orjson.dumps(document))
    yield private, path


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signed(private: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    signature = private.sign(body, ec.ECDSA(hashes.SHA256()))
    return {
        "Github-Public-Key-Identifier": KEY_ID,
        "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
        "Content-Type": "application/json",
    }


def head(runtime: Runtime) -> int:
    return int(runtime.app.recorder.max_notification_id() or 0)


def test_a_report_revokes_the_key_on_every_process_and_tells_the_owner(
    pg_runtime: Runtime,
    receiver: Receiver,
    github_key: tuple[ec.EllipticCurvePrivateKey, Path],
    tmp_path: Path,
) -> None:
    runtime = pg_runtime
    private, keys_file = github_key
    account = open_account(runtime)
    _, secret = account.subscribe(receiver.url, ["key.leaked", "key.revoked"])
    key_id, token = account.new_key("leaky")
    env = gateway_environment(
        runtime.settings.database_url,
        tmp_path,
        LOWROUTER_GITHUB_SCANNING_KEYS=str(keys_file),
        LOWROUTER_WEBHOOKS_ALLOW_PRIVATE="true",
    )
    with gateway_process(env) as reporter, gateway_process(env) as other:
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{other.url}/api/v1/key", headers=bearer).status_code == 200
        good_wrong_checksum = token[:-1] + ("A" if token[-1] != "A" else "B")
        report = orjson.dumps(
            [
                {"token": token, "type": "lowrouter_api_key", "url": LEAK_URL, "source": "content"},
                {"token": generate_token(TokenKind.INFERENCE).value, "type": "t", "url": "u"},
                {"token": "lr-sk-not-a-key", "type": "t", "url": "u", "source": "commit"},
                {"token": good_wrong_checksum, "type": "t", "url": "u", "source": "commit"},
            ]
        )
        endpoint = f"{reporter.url}/api/v1/secret-scanning/github"

        # A bad signature (another key's, a tampered body, none at all) changes nothing.
        before = head(runtime)
        for headers in (
            {**signed(private, report), "Github-Public-Key-Identifier": "old-key"},
            signed(private, report + b" "),
            {"Content-Type": "application/json"},
        ):
            answer = httpx.post(endpoint, content=report, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "invalid_signature"
        assert head(runtime) == before
        assert httpx.get(f"{other.url}/api/v1/key", headers=bearer).status_code == 200

        # A valid report: one true positive, three false ones; the key stops everywhere.
        answer = httpx.post(endpoint, content=report, headers=signed(private, report))
        assert answer.status_code == 200, answer.text
        labels = [(a["token_type"], a["label"]) for a in answer.json()]
        assert labels == [
            ("lowrouter_api_key", "true_positive"),
            ("t", "false_positive"),
            ("t", "false_positive"),
            ("t", "false_positive"),
        ]
        refused = httpx.get(f"{other.url}/api/v1/key", headers=bearer)
        assert refused.status_code == 401

        # GitHub repeats itself: same answers, nothing new in the log.
        after = head(runtime)
        again = httpx.post(endpoint, content=report, headers=signed(private, report))
        assert [a["label"] for a in again.json()] == [a["label"] for a in answer.json()]
        assert head(runtime) == after

        # The owner's endpoint gets a signed key.leaked: the gateways' deliverers send it, so it
        # is awaited while they run (stopping them first raced the delivery).
        received = receiver.wait_for(2)

    events = runtime.app.get_key(key_id)
    assert events.revoke_reason == "leak"
    history = list(runtime.app.events.get(key_id))
    leak = next(e for e in history if type(e).__name__ == "LeakReported")
    (revoked,) = [e for e in history if type(e).__name__ == "Revoked"]
    assert (leak.url, leak.source) == (LEAK_URL, "content")
    assert revoked.actor["name"] == "GitHub secret scanning" and revoked.reason == "leak"
    assert history.index(leak) < history.index(revoked)

    bodies = [Webhook(secret).verify(r.body, r.headers) for r in received]
    leaked = next(b for b in bodies if b["type"] == "key.leaked")
    assert leaked["data"]["url"] == LEAK_URL and leaked["data"]["key"]["id"] == str(key_id)
    assert {b["type"] for b in bodies} == {"key.leaked", "key.revoked"}
    assert all(token.encode() not in r.body for r in received)


def test_under_the_notify_policy_a_report_records_but_does_not_revoke(
    local_runtime: Runtime,
) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    key_id, _ = account.new_key()
    outcome = handle_leak(runtime.app, key_id, LEAK_URL, "content", GITHUB, "notify")
    assert outcome.recorded and not outcome.revoked_now
    assert runtime.app.get_key(key_id).status_at(runtime.app.clock()) == "active"
    repeat = handle_leak(runtime.app, key_id, LEAK_URL, "content", GITHUB, "notify")
    assert not repeat.recorded
    other_place = handle_leak(runtime.app, key_id, LEAK_URL + "x", "content", GITHUB, "revoke")
    assert other_place.recorded and other_place.revoked_now


def test_investigate_and_the_audit_show_where_the_key_leaked(
    local_runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from infrastructure.cli import main

    runtime = local_runtime
    account = open_account(runtime)
    key_id, token = account.new_key("leaky")
    handle_leak(runtime.app, key_id, LEAK_URL, "content", GITHUB, "revoke")
    monkeypatch.setenv("LOWROUTER_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("LOWROUTER_TOKEN_PEPPER", runtime.settings.pepper.decode())
    monkeypatch.setenv("LOWROUTER_DATA_DIR", str(runtime.settings.data_dir))
    capsys.readouterr()

    assert main(["investigate", str(key_id), "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    lifecycle = [(e["type"], e.get("url"), e.get("reason")) for e in report["lifecycle"]]
    assert ("LeakReported", LEAK_URL, None) in lifecycle
    assert lifecycle[-1] == ("Revoked", None, "leak")
    assert report["key"]["status"] == "revoked"

    assert main(["investigate", str(key_id)]) == 0  # the table names the URL too
    table = capsys.readouterr().out
    assert "LeakReported" in table and "github.com/acme/app" in table and token not in table
    assert main(["audit", str(key_id), "--format", "json"]) == 0
    assert LEAK_URL in capsys.readouterr().out


def test_reports_are_answered_per_token_and_a_leaked_management_key_is_revoked(
    local_runtime: Runtime,
) -> None:
    from application.leaks import FoundKey, LeakReport, handle_reports
    from domain.tokens import hash_token, parse_token
    from projections.queries.forensics import match_of_token_hash

    runtime = local_runtime
    name = f"mk-{uuid.uuid4().hex[:8]}"
    opened = runtime.app.open_account(name, GITHUB, credits=1)
    mk = opened.token.value

    def find(token_hash: str) -> FoundKey | None:
        match = match_of_token_hash.run(runtime.engine, token_hash)
        return FoundKey(match.kind, UUID(match.key_id), UUID(match.account_id)) if match else None

    reports = [LeakReport(mk, LEAK_URL, "content"), LeakReport("lr-mk-short", "", "")]
    assert handle_reports(runtime.app, find, reports, GITHUB, "revoke") == [True, False]
    token_hash = hash_token(runtime.app.pepper, parse_token(mk))
    record = match_of_token_hash.run(runtime.engine, token_hash)
    assert record is not None and record.status == "revoked"
    assert handle_reports(runtime.app, find, reports, GITHUB, "revoke") == [True, False]
