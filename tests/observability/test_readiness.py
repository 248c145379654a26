"""/readyz: 503 when PostgreSQL cannot be reached (through a TCP proxy the test stops: the shared
server stays up for everyone else), and 200 again once it is back; /healthz (liveness) stays 200
meanwhile: a slow database is no reason to restart. (The background process dying and coming back
is in test_serve_observed.py, on the run `serve` started; the leadership probe on both stores
below.)"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.persistence import projections_leader_present
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings, postgres_parts
from tests.observability.serving import eventually
from tests.support.proxy import TcpProxy
from tests.support.servers import LiveServer
from tests.support.stores import PEPPER


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    pg = postgres_parts(postgres_url)
    proxy = TcpProxy((pg["host"], int(pg["port"]))).start()
    yield f"postgresql://{pg['user']}@127.0.0.1:{proxy.port}/{pg['dbname']}", proxy
    proxy.stop()


def test_readyz_is_503_while_postgresql_is_unreachable_and_200_once_it_is_back(
    tmp_path: Path, proxied_postgres: tuple[str, TcpProxy]
) -> None:
    database_url, proxy = proxied_postgres
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=database_url,
    )
    app = create_app(open_runtime(settings, prepare_schema=False), demo_catalogue("http://x/v1"))
    server = LiveServer(app)
    url = server.start()
    try:
        ready = eventually(url, 200)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"store": "ok", "key_lookup": "ok", "background": "ok"},
        }

        proxy.stop()
        down = eventually(url, 503)
        assert down.status_code == 503, down.text
        assert down.json()["status"] == "not_ready"
        assert down.json()["checks"]["store"].startswith("unreachable")
        assert httpx.get(url + "/healthz").status_code == 200  # alive all the same

        proxy.start()  # the same port again
        back = eventually(url, 200)
        assert back.status_code == 200, back.text
    finally:
        server.stop()


def test_the_leadership_probe_sees_whether_a_process_runs_the_projections(
    database_url: str,
) -> None:
    from infrastructure.persistence import build_engine, build_leadership

    engine = build_engine(database_url)
    leadership = build_leadership(database_url, lease_seconds=0.6)
    release = getattr(leadership, "release")  # noqa: B009 - not part of the Callable type
    try:
        assert not projections_leader_present(database_url, engine), holders(engine)
        assert leadership()  # this test's "background process" takes the lead
        assert projections_leader_present(database_url, engine)
        release()  # the leader's connection closes (or its file)
        deadline = time.monotonic() + 5  # the server ends the session a moment after the close
        while projections_leader_present(database_url, engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not projections_leader_present(database_url, engine), holders(engine)
    finally:
        release()
        engine.dispose()


def holders(engine: Any) -> list[Any]:
    """Who holds advisory locks (for a failure's message)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT l.database, d.datname, l.pid, a.application_name, a.backend_start"
                    " FROM pg_locks l LEFT JOIN pg_database d ON d.oid = l.database"
                    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
                )
            ).all()
        )
