"""The operator CLI end to end, on SQLite and PostgreSQL: `main(argv)` in this process, and the
installed `lowrouter` executable once (its exit codes and stderr).

Exit codes: 0 ok, 1 refused (the domain said no, including a negative, zero or non-numeric
amount), 2 usage error (unknown command or option, malformed key id, unsupported --format,
bad database URL).
"""

import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from domain.tokens import TokenKind, generate_token
from tests.support.cli import Cli, Executable

TOKEN = re.compile(r"lr-(?:sk|mk)-[0-9A-Za-z]{38}")
SCOPE_FIELDS = ("models", "region", "daily_limit")


def tokens_in(text: str) -> list[str]:
    return TOKEN.findall(text)


def open_account(cli: Cli, name: str = "acme", credits: str = "5") -> dict[str, Any]:
    return cli.ok_json("accounts", "create", name, "--credits", credits)


def create_key(cli: Cli, account: str, name: str, *scope: str) -> dict[str, Any]:
    return cli.ok_json("keys", "create", "--account", account, "--name", name, *scope)


def display_of(token: str) -> str:
    return f"{token[:10]}…{token[-4:]}"


def key_id_in_table(table: str) -> str:
    """The id row of a key printed for people."""
    match = re.search(r"^id\s+([0-9a-f-]{36})$", table, re.MULTILINE)
    assert match, table
    return match.group(1)


# Accounts and credits ---------------------------------------------------------------------------


def test_account_creation_shows_the_management_key_once_and_credits_add_up(cli: Cli) -> None:
    created = cli.ok("accounts", "create", "acme", "--credits", "5")
    [token] = tokens_in(created.stdout)
    assert token.startswith("lr-mk-")
    assert created.stdout.count(token) == 1
    assert "acme" in created.stdout and "5.000000" in created.stdout
    assert "store this token now" in created.stderr and token not in created.stderr

    added = cli.ok_json("credits", "add", "acme", "2.5")
    assert (added["name"], added["added"], added["balance"]) == ("acme", "2.500000", "7.500000")
    by_id = cli.ok("credits", "add", added["id"], "0.5")
    assert "8.000000" in by_id.stdout

    shown = cli.ok("accounts", "show", "acme", "--format", "json")
    account = shown.json()
    assert account["balance"] == "8.000000" and account["keys"] == 0
    assert [mk["display"] for mk in account["management_keys"]] == [display_of(token)]
    assert token not in shown.stdout

    listed = cli.ok_json("accounts", "list")["data"]
    assert [(a["name"], a["balance"]) for a in listed] == [("acme", "8.000000")]
    table = cli.ok("accounts", "list").stdout
    assert "NAME" in table.splitlines()[0]
    assert "acme" in table and "8.000000" in table and not tokens_in(table)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_installed_executable_exits_0_1_2_with_one_line_on_stderr(
    executable: Executable,
) -> None:
    created = executable.ok("accounts", "create", "acme", "--credits", "5")
    [token] = tokens_in(created.stdout)
    assert "store this token now" in created.stderr and token not in created.stderr
    executable.fails(1, "credits", "add", "nosuch", "5")
    executable.fails(2, "keys", "show", "not-a-uuid")


# Keys -------------------------------------------------------------------------------------------


def test_key_created_with_models_region_and_daily_limit_is_listed_without_its_token(
    cli: Cli,
) -> None:
    open_account(cli)
    scoped = create_key(
        cli,
        "acme",
        "prod-server",
        *("--model", "openai/gpt-4o", "--model", "lowrouter/echo"),
        *("--region", "eu", "--daily-limit", "1.5"),
    )
    token, key = scoped["key"], scoped["data"]
    assert token.startswith("lr-sk-") and len(token) >= 44
    assert key["models"] == ["openai/gpt-4o", "lowrouter/echo"]
    assert (key["region"], key["daily_limit"], key["status"]) == ("eu", "1.500000", "active")
    assert (key["name"], key["display"]) == ("prod-server", display_of(token))
    assert key["last_used_at"] is None and key["spent_today"] == "0.000000"
    assert token not in str(key)

    plain = cli.ok("keys", "create", "--account", "acme", "--name", "local-dev")
    [plain_token] = tokens_in(plain.stdout)
    assert plain.stdout.count(plain_token) == 1 and plain_token not in plain.stderr
    assert re.search(r"models\s+all", plain.stdout) and re.search(r"region\s+any", plain.stdout)

    table = cli.ok("keys", "list", "--account", "acme")
    assert not tokens_in(table.stdout + table.stderr)
    for secret in (token, plain_token):
        assert secret[6:38] not in table.stdout
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "DISPLAY", "STATUS"]
    assert "LAST USED" in header and "SPENT TODAY" in header
    assert len(rows) == 2 and display_of(token) in table.stdout
    assert "openai/gpt-4o, lowrouter/echo" in table.stdout and "1.500000" in table.stdout

    listed = cli.ok("keys", "list", "--account", "acme", "--format", "json")
    assert not tokens_in(listed.stdout)
    by_id = {entry["id"]: entry for entry in listed.json()["data"]}
    assert set(by_id) == {key["id"], key_id_in_table(plain.stdout)}
    assert by_id[key["id"]] == key

    shown = cli.ok("--format", "json", "keys", "show", key["id"])  # --format before the command
    assert shown.json() == key and not tokens_in(shown.stdout)


