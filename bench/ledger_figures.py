"""Figures measured in-process on a fresh database (no server running): writing a burst of ledger
events with group commit, projection catch-up after the burst, a full rebuild, lookup-authenticate
per second, and replaying one account-day page holding all those events."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import project_aggregate

from application.clock import utc_day
from bench.fixtures import MODEL, Tenant, create_tenant
from domain.ledger import LedgerPage, page_id
from domain.tokens import TokenKind, hash_token, parse_token
from domain.usage import Usage
from infrastructure.http.auth import authenticate
from infrastructure.runtime import Runtime
from projections.lookup import KeyRecord, find_key

CHUNK = 4096  # requests in flight at once while generating (the writer batches up to 512)
USAGE = {
    "model": MODEL,
    "provider": "bench",
    "region": "local",
    "prompt_tokens": 9,
    "completion_tokens": 12,
    "status": "ok",
    "status_code": 200,
    "latency_ms": 1,
    "streamed": False,
    "client_ip": "127.0.0.1",
    "user_agent": "bench",
}


def generate_events(runtime: Runtime, tenant: Tenant, events: int) -> dict[str, Any]:
    """`events` ledger events as reserve → settle pairs on one account, many in flight at once."""
    spend, pairs = runtime.spend, events // 2
    batches, commands = spend.batches, spend.commands
    started = time.perf_counter()
    for first in range(0, pairs, CHUNK):
        ids = [f"bench-{i}" for i in range(first, min(pairs, first + CHUNK))]
        holds = [
            spend.reserve(tenant.account_id, rid, tenant.key_id, MODEL, 100, None) for rid in ids
        ]
        for future in holds:
            future.result()
        settlements = [
            spend.settle(tenant.account_id, rid, 50, Usage(key_name="bench-key", **USAGE))
            for rid in ids
        ]
        for future in settlements:
            future.result()
    seconds = time.perf_counter() - started
    batch_count = spend.batches - batches
    return {
        "events": 2 * pairs,
        "seconds": round(seconds, 2),
        "events_per_s": round(2 * pairs / seconds),
        "pairs_per_s": round(pairs / seconds),
        "commands_per_batch": round((spend.commands - commands) / max(1, batch_count), 1),
        "conflicts": spend.conflicts,
    }


def timed_catch_up(runtime: Runtime) -> dict[str, Any]:
    """Apply everything not yet projected; rate over the log's events (filtered-out included)."""
    runner = runtime.projections
    head = runner.head()
    behind = {s.name: s.lag for s in runner.status()}
    started = time.perf_counter()
    applied = runner.catch_up()
    seconds = time.perf_counter() - started
    log_events = max(behind.values(), default=0)
    return {
        "log_events": log_events,
        "applied": applied,
        "head": head,
        "seconds": round(seconds, 2),
        "events_per_s": round(log_events / seconds) if seconds else None,
    }


def timed_rebuild(runtime: Runtime) -> dict[str, Any]:
    """Drop every projection and rebuild it from the whole log."""
    runner = runtime.projections
    per_projection = {}
    total = 0.0
    for name in list(runner.projections):
        started = time.perf_counter()
        runner.reset(name)
        applied = runner.catch_up([name])
        seconds = time.perf_counter() - started
        total += seconds
        per_projection[name] = {"applied": applied, "seconds": round(seconds, 2)}
    head = runner.head()
    return {
        "log_events": head,
        "seconds": round(total, 2),
        "events_per_s": round(head / total) if total else None,
        "projections": per_projection,
    }


def rate(call: Callable[[], object], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            call()
        count += 50
    return count / (time.perf_counter() - started)


def lookup_rates(runtime: Runtime, tenant: Tenant, seconds: float) -> dict[str, float]:
    """One thread: the gateway's indexed lookup alone (a prepared statement on the driver),
    the whole bearer check around it, and the same lookup through SQLAlchemy (pages, tools)."""
    engine, pepper, lookup = runtime.engine, runtime.settings.pepper, runtime.lookup
    digest = hash_token(pepper, parse_token(tenant.token))
    header = f"Bearer {tenant.token}"
    now = datetime.now(UTC)

    def find(token_hash: str) -> KeyRecord | None:  # the read GroupLookup makes, for one key
        return lookup.find_many([token_hash]).get(token_hash)

    return {
        "lookup_per_s": round(rate(lambda: find(digest), seconds)),
        "authenticate_per_s": round(
            rate(
                lambda: authenticate(header, pepper, find, now, TokenKind.INFERENCE),
                seconds,
            )
        ),
        "find_key_sqlalchemy_per_s": round(rate(lambda: find_key(engine, digest), seconds)),
    }


def replay_page(runtime: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The account's page of today: from the latest snapshot plus its tail (what the repository
    does), and from scratch (every event folded)."""
    app = runtime.app
    pid = page_id(tenant.account_id, utc_day(app.clock()))
    started = time.perf_counter()
    page = app.repository.get(pid)
    with_snapshot = time.perf_counter() - started
    snapshot_version = _latest_snapshot_version(runtime, pid)
    started = time.perf_counter()
    events = list(app.events.get(pid))
    scratch_page = project_aggregate(None, events)
    from_scratch = time.perf_counter() - started
    assert isinstance(page, LedgerPage) and isinstance(scratch_page, LedgerPage)
    assert page.balance == scratch_page.balance and page.version == scratch_page.version
    return {
        "page_events": page.version,
        "snapshot_version": snapshot_version,
        "tail_events": page.version - (snapshot_version or 0),
        "with_snapshot_s": round(with_snapshot, 4),
        "from_scratch_s": round(from_scratch, 3),
    }


def _latest_snapshot_version(runtime: Runtime, pid: Any) -> int | None:
    snapshots = runtime.app.snapshots
    if snapshots is None:
        return None
    latest = list(snapshots.get(pid, desc=True, limit=1))
    return latest[0].originator_version if latest else None


def ledger_figures(runtime: Runtime, events: int, lookup_seconds: float) -> dict[str, Any]:
    tenant = create_tenant(runtime)
    figures: dict[str, Any] = {"generate": generate_events(runtime, tenant, events)}
    figures["catch_up"] = timed_catch_up(runtime)
    figures["rebuild"] = timed_rebuild(runtime)
    figures["lookup"] = lookup_rates(runtime, tenant, lookup_seconds)
    figures["replay"] = replay_page(runtime, tenant)
    return figures
