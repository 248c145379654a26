"""One process's connections to PostgreSQL: one small pool that everything shares.

The event store (eventsourcing), the projection tables (SQLAlchemy), the key lookup, the page lock
and the leadership lease all borrow from this one psycopg pool, so a process's connection cost is
one number, `LOWROUTER_DB_POOL_SIZE` (see README, "Running on many hosts"): it opens one connection
at start, grows up to the pool size under load and shrinks back after a minute idle. Only the
background runner's LISTEN has a connection of its own (ProjectionRunner), on the direct URL.

Every connection is named (`application_name`), so `pg_stat_activity` shows who holds what.
Behind a transaction-mode pooler (PgBouncer `pool_mode = transaction`) consecutive transactions
of one client may run on different server connections: nothing here relies on session state
there, and server-side prepared statements are off (psycopg `prepare_threshold=None`).
"""

import contextlib
import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from infrastructure.settings import Settings, postgres_conninfo

POOL_TIMEOUT = 10.0  # seconds a caller waits for a free connection before failing
MAX_IDLE = 60.0  # seconds an idle connection above the first is kept
IDLE_IN_TRANSACTION = "5s"  # as eventsourcing's own default: see _configure
# A host that vanished mid-statement (no FIN, no RST) keeps its transaction's locks until its
# connection is found dead: the server probes it after 5 s idle, every 1 s, giving up after 3
# unanswered (PostgreSQL's tcp_keepalives_*, asked for per session in _configure; behind
# PgBouncer, its tcp_keepidle/tcp_keepintvl/tcp_keepcnt: README, "Running on many hosts").
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 1, 3
MAX_LIFETIME = 600.0  # seconds before a connection is replaced (as SQLAlchemy's recycle did)

_open: "weakref.WeakValueDictionary[str, Database]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)
_ids_lock = threading.Lock()


class Database:
    """The pool of one process (or one Runtime) for one PostgreSQL database."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 4,
        application_name: str = "lowrouter",
        transaction_pooler: bool = False,
    ) -> None:
        self.application_name = application_name
        self.pool_size = pool_size
        self.pool: ConnectionPool[Any] = ConnectionPool(
            postgres_conninfo(database_url),
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,  # what eventsourcing's recorders read
                "application_name": application_name,
                # Behind a transaction-mode pooler the next statement may reach another server
                # connection, where a statement prepared here does not exist.
                "prepare_threshold": None if transaction_pooler else 5,
            },
            configure=None if transaction_pooler else _configure,  # no session state there
            reset=_reset,
            close_returns=True,  # SQLAlchemy closes what it borrowed: that returns it here
            timeout=POOL_TIMEOUT,
            max_idle=MAX_IDLE,
            max_lifetime=MAX_LIFETIME,
            name=application_name,
            open=True,
        )
        with _ids_lock:
            self.id = f"db{next(_ids)}"
        _open[self.id] = self

    @classmethod
    def for_settings(cls, settings: Settings, role: str) -> "Database":
        return cls(
            settings.database_url,
            pool_size=settings.db_pool_size,
            application_name=settings.application_name or f"lowrouter-{role}",
            transaction_pooler=settings.database_pooler == "transaction",
        )

    @staticmethod
    def find(database_id: str) -> "Database | None":
        return _open.get(database_id)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection[Any]]:
        """An autocommit connection with dict rows, returned to the pool afterwards."""
        with self.pool.connection() as conn:
            yield conn

    def engine(self) -> Engine:
        """A SQLAlchemy engine that borrows from this pool instead of keeping its own."""
        return create_engine(
            "postgresql+psycopg://",
            creator=self._sqlalchemy_connection,
            poolclass=NullPool,
            hide_parameters=True,  # bound parameters (token hashes) stay out of errors and logs
        )

    def _sqlalchemy_connection(self) -> Connection[Any]:
        conn: Connection[Any] = self.pool.getconn()
        conn.autocommit = False  # SQLAlchemy runs its own transactions
        conn.row_factory = tuple_row
        return conn

    def close(self) -> None:
        self.pool.close()
        _open.pop(self.id, None)


def _configure(conn: Connection[Any]) -> None:
    """A new connection, straight to PostgreSQL or through a session-mode pooler: a client
    that vanishes mid-transaction (its host gone without a word) must not keep its locks
    until TCP gives up, hours later. Between statements the idle-in-transaction timeout ends
    it; in the middle of one (a Bind half sent, the backend *active*, waiting for the rest) no
    timeout does, only the server's keepalive probes finding the host gone. (Transaction-mode
    pooler: its own idle_transaction_timeout and tcp_keep* settings do this; see README,
    "Running on many hosts".)"""
    conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
        "set_config('tcp_keepalives_idle', %s, false), "
        "set_config('tcp_keepalives_interval', %s, false), "
        "set_config('tcp_keepalives_count', %s, false)",
        [IDLE_IN_TRANSACTION, str(KEEPALIVE_IDLE), str(KEEPALIVE_INTERVAL), str(KEEPALIVE_COUNT)],
    )


def _reset(conn: Connection[Any]) -> None:
    """A connection comes back: as the event store expects it, whoever borrowed it."""
    conn.autocommit = True
    conn.row_factory = dict_row
    # SQLAlchemy adds its notice logger on every borrow: keep one, not one per borrow.
    handlers = conn._notice_handlers
    handlers[:] = list(dict.fromkeys(handlers))