def test_scope_changes_only_the_parts_given_and_rename_keeps_the_scope(cli: Cli) -> None:
    open_account(cli)
    scope = ("--model", "a/one", "--model", "a/two", "--region", "eu", "--daily-limit", "1.5")
    key = create_key(cli, "acme", "svc", *scope)["data"]
    key_id = key["id"]

    region_only = cli.ok_json("keys", "scope", key_id, "--region", "us")
    assert (region_only["models"], region_only["region"]) == (["a/one", "a/two"], "us")
    assert region_only["daily_limit"] == "1.500000"

    models_and_limit = cli.ok_json("keys", "scope", key_id, "--model", "b/x", "--no-daily-limit")
    assert [models_and_limit[f] for f in SCOPE_FIELDS] == [["b/x"], "us", None]

    opened_up = cli.ok_json(
        "keys", "scope", key_id, "--all-models", "--any-region", "--daily-limit", "2"
    )
    assert [opened_up[f] for f in SCOPE_FIELDS] == [None, None, "2.000000"]

    renamed = cli.ok_json("keys", "rename", key_id, "svc-renamed")
    assert renamed["name"] == "svc-renamed"
    assert [renamed[f] for f in SCOPE_FIELDS] == [None, None, "2.000000"]

    cli.fails(2, "keys", "scope", key_id)  # nothing to change
    cli.fails(2, "keys", "scope", key_id, "--model", "a/one", "--all-models")
    cli.fails(1, "keys", "scope", key_id, "--model", "not a model!")
    cli.fails(1, "keys", "rename", key_id, "")


def test_rotate_prints_the_successor_token_once_with_the_same_name_and_scope(cli: Cli) -> None:
    open_account(cli)
    issued = create_key(cli, "acme", "prod", "--model", "a/one", "--region", "eu")
    old = issued["data"]

    rotated = cli.ok("keys", "rotate", old["id"], "--grace", "3600", "--format", "json")
    new_token, successor = rotated.json()["key"], rotated.json()["data"]
    assert new_token != issued["key"] and tokens_in(rotated.stdout) == [new_token]
    assert new_token not in rotated.stderr and "rotating" in rotated.stderr
    assert successor["name"] == "prod" and successor["predecessor_id"] == old["id"]
    assert [successor[f] for f in SCOPE_FIELDS] == [old[f] for f in SCOPE_FIELDS]
    assert successor["status"] == "active" and successor["display"] == display_of(new_token)

    during_grace = cli.ok_json("keys", "show", old["id"])
    assert during_grace["status"] == "rotating"
    assert during_grace["successor_id"] == successor["id"]
    assert during_grace["rotation_grace_until"] is not None

    immediate = cli.ok("keys", "rotate", successor["id"])  # no grace: the old key ends now
    [third_token] = tokens_in(immediate.stdout)
    assert immediate.stdout.count(third_token) == 1 and third_token != new_token
    assert f"{display_of(new_token)} is revoked" in immediate.stderr
    assert cli.ok_json("keys", "show", successor["id"])["status"] == "revoked"

    refused = cli.fails(1, "keys", "rotate", old["id"])
    assert "already rotated" in refused.stderr


def test_a_revoked_key_cannot_be_revoked_scoped_renamed_or_rotated(cli: Cli) -> None:
    open_account(cli)
    key = create_key(cli, "acme", "leaky")["data"]

    revoked = cli.ok_json("keys", "revoke", key["id"], "--reason", "leaked in a chat")
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None

    again = cli.fails(1, "keys", "revoke", key["id"])
    assert "already revoked" in again.stderr
    cli.fails(1, "keys", "scope", key["id"], "--region", "us")
    cli.fails(1, "keys", "rename", key["id"], "other")
    cli.fails(1, "keys", "rotate", key["id"])
    [listed] = cli.ok_json("keys", "list", "--account", "acme")["data"]
    assert listed["status"] == "revoked"


# Refusals and usage errors ----------------------------------------------------------------------


def test_refusals_exit_1_with_one_line_on_stderr(cli: Cli) -> None:
    account = open_account(cli)
    cli.fails(1, "credits", "add", "nosuch", "5")
    cli.fails(1, "keys", "create", "--account", "nosuch", "--name", "x")
    cli.fails(1, "keys", "list", "--account", str(uuid.uuid4()))
    for amount in ("-5", "abc", "0"):
        cli.fails(1, "credits", "add", "acme", amount)
    cli.fails(1, "accounts", "create", "other", "--credits", "-1")
    duplicate = cli.fails(1, "accounts", "create", "acme")
    assert "already exists" in duplicate.stderr
    missing = cli.fails(1, "keys", "show", str(uuid.uuid4()))
    assert "no key" in missing.stderr
    cli.fails(1, "keys", "create", "--account", "acme", "--name", "x", "--daily-limit", "-1")
    # Nothing was changed by the refusals.
    assert cli.ok_json("accounts", "show", account["data"]["id"])["balance"] == "5.000000"


