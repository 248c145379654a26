"""Wiring the event store (eventsourcing) and the projection tables (SQLAlchemy) to one database."""

import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ProgrammingError

from application.app import Lowrouter
from application.clock import Clock, system_clock
from application.spend import PageLock, no_lock
from infrastructure.database import Database
from infrastructure.event_store import SHARED_POOL
from infrastructure.leadership import LEASE_HELD, LeadershipLease
from infrastructure.settings import Settings, is_postgres_url, postgres_parts, sqlite_path
from projections.lookup import KeyLookup

TRANSCODER = {"TRANSCODER_TOPIC": "infrastructure.transcoder:OrjsonDecodingTranscoder"}


def eventsourcing_env(database_url: str, database: Database | None = None) -> dict[str, str]:
    env = {**TRANSCODER, **_store_env(database_url)}
    if database is not None:  # the event store borrows this process's pool (event_store.py)
        env[SHARED_POOL] = database.id
    return env


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
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }


def create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600, whatever the umask): it holds
    token hashes and every account's history. SQLite gives its -wal and -shm files the same
    mode. An existing file is left as it is."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_database(settings: Settings, role: str) -> Database | None:
    """The process's one PostgreSQL pool (None on SQLite)."""
    return Database.for_settings(settings, role) if settings.is_postgres else None


def build_app(
    settings: Settings,
    clock: Clock = system_clock,
    create_tables: bool = True,
    database: Database | None = None,
) -> Lowrouter:
    """The ledger application. Without `database`, on PostgreSQL, it opens a pool of its own
    (closed with it)."""
    env = eventsourcing_env(settings.database_url, database)
    if not create_tables:
        env["CREATE_TABLE"] = "n"  # worker processes: the parent prepared the schema
    return Lowrouter(env, pepper=settings.pepper, clock=clock)


def build_engine(database_url: str, database: Database | None = None) -> Engine:
    """The SQLAlchemy engine for projection tables, in the same database as the events."""
    if database_url.startswith("sqlite:///"):
        engine = create_engine(
            "sqlite:///" + str(sqlite_path(database_url).expanduser()),
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,  # bound parameters (token hashes) stay out of errors and logs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # PostgreSQL: no pool of its own; it borrows from the process's one pool.
    if database is not None:
        return database.engine()
    return _owning(
        Database(database_url, application_name="lowrouter-engine"), lambda d: d.engine()
    )


class PostgresPageLock:
    """A transaction-scoped advisory lock per account, held around a ledger batch, so gateway
    processes sharing one database take turns on an account's page instead of conflicting.

    The lock lives in a transaction of its own on a borrowed connection (the batch's reads and
    its save run on others), so it works through a transaction-mode pooler too, and ends with
    that transaction: on commit, on error, or when a dead process's connection closes."""

    # A holder that went silent mid-batch (its host vanished, its connection lingering) is cut
    # off by the server after 5 s, well before a waiter gives up (10 s) rather than wait forever.
    SETTINGS = (
        "SELECT set_config('lock_timeout', '10s', true), "
        "set_config('idle_in_transaction_session_timeout', '5s', true)"
    )

    def __init__(self, database: Database) -> None:
        self._database = database

    @contextmanager
    def __call__(self, accounts: Sequence[UUID]) -> Iterator[None]:
        keys = [int.from_bytes(account.bytes[:8], "big", signed=True) for account in accounts]
        with self._database.connection() as conn, conn.transaction():
            conn.execute(self.SETTINGS)
            # Sorted accounts, locked in array order: no two batches can deadlock.
            conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])
            yield


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


def build_page_lock(database_url: str, database: Database | None = None) -> PageLock:
    if database_url.startswith("sqlite:///"):
        return FilePageLock(str(sqlite_path(database_url).expanduser()))
    if is_postgres_url(database_url):
        if database is not None:
            return PostgresPageLock(database)
        return _owning(Database(database_url, application_name="lowrouter-lock"), PostgresPageLock)
    return no_lock


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


def build_leadership(
    database_url: str, lease_seconds: float, database: Database | None = None
) -> Callable[[], bool]:
    if database_url.startswith("sqlite:///"):
        return FileLeadership(str(sqlite_path(database_url).expanduser()))
    if is_postgres_url(database_url):
        if database is not None:
            return LeadershipLease(database, lease_seconds)
        return _owning(
            Database(database_url, application_name="lowrouter-leadership"),
            lambda d: LeadershipLease(d, lease_seconds),
        )
    return lambda: True


def build_key_lookup(database_url: str, database: Database | None = None) -> KeyLookup:
    if database_url.startswith("sqlite:///"):
        return KeyLookup(sqlite_path=str(sqlite_path(database_url).expanduser()))
    if database is not None:
        return KeyLookup(pool=database)
    return _owning(
        Database(database_url, application_name="lowrouter-lookup"), lambda d: KeyLookup(pool=d)
    )


T = TypeVar("T")


def _owning(database: Database, build: Callable[[Database], T]) -> T:
    """An object built on a pool of its own (tools, tests): the pool closes when it goes."""
    built = build(database)
    weakref.finalize(built, database.close)
    return built


def projections_leader_present(database_url: str, engine: Engine) -> bool:
    """Whether some process holds the projections' leadership (the lease, or FileLeadership
    above), i.e. the background work is running somewhere for this database."""
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
    with engine.connect() as conn:
        try:
            return conn.execute(text(LEASE_HELD)).first() is not None
        except ProgrammingError:  # no lease table yet: nobody has led
            return False
