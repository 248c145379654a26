"""The auditors' and operators' commands: `audit` (incl. --verify-balances), `verify`,
`credits adjust`, `usage`, `projections status|rebuild|run` and `reconcile`, on SQLite and
PostgreSQL.

Usage is produced through the application (reserve and settle on the ledger, as the gateway does);
the commands run in-process (`main(argv)`, tests/support/cli.py), and `projections run`, whose
signal handling matters, as the real executable.
"""

import csv
import io
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import delete, text, update

from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from projections.schema import daily_spend, holds, usage
from tests.support.cli import LOWROUTER, Cli, Executable

OPERATOR = Actor("operator", "cli:test")


@pytest.fixture
def runtime(cli: Cli) -> Iterator[Runtime]:
    """The application on the CLI's database, with the CLI's settings (same token pepper)."""
    env = cli.environment()
    opened = open_runtime(load_settings(env, database_url=cli.database_url))
    yield opened
    opened.close()


def spend(
    runtime: Runtime,
    account: UUID,
    key: UUID,
    cost: int,
    *,
    model: str = "a/b",
    name: str = "k",
    address: str = "198.51.100.1",
    settle: bool = True,
) -> str:
    request = f"req-{uuid.uuid4().hex}"
    runtime.spend.reserve(account, request, key, model, cost + 500, None).result()
    if settle:
        runtime.spend.settle(
            account,
            request,
            cost,
            Usage(
                key_name=name,
                model=model,
                provider="p",
                region=None,
                prompt_tokens=3,
                completion_tokens=4,
                status="ok",
                status_code=200,
                latency_ms=12,
                streamed=False,
                client_ip=address,
                user_agent="audit-cli-test/1",
            ),
        ).result()
    return request


def setup_account(runtime: Runtime, name: str = "acme") -> tuple[UUID, UUID, UUID]:
    account = runtime.app.open_account(name, OPERATOR, credits=10_000_000).account.id
    one = runtime.app.create_key(account, "one", Scope(), OPERATOR).key.id
    two = runtime.app.create_key(account, "two", Scope(), OPERATOR).key.id
    return account, one, two


# --verify-balances ------------------------------------------------------------------------------


def test_verify_balances_agrees_and_then_names_each_corrupted_figure(
    runtime: Runtime, cli: Cli
) -> None:
    account, one, two = setup_account(runtime)
    settled = [spend(runtime, account, key, 1000 * n) for n, key in enumerate([one, two, one], 1)]
    spend(runtime, account, two, 400, settle=False)  # an open hold
    runtime.spend.adjust(account, -2500, "mispriced", OPERATOR).result()

    clean = cli.ok("audit", "--verify-balances")
    assert "agrees with the events" in clean.stdout
    assert (
        "acme" in clean.stdout and "9.991500" in clean.stdout
    )  # 10 - 0.006 spent - 0.0025 adjusted
    assert cli.ok("audit", "--verify-balances", "--format", "json").json()["differences"] == []

    with runtime.engine.begin() as conn:
        conn.execute(
            update(daily_spend)
            .where(daily_spend.c.key_id == str(one))
            .values(cost=daily_spend.c.cost + 7)
        )
        conn.execute(delete(usage).where(usage.c.request_id == settled[1]))
        conn.execute(delete(holds))
    found = cli("audit", "--verify-balances", "--format", "json")
    assert found.code == 1 and "differences between the events" in found.stderr
    report = {(d["what"], d["key_id"]): d for d in found.json()["differences"]}
    assert set(report) == {
        ("daily spend (lr_daily_spend)", str(one)),
        ("usage rows (lr_usage)", str(two)),
        ("open holds (lr_holds)", None),
    }
    corrupted = report[("daily spend (lr_daily_spend)", str(one))]
    assert corrupted["from_events"] == "0.004000 in 2 requests"
    assert corrupted["recorded"] == "0.004007 in 2 requests"
    assert report[("usage rows (lr_usage)", str(two))]["recorded"] == "(none)"
    assert report[("open holds (lr_holds)", None)]["from_events"] == "0.000900 in 1 holds"

    table = cli("audit", "--verify-balances")
    assert table.code == 1
    assert "DIFFERENCES" in table.stdout and "0.004007 in 2 requests" in table.stdout
    assert "1 differences" not in table.stdout and "3 differences" in table.stdout

    cli.ok("projections", "rebuild", "usage")
    assert cli.ok("audit", "--verify-balances", "--format", "json").json()["differences"] == []


