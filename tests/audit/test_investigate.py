"""Leak investigation, end to end on SQLite and PostgreSQL.

A key is used by its owner, leaks, and is used from a second address with another user agent
(completions sent through the gateway app with different client addresses). The responder pastes
the token into `lowrouter investigate - --since T --revoke` (the real executable, token on stdin):
the key is revoked in the same step and the report shows both addresses (the new one flagged),
what was spent between the leak and the revocation, and the models used. The thief tries again
(a 401 through the gateway, recorded as UsedAfterRevocation), and the next report, asked for by
the key's display, shows the attempt. The token is in no output, no log line and nowhere in the
database.
"""

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.keys import ApiKey
from domain.scope import Scope
from infrastructure import cli
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from tests.support.secrets import files_under, pieces_of, spellings, stored_bytes
from tests.support.stores import PEPPER

LOWROUTER = Path(sys.executable).parent / "lowrouter"
OPERATOR = Actor("operator", "cli:test")
CHAT = {"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hello there"}]}
OWNER = ("198.51.100.1", 5000)
THIEF = ("203.0.113.7", 6000)


@dataclass
class Gateway:
    app: Any
    runtime: Runtime
    settings: Settings

    def client(self, address: tuple[str, int]) -> TestClient:
        return TestClient(self.app, client=address)

    def complete(self, client: TestClient, token: str, agent: str) -> Decimal:
        """One completion; returns its cost."""
        response = client.post(
            "/api/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {token}", "User-Agent": agent},
        )
        assert response.status_code == 200, response.text
        return Decimal(str(response.json()["usage"]["cost"]))

    def lowrouter(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")}
        env.update(
            LOWROUTER_TOKEN_PEPPER=PEPPER,
            LOWROUTER_DATA_DIR=str(self.settings.data_dir),
            LOWROUTER_DATABASE_URL=self.settings.database_url,
        )
        return subprocess.run(
            [str(LOWROUTER), *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    """The gateway app; its upstream (the built-in demo) is reached in-process."""
    runtime = open_runtime(settings)
    app = create_app(runtime, demo_catalogue(), run_background=False)
    with TestClient(app, client=OWNER):  # runs the app's startup and shutdown
        yield Gateway(app, runtime, settings)


def test_a_pasted_token_to_a_revoked_key_and_a_timeline(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ledger = gateway.runtime.app
    account = ledger.open_account("acme", OPERATOR, credits=100_000_000).account.id
    issued = ledger.create_key(account, "prod", Scope(), OPERATOR)
    token, display = issued.token.value, issued.token.display
    owner, thief = gateway.client(OWNER), gateway.client(THIEF)

    for _ in range(2):
        gateway.complete(owner, token, "owner-app/1.0")
    time.sleep(0.01)
    leaked_at = datetime.now(UTC)
    time.sleep(0.01)
    stolen = [gateway.complete(thief, token, "curl/8.5") for _ in range(3)]
    after_leak = gateway.complete(owner, token, "owner-app/1.0")

    since = leaked_at.isoformat().replace("+00:00", "Z")
    first = gateway.lowrouter(
        "investigate", "-", "--since", since, "--revoke", "--format", "json", stdin=token + "\n"
    )
    assert first.returncode == 0, first.stderr
    report = orjson.loads(first.stdout)
    assert report["revoked_now"] and report["key"]["status"] == "revoked"
    assert (report["key"]["name"], report["key"]["display"]) == ("prod", display)
    assert report["account"] == {"id": str(account), "name": "acme"}
    revoked = report["lifecycle"][-1]
    assert [e["type"] for e in report["lifecycle"]] == ["Created", "Revoked"]
    assert (revoked["reason"], revoked["actor"]["kind"]) == ("leak", "operator")

    clients = {(c["client_ip"], c["user_agent"]): c for c in report["clients"]}
    assert set(clients) == {(OWNER[0], "owner-app/1.0"), (THIEF[0], "curl/8.5")}
    assert clients[(THIEF[0], "curl/8.5")]["new_since"] is True
    assert clients[(THIEF[0], "curl/8.5")]["requests"] == 3
    assert clients[(OWNER[0], "owner-app/1.0")]["new_since"] is False
    assert report["first_used_at"] < since < report["last_used_at"] < report["until"]

    window = report["spend_in_window"]
    assert window["requests"] == 4
    assert Decimal(window["cost"]) == sum(stolen) + after_leak > 0
    assert sum(Decimal(h["cost"]) for h in report["spend_per_hour"]) == Decimal(window["cost"])
    assert [(m["model"], m["requests"]) for m in report["models"]] == [("lowrouter/echo", 6)]
    assert report["models"][0]["apis"] == ["chat.completions"]  # which APIs the key was used on
    flagged = {(f["kind"], f["subject"]) for f in report["flags"]}
    assert flagged == {("new_address", THIEF[0]), ("new_user_agent", "curl/8.5")}
    assert report["attempts_after_revocation"] == {"count": 0, "attempts": []}

    # The thief tries again: refused, recorded, never charged.
    retry = thief.post(
        "/api/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {token}", "User-Agent": "curl/8.5"},
    )
    assert retry.status_code == 401 and retry.json()["error"]["code"] == "revoked_api_key"

    second = gateway.lowrouter("investigate", display, "--since", since)
    assert second.returncode == 0, second.stderr
    table = second.stdout
    assert OWNER[0] in table and THIEF[0] in table and "NEW since" in table
    assert f"{Decimal(window['cost']):.6f} in 4 requests" in table
    assert "ATTEMPTS AFTER REVOCATION: 1" in table
    attempts = table.split("ATTEMPTS AFTER REVOCATION: 1", 1)[1]
    assert THIEF[0] in attempts.split("UNEXPECTED USAGE")[0]
    assert "first use from address 203.0.113.7" in table

    again = gateway.lowrouter("investigate", str(issued.key.id), "--revoke", "--format", "json")
    assert again.returncode == 0 and "already stopped working" in again.stderr
    assert orjson.loads(again.stdout)["attempts_after_revocation"]["count"] == 1

    # The token is nowhere: not printed, not logged, not stored.
    printed = "".join(run.stdout + run.stderr for run in (first, second, again))
    assert token not in printed and token[6:38] not in printed
    assert display in printed
    logged = caplog.text
    assert token not in logged and token[6:38] not in logged
    stored = stored_bytes(gateway.settings.database_url)
    leaks = [p for p in pieces_of(token) if any(s in stored for s in spellings(p))]
    assert leaks == []
    assert token[6:38].encode() not in files_under(gateway.settings.data_dir, but_not=Path("/"))


def test_a_display_shared_by_several_keys_lists_them_all_and_revokes_none(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = gateway.runtime.app
    account = ledger.open_account("acme", OPERATOR, credits=1_000_000).account
    twins = []
    for n in range(2):  # two keys that happen to share a prefix and last four
        key = ApiKey.create(
            key_id=uuid4(),
            account_id=account.id,
            name=f"twin-{n}",
            token_hash=f"{n:064x}",
            prefix="lr-sk-Twin",
            last4="AbCd",
            scope=Scope(),
            actor=OPERATOR,
            at=ledger.clock(),
        )
        account.add_api_key(key.id, ledger.clock())
        ledger.save(key, account)
        twins.append(str(key.id))
    monkeypatch.setenv("LOWROUTER_TOKEN_PEPPER", PEPPER)
    monkeypatch.setenv("LOWROUTER_DATA_DIR", str(gateway.settings.data_dir))
    url = gateway.settings.database_url

    assert (
        cli.main(["--database-url", url, "investigate", "lr-sk-Twin…AbCd", "--format", "json"]) == 0
    )
    listed = capsys.readouterr()
    assert [m["id"] for m in orjson.loads(listed.out)["matches"]] == twins
    assert "2 keys match" in listed.err

    assert cli.main(["--database-url", url, "investigate", "lr-sk-Twin...AbCd", "--revoke"]) == 1
    refused = capsys.readouterr()
    assert all(twin in refused.out for twin in twins) and "nothing was revoked" in refused.err
    assert all(ledger.get_key(UUID(twin)).revoked_at is None for twin in twins)

    assert cli.main(["--database-url", url, "investigate", "lr-sk-None…AbCd"]) == 1
    assert "no key is shown as lr-sk-None…AbCd" in capsys.readouterr().err
    bad_checksum = "lr-sk-" + "A" * 38
    assert cli.main(["--database-url", url, "investigate", bad_checksum]) == 2
    error = capsys.readouterr().err
    assert bad_checksum not in error and "checksum" in error
