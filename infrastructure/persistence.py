"""Wiring the event store (eventsourcing) and the projection tables (SQLAlchemy) to one database."""

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, create_engine, event, text

from application.clock import Clock, system_clock
from application.keys import Lowrouter
from application.spend import PageLock, no_lock
from infrastructure.settings import Settings, postgres_conninfo, postgres_parts, sqlite_path
from projections.lookup import KeyLookup

TRANSCODER = {"TRANSCODER_TOPIC": "infrastructure.transcoder:OrjsonDecodingTranscoder"}


def eventsourcing_env(database_url: str) -> dict[str, str]:
    return {**TRANSCODER, **_store_env(database_url)}


def _store_env(database_url: str) -> dict[str, str]:
    if database_url == "memory://":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if database_url.startswith("sqlite:///"):
        path = sqlite_path(database_url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    pg = postgres_parts(database_url)
    return {
        "PERSISTENCE_MODULE": "infrastructure.event_store:LedgerFactory",
        "POSTGRES_DBNAME": pg["dbname"],
        "POSTGRES_HOST": pg["host"],
        "POSTGRES_PORT": pg["port"],
        "POSTGRES_USER": pg["user"],
        "POSTGRES_PASSWORD": pg["password"],
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }


def create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600, whatever the umask): it holds
    token hashes and every account's history. SQLite gives its -wal and -shm files the same
    mode. An existing file is left as it is."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def build_ledger(
    settings: Settings, clock: Clock = system_clock, create_tables: bool = True
) -> Lowrouter:
    env = eventsourcing_env(settings.database_url)
    if not create_tables:
        env["CREATE_TABLE"] = "n"  # worker processes: the parent prepared the schema
    return Lowrouter(env, pepper=settings.pepper, clock=clock)


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
    # Small pools: a process needs few connections (one writer thread, a lookup per request),
    # and several processes share one server's connection limit.
    # No pre-ping (it would cost a round trip per lookup): recycle connections instead.
    return create_engine(url, pool_size=6, max_overflow=6, pool_recycle=600)


class PostgresPageLock:
    """A session advisory lock per account, held around a ledger batch, so gateway processes
    sharing one database take turns on an account's page instead of conflicting."""

    def __init__(self, database_url: str) -> None:
        self._conninfo = postgres_conninfo(database_url)
        self._conn: Any = None

    @contextmanager
    def __call__(self, accounts: Sequence[UUID]) -> Iterator[None]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
        keys = [int.from_bytes(account.bytes[:8], "big", signed=True) for account in accounts]
        # Sorted accounts, locked in array order: no two batches can deadlock.
        self._conn.execute("SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])
        try:
            yield
        finally:
            self._conn.execute("SELECT pg_advisory_unlock_all()")


class FilePageLock:
    """SQLite is one host's file: an exclusive file lock beside it serialises ledger batches of
    all processes using it (SQLite serialises their writes anyway)."""

    def __init__(self, database_path: str) -> None:
        self._path = database_path + ".ledger-lock"

    @contextmanager
    def __call__(self, accounts: Sequence[UUID]) -> Iterator[None]:
        import fcntl

        with open(self._path, "a+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)


def build_page_lock(database_url: str) -> PageLock:
    if database_url.startswith("sqlite:///"):
        return FilePageLock(str(sqlite_path(database_url).expanduser()))
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresPageLock(database_url)
    return no_lock


class PostgresLeadership:
    """Who runs the projections in the background: the holder of a session advisory lock on
    its own connection. If that process dies, its connection closes and another takes over."""

    KEY = 0x6C6F77726F757465  # "lowroute"

    def __init__(self, database_url: str) -> None:
        self._conninfo = postgres_conninfo(database_url)
        self._conn: Any = None
        self._leading = False

    def __call__(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn, self._leading = psycopg.connect(self._conninfo, autocommit=True), False
            if not self._leading:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.KEY]).fetchone()
                self._leading = bool(row and row[0])
            else:
                self._conn.execute("SELECT 1")  # still connected, so still holding the lock
            return self._leading
        except psycopg.Error:
            self._conn, self._leading = None, False
            return False

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._leading = None, False


class FileLeadership:
    """SQLite: an exclusive lock on a file beside the database, held while the process lives."""

    def __init__(self, database_path: str) -> None:
        self._path = database_path + ".projections-lock"
        self._file: Any = None

    def __call__(self) -> bool:
        import fcntl

        if self._file is not None:
            return True
        file = open(self._path, "a+b")  # noqa: SIM115 - held open for the process's lifetime
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


def build_leadership(database_url: str) -> Callable[[], bool]:
    if database_url.startswith("sqlite:///"):
        return FileLeadership(str(sqlite_path(database_url).expanduser()))
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresLeadership(database_url)
    return lambda: True


def build_key_lookup(database_url: str) -> KeyLookup:
    if database_url.startswith("sqlite:///"):
        return KeyLookup(sqlite_path=str(sqlite_path(database_url).expanduser()))
    return KeyLookup(conninfo=postgres_conninfo(database_url))


def projections_leader_present(database_url: str, engine: Engine) -> bool:
    """Whether some process holds the projections' leadership (PostgresLeadership or
    FileLeadership above), i.e. the background work is running somewhere for this database."""
    if database_url.startswith("sqlite:///"):
        import fcntl

        path = str(sqlite_path(database_url).expanduser()) + ".projections-lock"
        with open(path, "a+b") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # held by a runner
            fcntl.flock(file, fcntl.LOCK_UN)
            return False
    key = PostgresLeadership.KEY  # a bigint advisory lock shows as (classid, objid) halves
    query = text(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with engine.connect() as conn:
        return conn.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first() is not None