def test_verify_balances_catches_a_corrupted_snapshot(runtime: Runtime, cli: Cli) -> None:
    account, one, _ = setup_account(runtime)
    for _ in range(3):
        spend(runtime, account, one, 1000)
    from eventsourcing.domain import Snapshot

    from domain.ledger import LedgerPage

    page = runtime.app.repository.get(_page(account))
    assert isinstance(page, LedgerPage)
    page.balance += 1_000_000  # a snapshot that says the account has a credit more
    assert runtime.app.snapshots is not None
    runtime.app.snapshots.put([Snapshot.take(page)])
    found = cli("audit", "--verify-balances", "--format", "json")
    assert found.code == 1
    [difference] = found.json()["differences"]
    assert difference["what"].startswith("balance (ledger page")
    assert (difference["from_events"], difference["recorded"]) == ("9.997000", "10.997000")


def _page(account: UUID) -> UUID:
    from application.clock import system_clock, utc_day
    from domain.ledger import page_id

    return page_id(account, utc_day(system_clock()))


# credits adjust ---------------------------------------------------------------------------------


def test_credits_adjust_is_an_event_in_the_audit_and_the_balance(cli: Cli) -> None:
    cli.ok("accounts", "create", "acme", "--credits", "5")
    adjusted = cli.ok(
        "credits", "adjust", "acme", "-1.25", "--reason", "mispriced req_1", "--format", "json"
    )
    assert (adjusted.json()["adjusted"], adjusted.json()["balance"]) == ("-1.250000", "3.750000")
    back = cli.ok("credits", "adjust", "acme", "+0.25", "--reason", "goodwill", "--format", "json")
    assert back.json()["balance"] == "4.000000"

    audited = cli.ok("audit", "acme", "--format", "json").json()
    events = [e for page in audited["pages"] for e in page["events"] if e["type"] == "Adjusted"]
    assert [(e["amount"], e["reason"]) for e in events] == [
        ("-1.250000", "mispriced req_1"),
        ("0.250000", "goodwill"),
    ]
    assert all(e["actor"]["kind"] == "operator" for e in events)
    books = audited["books"]
    assert (books["funded"], books["adjusted"], books["balance"]) == (
        "5.000000",
        "-1.000000",
        "4.000000",
    )
    table = cli.ok("audit", "acme").stdout
    assert "Adjusted" in table and "reason=mispriced req_1" in table
    assert cli.ok("audit", "--verify-balances").stdout.endswith("agrees with the events\n")

    for code, args in (
        (1, ("acme", "0", "--reason", "nothing")),
        (1, ("acme", "-99", "--reason", "more than there is")),
        (1, ("nobody", "1", "--reason", "no such account")),
        (2, ("acme", "-1")),  # --reason is required
    ):
        refused = cli("credits", "adjust", *args)
        assert refused.code == code and refused.stdout == ""
        assert refused.stderr.startswith("lowrouter: ") and len(refused.stderr.splitlines()) == 1


# usage ------------------------------------------------------------------------------------------


