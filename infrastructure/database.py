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
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff
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
RECONNECT_EVERY = 1.0  # seconds at most between two attempts to reconnect while the store is out

_open: "weakref.WeakValueDictionary[str, Database]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)
_ids_lock = threading.Lock()


class _SteadyBackoff(AttemptWithBackoff):
    """psycopg_pool retries a failed connection after 1, 2, 4, 8, 16 … s: after an outage of
    15 s its next attempt could come 16 s after the store was back (every request 503 all that
    time: 12.1 s reproduced through a proxy, 13.5 s once in CI). Retried about every second
    instead (the first delay keeps its jitter, so many processes do not all knock at once); one
    refused connect a second is cheap."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_EVERY)


class _FailedConnectsOncePerOutage(logging.Filter):
    """psycopg_pool warns at every failed attempt, about one a second per lost connection now:
    one line per pool every REPEAT_SECONDS says the store is out just as well."""

    REPEAT_SECONDS = 30.0

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("error connecting in"):
            return True
        pool = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        now = time.monotonic()
        if now - self._last.get(pool, -self.REPEAT_SECONDS) < self.REPEAT_SECONDS:
            return False
        self._last[pool] = now
        return True


logging.getLogger("psycopg.pool").addFilter(_FailedConnectsOncePerOutage())


class _Pool(ConnectionPool[Any]):
    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        if attempt is None:  # a first attempt; a retry brings its own (ours) back
            attempt = _SteadyBackoff(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)


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
        self.pool: ConnectionPool[Any] = _Pool(
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
