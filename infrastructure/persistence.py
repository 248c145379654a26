"""Wiring the event store (eventsourcing) and the projection tables (SQLAlchemy) to one database."""

from typing import Any

from sqlalchemy import Engine, create_engine, event

from application.clock import Clock, system_clock
from application.keys import Lowrouter
from infrastructure.settings import Settings, postgres_parts, sqlite_path


def eventsourcing_env(database_url: str) -> dict[str, str]:
    if database_url == "memory://":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if database_url.startswith("sqlite:///"):
        path = sqlite_path(database_url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    pg = postgres_parts(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": pg["dbname"],
        "POSTGRES_HOST": pg["host"],
        "POSTGRES_PORT": pg["port"],
        "POSTGRES_USER": pg["user"],
        "POSTGRES_PASSWORD": pg["password"],
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "8",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }


def build_ledger(settings: Settings, clock: Clock = system_clock) -> Lowrouter:
    return Lowrouter(eventsourcing_env(settings.database_url), pepper=settings.pepper, clock=clock)


def build_engine(database_url: str) -> Engine:
    """The SQLAlchemy engine for projection tables, in the same database as the events."""
    if database_url.startswith("sqlite:///"):
        engine = create_engine(
            "sqlite:///" + str(sqlite_path(database_url).expanduser()),
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    pg = postgres_parts(database_url)
    from sqlalchemy.engine import URL

    url = URL.create(
        "postgresql+psycopg",
        username=pg["user"],
        password=pg["password"] or None,
        host=pg["host"],
        port=int(pg["port"]),
        database=pg["dbname"],
    )
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