def test_usage_rows_carry_the_key_name_then_filter_and_csv_parses_back(
    runtime: Runtime, cli: Cli
) -> None:
    account, one, two = setup_account(runtime)
    other, stranger, _ = setup_account(runtime, "globex")
    first = spend(runtime, account, one, 1000, name="one", model="a/b")
    runtime.app.rename_key(one, "one-renamed", OPERATOR)
    spend(runtime, account, one, 2000, name="one-renamed", model="c/d")
    spend(runtime, account, two, 3000, name="two", model="a/b")
    spend(runtime, other, stranger, 4000, name="one", address='10.0.0.1",\n; x')

    rows = cli.ok("usage", "--account", "acme", "--format", "json").json()["data"]
    assert [(r["key_name"], r["cost"]) for r in rows] == [
        ("two", "0.003000"),
        ("one-renamed", "0.002000"),
        ("one", "0.001000"),
    ]
    assert rows[-1]["request_id"] == first and rows[-1]["account_id"] == str(account)

    parsed = list(csv.DictReader(io.StringIO(cli.ok("usage", "--format", "csv").stdout)))
    everything = cli.ok("usage", "--format", "json").json()["data"]
    assert len(parsed) == len(everything) == 4
    assert parsed == [{k: _csv(v) for k, v in row.items()} for row in everything]
    # quotes and commas survive; a newline from outside is escaped, never a line of the file
    assert parsed[0]["client_ip"] == '10.0.0.1",\\n; x'

    by_key = cli.ok("usage", "--key", str(one), "--format", "json").json()["data"]
    assert [r["key_name"] for r in by_key] == ["one-renamed", "one"]
    by_model = cli.ok("usage", "--account", "acme", "--model", "c/d", "--format", "json")
    assert [r["cost"] for r in by_model.json()["data"]] == ["0.002000"]
    limited = cli.ok("usage", "--limit", "2", "--format", "json").json()["data"]
    assert limited == everything[:2]
    assert cli.ok("usage", "--since", "1h", "--format", "json").json()["data"] == everything
    assert cli.ok("usage", "--until", "1h", "--format", "json").json()["data"] == []

    table = cli.ok("usage", "--account", "acme").stdout
    assert table.splitlines()[0].split()[:4] == ["AT", "KEY", "API", "MODEL"]
    assert "one-renamed" in table and "3/4" in table and "chat.completions" in table

    assert cli("usage", "--key", str(stranger), "--account", "acme").code == 1
    assert cli("usage", "--since", "yesterday").code == 2
    assert cli("usage", "--format", "jsonl").code == 2


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).replace("\n", "\\n")


# audit ------------------------------------------------------------------------------------------


def test_audit_of_a_key_in_every_format_and_its_usage_errors(runtime: Runtime, cli: Cli) -> None:
    account, one, _ = setup_account(runtime)
    runtime.app.rename_key(one, "renamed", OPERATOR)
    runtime.app.revoke_key(one, Actor("dashboard", "session:eve", "192.0.2.9"), "done")

    table = cli.ok("audit", str(one)).stdout
    assert "Created" in table and "Renamed" in table and "Revoked" in table
    assert "dashboard session:eve from 192.0.2.9" in table
    assert "STATE AT" in table and "revoked" in table

    lines = [
        json.loads(line)
        for line in cli.ok("audit", str(one), "--format", "jsonl").stdout.splitlines()
    ]
    assert [line.get("type") for line in lines] == ["Created", "Renamed", "Revoked", None]
    assert all(line["stream_id"] == str(one) for line in lines[:-1])
    assert lines[-1]["state"]["status"] == "revoked"

    before = cli.ok("audit", str(one), "--as-of", "2000-01-01", "--format", "json").json()
    assert (before["data"], before["state"]) == ([], None)
    assert "did not exist yet" in cli.ok("audit", str(one), "--as-of", "2000-01-01").stdout

    by_account_id = cli.ok("audit", str(account), "--format", "json").json()
    assert by_account_id["kind"] == "account" and by_account_id["name"] == "acme"

    assert cli("audit").code == 2
    assert cli("audit", "acme", "--verify-balances").code == 2
    assert cli("audit", "acme", "--as-of", "not a time").code == 2
    assert cli("audit", "no-such-account").code == 1
    assert cli("audit", "lr-sk-AbCd…wXyZ").code == 1


# projections and reconcile ----------------------------------------------------------------------