def test_usage_errors_exit_2_and_never_echo_a_token(cli: Cli) -> None:
    cli.fails(2, "frobnicate")
    cli.fails(2)
    cli.fails(2, "keys", "show", "not-a-uuid")
    cli.fails(2, "keys", "list")  # --account is required
    cli.fails(2, "keys", "list", "--account", "acme", "--format", "xml")
    cli.fails(2, "--format", "csv", "keys", "list", "--account", "acme")  # no csv for keys
    cli.fails(2, "keys", "rotate", str(uuid.uuid4()), "--grace", "soon")
    cli.fails(2, "serve", "--workers", "0")
    cli.fails(2, "--database-url", "mysql://db/lowrouter", "accounts", "list")

    token = generate_token(TokenKind.INFERENCE).value
    pasted = cli.fails(2, "keys", "revoke", token)
    assert token not in pasted.stderr and token[6:38] not in pasted.stderr
    assert "is a token, not a key id" in pasted.stderr
    stray = cli.fails(2, "keys", "list", "--account", "acme", token)
    assert token not in stray.stderr and token[6:38] not in stray.stderr

    helped = cli.ok("--help")
    assert "keys" in helped.stdout and "0 ok, 1 refused, 2 usage error" in helped.stdout


def test_database_url_option_wins_over_the_environment(cli: Cli) -> None:
    broken_env = cli.environment(LOWROUTER_DATABASE_URL="nonsense://")
    before = cli("--database-url", cli.database_url, "accounts", "list", env=broken_env)
    assert before.code == 0, before.stderr
    after = cli("accounts", "list", "--database-url", cli.database_url, env=broken_env)
    assert after.code == 0, after.stderr
    bad = cli("accounts", "list", env=broken_env)
    assert bad.code == 2 and bad.stderr.startswith("lowrouter: ") and len(bad.error_lines) == 1

    not_a_directory = cli.home / "plain-file"
    not_a_directory.write_text("")
    unopenable = cli.fails(
        1, "accounts", "list", "--database-url", f"sqlite:///{not_a_directory}/lowrouter.db"
    )
    assert "cannot open the database" in unopenable.stderr


# --env-file -------------------------------------------------------------------------------------


def test_env_file_gets_the_token_with_mode_0600_and_is_appended_to(
    cli: Cli, tmp_path: Path
) -> None:
    open_account(cli)
    env_file = tmp_path / "app" / "secrets.env"
    env_file.parent.mkdir()

    first = cli.ok(
        "keys", "create", "--account", "acme", "--name", "a", "--env-file", str(env_file)
    )
    assert not tokens_in(first.stdout + first.stderr)
    assert str(env_file) in first.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    [first_line] = env_file.read_text().splitlines()
    first_token = first_line.removeprefix("LOWROUTER_API_KEY=")
    assert TOKEN.fullmatch(first_token)
    first_id = key_id_in_table(first.stdout)
    assert cli.ok_json("keys", "show", first_id)["display"] == display_of(first_token)

    second = cli.ok_json(
        "keys", "create", "--account", "acme", "--name", "b", "--env-file", str(env_file)
    )
    assert "key" not in second and second["env_file"] == str(env_file.resolve())
    lines = env_file.read_text().splitlines()
    assert lines[0] == first_line and len(lines) == 2
    second_token = lines[1].removeprefix("LOWROUTER_API_KEY=")
    assert TOKEN.fullmatch(second_token) and second_token != first_token
    assert second["data"]["display"] == display_of(second_token)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    never = tmp_path / "never.env"
    refused = cli.fails(
        1, "keys", "create", "--account", "acme", "--name", "", "--env-file", str(never)
    )
    assert "name" in refused.stderr and not never.exists()  # no key, so no file either


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_env_file_in_a_git_work_tree_warns_unless_it_is_ignored(cli: Cli, tmp_path: Path) -> None:
    open_account(cli)
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    create = ("keys", "create", "--account", "acme", "--name", "dev")

    exposed = cli.ok(*create, "--env-file", ".env", cwd=repo)
    assert "not git-ignored" in exposed.stderr and ".env" in exposed.stderr
    assert not tokens_in(exposed.stdout + exposed.stderr)
    assert (repo / ".env").exists()

    (repo / ".gitignore").write_text(".env\n")
    ignored = cli.ok(*create, "--env-file", str(repo / ".env"))
    assert "git work tree" not in ignored.stderr and "git-ignored" not in ignored.stderr
    assert len((repo / ".env").read_text().splitlines()) == 2
