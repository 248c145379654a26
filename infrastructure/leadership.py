"""One background runner per database: a lease in a table, renewed while its holder lives.

Whoever holds the unexpired lease runs the projections, the reconciler and the chain; the others
stand by and take the lease once it expires. A lease rather than a session advisory lock:
- it works through a transaction-mode pooler (every renewal is one autocommit statement);
- a holder whose host vanished (no FIN, no RST: its connection lingers on the server until
  TCP keepalive gives up, for hours by default) loses it when it expires, not after that.
The lease lasts `LOWROUTER_LEADERSHIP_LEASE_SECONDS` (0.6 s by default) and is renewed every
quarter of that; a standby tries every `projections.runner.STANDBY_INTERVAL`, so it takes over at
most lease + that interval (+ one statement's time) after the holder's last renewal.
Expiry is judged by the database's clock, so hosts' clocks need not agree. Two holders at once
(a holder that stalled past its lease) are harmless: every runner claims its batches with a
compare-and-set of the position (projections.runner) and the reconciler is idempotent.
"""

import contextlib
import logging
import os
import socket
import threading
import uuid
from typing import Any

import psycopg

from infrastructure.database import Database

log = logging.getLogger("lowrouter.leadership")

RENEWALS_PER_LEASE = 4  # a holder renews every quarter of its lease: three renewals may fail
NAME = "background"

CREATE = (
    "CREATE TABLE IF NOT EXISTS lr_leadership ("
    "name text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL)"
)
# Take the lease if it is free, expired or already ours; a row comes back only if we hold it.
TAKE = (
    "INSERT INTO lr_leadership AS l (name, holder, expires_at) "
    "VALUES (%(name)s, %(holder)s, clock_timestamp() + make_interval(secs => %(ttl)s)) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE l.holder = excluded.holder OR l.expires_at < clock_timestamp() "
    "RETURNING l.holder"
)
GIVE_UP = "DELETE FROM lr_leadership WHERE name = %(name)s AND holder = %(holder)s"
LEASE_HELD = "SELECT holder FROM lr_leadership WHERE expires_at > clock_timestamp()"
HOLDER = "SELECT holder FROM lr_leadership WHERE name = %(name)s AND expires_at > clock_timestamp()"


def ensure_leadership_table(database: Database) -> None:
    # UniqueViolation: another process created it at the same moment.
    with database.connection() as conn, contextlib.suppress(psycopg.errors.UniqueViolation):
        conn.execute(CREATE)


class LeadershipLease:
    """Call it to ask "do I lead?": it tries to take the lease if not; while it holds the
    lease, a thread of its own renews it (a long projection batch never lets it lapse)."""

    def __init__(self, database: Database, lease_seconds: float, name: str = NAME) -> None:
        self._database = database
        self._params: dict[str, Any] = {
            "name": name,
            "holder": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            "ttl": lease_seconds,
        }
        self.lease_seconds = lease_seconds
        self._leading = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._table_ready = False

    @property
    def holder(self) -> str:
        return str(self._params["holder"])

    def __call__(self) -> bool:
        with self._lock:
            if not self._leading:
                self._leading = self._take()
                if self._leading and (self._renewer is None or not self._renewer.is_alive()):
                    self._renewer = threading.Thread(
                        target=self._renew, name="lowrouter-leadership", daemon=True
                    )
                    self._renewer.start()
            return self._leading

    def current_holder(self) -> str | None:
        """Who holds the lease now (any process), or None."""
        with self._database.connection() as conn:
            row = conn.execute(HOLDER, self._params).fetchone()
        return None if row is None else str(row["holder"])

    def _take(self) -> bool:
        try:
            if not self._table_ready:
                ensure_leadership_table(self._database)
                self._table_ready = True
            with self._database.connection() as conn:
                return conn.execute(TAKE, self._params).fetchone() is not None
        except Exception as error:  # the database is unreachable: nobody here leads
            log.warning("could not take the background lease: %s", error)
            return False

    def _renew(self) -> None:
        stop = self._stop
        while not stop.wait(self.lease_seconds / RENEWALS_PER_LEASE):
            held = self._take()
            with self._lock:
                if not self._leading:
                    return
                if not held:
                    log.warning("lost the background lease; standing by")
                    self._leading = False
                    return

    def release(self) -> None:
        """Give the lease up at once, so a standby need not wait for it to expire."""
        self._stop.set()
        with self._lock:
            was_leading, self._leading = self._leading, False
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        self._stop = threading.Event()  # it may lead again if asked again
        if was_leading:
            try:
                with self._database.connection() as conn:
                    conn.execute(GIVE_UP, self._params)
            except Exception as error:
                log.warning("could not give the background lease up: %s", error)