def test_projection_status_shows_lag_and_rebuild_catches_up(runtime: Runtime, cli: Cli) -> None:
    account, one, _ = setup_account(runtime)
    runtime.projections.catch_up()
    spend(runtime, account, one, 1000)  # not yet applied to the usage read models
    status = {
        p["name"]: p for p in cli.ok("projections", "status", "--format", "json").json()["data"]
    }
    from projections import all_projections

    assert set(status) == {projection.name for projection in all_projections()}
    assert status["usage"]["lag"] > 0 and status["usage"]["head"] == runtime.projections.head()
    table = cli.ok("projections", "status").stdout
    assert table.splitlines()[0].split() == ["NAME", "POSITION", "HEAD", "LAG", "LAST", "MOVED"]

    rebuilt = cli.ok("projections", "rebuild", "forensics", "--format", "json")
    [forensics] = rebuilt.json()["data"]
    assert forensics["name"] == "forensics" and forensics["events"] == 1
    assert "forensics [" in rebuilt.stderr and "100%" in rebuilt.stderr
    after = cli.ok("projections", "status", "--format", "json").json()["data"]
    assert {p["name"]: p["lag"] for p in after}["forensics"] == 0

    everything = cli.ok("projections", "rebuild")
    assert "gateways refuse" not in everything.stderr  # rebuilt online: nothing is refused
    assert all(
        p["lag"] == 0 for p in cli.ok("projections", "status", "--format", "json").json()["data"]
    )
    assert cli("projections", "rebuild", "nope").code == 2


def test_reconcile_settles_old_holds(cli: Cli, runtime: Runtime) -> None:
    account, one, _ = setup_account(runtime)
    spend(runtime, account, one, 0, settle=False)
    time.sleep(1.1)
    env = cli.environment(LOWROUTER_HOLD_TIMEOUT_SECONDS="1")
    done = cli("reconcile", "--format", "json", env=env)
    assert done.code == 0, done.stderr
    assert done.json() == {"settled": 1, "hold_timeout_seconds": 1.0}
    again = cli.ok("reconcile")
    assert again.stdout.startswith("settled 0 holds")


def test_projections_run_follows_the_log_until_interrupted(
    executable: Executable, runtime: Runtime
) -> None:
    follower = subprocess.Popen(  # a process of its own: SIGINT ends it cleanly
        [str(LOWROUTER), "projections", "run"],
        env=executable.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        account, one, _ = setup_account(runtime)
        spend(runtime, account, one, 1000)
        head = runtime.projections.head()
        deadline = time.monotonic() + 20
        while min(s.position for s in runtime.projections.status()) < head:
            assert time.monotonic() < deadline, "the runner did not catch up"
            assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
            time.sleep(0.05)
    finally:
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=20)
    assert follower.returncode == 0, stderr
    assert "following the event log" in stderr and "stopped at" in stderr
    with runtime.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lr_usage")).scalar_one() == 1


# verify (tamper evidence; the chain itself is tested in tests/audit/test_verify.py) ----------


def delete_event(runtime: Runtime, position: int) -> None:
    postgres = runtime.engine.dialect.name == "postgresql"
    name = runtime.app.recorder.events_table_name  # type: ignore[attr-defined]
    column = "notification_id" if postgres else "rowid"
    with runtime.engine.begin() as conn:
        conn.execute(text(f'DELETE FROM "{name}" WHERE {column} = :p'), {"p": position})


def test_verify_checkpoints_and_names_the_first_tampered_position(
    runtime: Runtime, cli: Cli, tmp_path: Path
) -> None:
    account, one, _ = setup_account(runtime)
    spend(runtime, account, one, 1000)
    checkpoint = tmp_path / "outside" / "checkpoint.json"

    clean = cli.ok("verify", "--checkpoint", str(checkpoint))
    assert "clean" in clean.stdout and "keep the checkpoint outside the database" in clean.stderr
    written = json.loads(checkpoint.read_text())
    assert written["position"] == runtime.projections.head()

    spend(runtime, account, one, 2000)  # the log grows after the checkpoint
    later = cli.ok("verify", "--against", str(checkpoint), "--format", "json").json()
    assert later["ok"] and later["through"] == written["position"]
    assert cli.ok("verify", "--format", "json").json()["through"] == runtime.projections.head()

    delete_event(runtime, 3)
    tampered = cli("verify", "--format", "json")
    assert tampered.code == 1
    assert (tampered.json()["kind"], tampered.json()["position"]) == ("removed", 3)
    against = cli("verify", "--against", str(checkpoint))
    assert against.code == 1 and "position 3" in against.stdout

    refused = tmp_path / "not-written.json"
    assert cli("verify", "--checkpoint", str(refused)).code == 1
    assert not refused.exists()
    assert cli("verify", "--against", str(tmp_path / "missing.json")).code == 1
