"""lowrouter with changes measured rather than made (bench owns only bench/), chosen by
BENCH_PATCHES (comma-separated) in the worker's environment:

- `aiohttp`       the pooled upstream client uses the `httpx-aiohttp` transport instead of httpx's
                  default one; the API the hot path uses (post, build_request, send(stream=True),
                  aiter_lines, aclose) is unchanged.
- `async-projections`  PostgreSQL: projection transactions that change no access commit with
                  `synchronous_commit = off` (no wait for the WAL flush): every usage-history
                  batch, and the key lookup's batches that only advance its position past ledger
                  events. Projections are rebuilt from the log anyway and their rows and tracking
                  position commit together; the ledger, and every key-lookup batch that applies a
                  key or account event, stay fully synchronous.
- `no-pre-ping`   the projection engine's pool does not ping a connection on every checkout
                  (one round trip less per key lookup and per runner step).

    BENCH_PATCHES=aiohttp,async-projections uvicorn bench.patched:app_factory --factory
"""

import os
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette


def build_aiohttp_client(timeout: float) -> httpx.AsyncClient:
    """`infrastructure.upstream.build_client` with the aiohttp transport."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=5.0),
        transport=AiohttpTransport(limits=limits),
        follow_redirects=False,
    )


def patch_aiohttp() -> None:
    import infrastructure.http.app as http_app
    import infrastructure.upstream as upstream

    upstream.build_client = build_aiohttp_client
    http_app.build_client = build_aiohttp_client  # create_app imported the name directly


def patch_async_projections() -> None:
    from projections.keys import KeyLookupProjection
    from projections.usage import UsageProjection

    _commit_async_when(UsageProjection, lambda events: True)
    _commit_async_when(KeyLookupProjection, lambda events: not events)


def _commit_async_when(projection: type, condition: Callable[[Any], bool]) -> None:
    from sqlalchemy import Connection, text

    apply = projection.apply

    def apply_async(self: Any, conn: Connection, events: Any) -> None:
        if conn.dialect.name == "postgresql" and condition(events):
            conn.execute(text("SET LOCAL synchronous_commit = off"))
        apply(self, conn, events)

    projection.apply = apply_async  # type: ignore[attr-defined]


def patch_no_pre_ping() -> None:
    from sqlalchemy import Engine

    import infrastructure.runtime as runtime

    build_engine = runtime.build_engine

    def build_engine_without_ping(database_url: str) -> Engine:
        engine = build_engine(database_url)
        engine.pool._pre_ping = False  # type: ignore[attr-defined]
        return engine

    runtime.build_engine = build_engine_without_ping


PATCHES: dict[str, Callable[[], None]] = {
    "aiohttp": patch_aiohttp,
    "async-projections": patch_async_projections,
    "no-pre-ping": patch_no_pre_ping,
}


def app_factory() -> Starlette:
    from infrastructure.server import app_factory as lowrouter_app_factory

    for name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        PATCHES[name.strip()]()
    return lowrouter_app_factory()
