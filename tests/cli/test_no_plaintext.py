"""No plaintext: tokens created through the CLI are nowhere in the database, not even in pieces.

The SQLite file (and its -wal/-shm files) is searched byte for byte; PostgreSQL through a
`pg_dump`, where event payloads (bytea) appear hex-encoded, so both spellings are searched.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infrastructure.settings import postgres_parts, sqlite_path
from tests.cli.conftest import Cli

RANDOM_PART = slice(6, 38)  # after "lr-sk-", before the checksum
PIECE = 12


def pieces_of(token: str) -> list[str]:
    """The token and every 12-character substring of its random part."""
    random_part = token[RANDOM_PART]
    return [token] + [random_part[i : i + PIECE] for i in range(len(random_part) - PIECE + 1)]


def sqlite_bytes(database_url: str) -> bytes:
    path = sqlite_path(database_url)
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
    return b"".join(file.read_bytes() for file in files if file.exists())


def pg_dump_bytes(database_url: str) -> bytes:
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is needed to check that PostgreSQL holds no plaintext token")
    pg = postgres_parts(database_url)
    env = {**os.environ, "PGPASSWORD": pg["password"]} if pg["password"] else None
    dumped = subprocess.run(
        ["pg_dump", "-h", pg["host"], "-p", pg["port"], "-U", pg["user"], pg["dbname"]],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")
    return dumped.stdout


def stored_bytes(database_url: str) -> bytes:
    if database_url.startswith("sqlite:///"):
        return sqlite_bytes(database_url)
    return pg_dump_bytes(database_url)


def spellings(text: str) -> list[bytes]:
    """As stored raw (SQLite blobs, text columns) and as pg_dump writes bytea (hex)."""
    raw = text.encode("ascii")
    return [raw, raw.hex().encode("ascii")]


def files_under(root: Path, but_not: Path) -> bytes:
    return b"".join(
        path.read_bytes() for path in root.rglob("*") if path.is_file() and path != but_not
    )


def test_tokens_created_through_the_cli_are_not_stored_in_plaintext(
    cli: Cli, tmp_path: Path
) -> None:
    env_file = tmp_path / "secrets.env"
    opened = cli.ok_json("accounts", "create", "acme", "--credits", "5")
    tokens = [opened["key"]]
    for name, scope in (
        ("prod", ("--model", "openai/gpt-4o", "--region", "eu", "--daily-limit", "2")),
        ("dev", ()),
    ):
        created = cli.ok_json("keys", "create", "--account", "acme", "--name", name, *scope)
        tokens.append(created["key"])
    rotated = cli.ok_json("keys", "rotate", created["data"]["id"], "--grace", "60")
    tokens.append(rotated["key"])
    cli.ok("keys", "create", "--account", "acme", "--name", "ci", "--env-file", str(env_file))
    tokens.append(env_file.read_text().strip().removeprefix("LOWROUTER_API_KEY="))
    cli.ok("keys", "list", "--account", "acme")
    assert len(set(tokens)) == 5 and all(len(token) >= 44 for token in tokens)

    stored = stored_bytes(cli.database_url)
    # The search reaches the data: each key's public prefix is stored (in events and lookups).
    for token in tokens:
        assert token[:10].encode() in stored
    if not cli.database_url.startswith("sqlite:///"):
        assert any(token[:10].encode().hex().encode() in stored for token in tokens)

    leaks = [
        f"{token[:10]}… piece {piece[:3]}…"
        for token in tokens
        for piece in pieces_of(token)
        if any(spelling in stored for spelling in spellings(piece))
    ]
    assert leaks == []

    elsewhere = files_under(tmp_path, but_not=env_file)
    assert [token[:10] for token in tokens if token[RANDOM_PART].encode() in elsewhere] == []
