"""The key policy from the command line: options on `keys create` and `keys scope`, clearing
them, the catalogue check, and every change in `audit` (also replayed `--as-of`)."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.cli import Cli


def create_key(cli: Cli, account: str, name: str, *options: str) -> dict[str, Any]:
    return cli.ok_json("keys", "create", "--account", account, "--name", name, *options)


def test_policy_options_set_clear_and_show_in_the_audit(cli: Cli) -> None:
    cli.ok("accounts", "create", "acme", "--credits", "5")
    key = create_key(
        cli,
        "acme",
        "p",
        "--expires-in",
        "90d",
        "--rpm",
        "30",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-ip",
        "2001:db8::/32",
        "--monthly-limit",
        "12.5",
    )["data"]
    expires = datetime.fromisoformat(key["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert (key["requests_per_minute"], key["monthly_limit"]) == (30, "12.500000")
    assert key["allowed_ips"] == ["10.0.0.0/8", "2001:db8::/32"]
    time.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    changed = cli.ok_json(
        "keys",
        "scope",
        key["id"],
        "--no-expiry",
        "--any-ip",
        "--max-concurrent",
        "3",
        "--no-monthly-limit",
    )
    assert changed["expires_at"] is None and changed["allowed_ips"] is None
    assert (changed["max_concurrent"], changed["requests_per_minute"]) == (3, 30)
    assert changed["monthly_limit"] is None
    cleared = cli.ok_json("keys", "scope", key["id"], "--no-rate-limits")
    assert (cleared["requests_per_minute"], cleared["max_concurrent"]) == (None, None)

    audit = cli.ok("audit", key["id"]).stdout
    assert audit.count("PolicyChanged") == 3, audit
    replay = cli.ok_json("audit", key["id"], "--as-of", between)
    assert "10.0.0.0/8" in str(replay) and "PolicyChanged" in str(replay)


def test_bad_policy_options_and_unserved_models_change_nothing(cli: Cli) -> None:
    cli.ok("accounts", "create", "acme", "--credits", "5")
    key = create_key(cli, "acme", "p")["data"]
    cli.fails(1, "keys", "scope", key["id"], "--allow-ip", "not-a-network", "--rpm", "5")
    cli.fails(1, "keys", "scope", key["id"], "--expires-at", "2001-01-01T00:00:00Z")
    cli.fails(1, "keys", "scope", key["id"], "--model", "nobody/serves-this")
    cli.fails(2, "keys", "scope", key["id"], "--rpm", "0")
    shown = cli.ok_json("keys", "show", key["id"])
    assert shown["allowed_ips"] is None and shown["requests_per_minute"] is None
    assert shown["expires_at"] is None and shown["models"] is None
