"""No plaintext: tokens created through the CLI are nowhere in the database, not even in pieces.

The SQLite file (and its -wal/-shm files) is searched byte for byte; PostgreSQL through a
`pg_dump`, where event payloads (bytea) appear hex-encoded, so both spellings are searched.
"""

from pathlib import Path

from tests.support.cli import Cli
from tests.support.secrets import (
    RANDOM_PART,
    files_under,
    pieces_of,
    spellings,
    stored_bytes,
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
