"""What the storage costs on this machine: one durable commit (the floor under any request that
must be durable before it is answered), with and without waiting for the disk."""

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

ROUNDS = 100


def _per_call_ms(call: Any, rounds: int = ROUNDS) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        call()
    return round((time.perf_counter() - started) / rounds * 1000, 3)


def sqlite_commit_ms() -> dict[str, float]:
    figures = {}
    with tempfile.TemporaryDirectory() as directory:
        conn = sqlite3.connect(Path(directory) / "probe.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        for mode in ("FULL", "NORMAL"):
            conn.execute(f"PRAGMA synchronous={mode}")
            figures[f"wal_synchronous_{mode.lower()}"] = _per_call_ms(
                lambda: conn.execute("INSERT INTO t VALUES (1)")
            )
        conn.close()
    return figures


def postgres_commit_ms(conninfo: str) -> dict[str, float]:
    import psycopg

    figures = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # A temporary table writes no WAL: use a real one, dropped afterwards.
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x integer)")
        try:
            for mode in ("on", "off"):
                conn.execute(f"SET synchronous_commit = {mode}")
                figures[f"synchronous_commit_{mode}"] = _per_call_ms(
                    lambda: conn.execute("INSERT INTO bench_commit_probe VALUES (1)")
                )
            figures["select_1_round_trip"] = _per_call_ms(lambda: conn.execute("SELECT 1"))
        finally:
            conn.execute("DROP TABLE IF EXISTS bench_commit_probe")
    return figures


def storage_probes(conninfo: str | None) -> dict[str, Any]:
    probes: dict[str, Any] = {"sqlite_commit_ms": sqlite_commit_ms()}
    if conninfo:
        try:
            probes["postgres_commit_ms"] = postgres_commit_ms(conninfo)
        except Exception as error:
            probes["postgres_commit_ms"] = {"error": str(error)}
    return probes
