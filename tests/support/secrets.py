"""Searching what lowrouter stored for a token: the database's bytes (SQLite's files, or a
`pg_dump` of PostgreSQL, where bytea appears hex-encoded) and the files it wrote."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infrastructure.settings import postgres_parts, sqlite_path

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
