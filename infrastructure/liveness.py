"""Which gateway processes are alive: each registers a lease row and renews it every few seconds
(one cheap upsert per renewal, not an event per request). A hold records its owner's process id,
and the reconciler settles a stale hold only once its owner's lease has expired
(application.reconcile).

An outage longer than the lease lets every lease expire, a live gateway's too, and it renews
only on its next tick: so a process judges no lease dead until its own lease has renewed without
a failure for one whole lease period (`ProcessLease.steady`, the reconciler's check).

On PostgreSQL a lease's expiry is computed and judged by the database's clock, so hosts whose
clocks disagree judge it alike; on SQLite (one host) by that host's clock.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, bindparam, text

log = logging.getLogger("lowrouter.liveness")

metadata = MetaData()
processes = Table(
    "lr_processes",
    metadata,
    Column("process_id", String(200), primary_key=True),
    Column("expires_us", BigInteger, nullable=False),
)
FORGET_AFTER_US = 86_400 * 1_000_000  # a lease expired a day ago is deleted

_DB_NOW_US = {
    "postgresql": "(extract(epoch from clock_timestamp()) * 1000000)::bigint",
    "sqlite": ":local_now_us",
}


def create_processes_table(engine: Engine) -> None:
    metadata.create_all(engine, tables=[processes])


def _now_sql(engine: Engine) -> str:
    return _DB_NOW_US.get(engine.dialect.name, ":local_now_us")


def _with_now(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """The statement's parameters, plus this host's time where the database has no clock."""
    if ":local_now_us" in _now_sql(engine):
        params["local_now_us"] = time.time_ns() // 1000
    return params


class ProcessLease:
    """This process's lease: `register()` once, then a thread renews it every `ttl / 4` s.
    A renewal that fails (the store is down) is retried at the next tick; a lease that expired
    meanwhile is taken up again by the first renewal that works."""

    def __init__(
        self, engine: Engine, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.ttl_us = int(ttl_seconds * 1_000_000)
        self._clock = clock
        self._recovered_at = -float("inf")  # the first renewal after the last failed one
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> "ProcessLease":
        self.renew()
        self._thread = threading.Thread(target=self._run, name="lowrouter-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> bool:
        now = _now_sql(self.engine)
        upsert = text(
            "INSERT INTO lr_processes (process_id, expires_us) "
            f"VALUES (:id, {now} + :ttl) "
            "ON CONFLICT (process_id) DO UPDATE SET expires_us = excluded.expires_us"
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    upsert, _with_now(self.engine, {"id": self.process_id, "ttl": self.ttl_us})
                )
        except Exception as error:
            if not self._failing:  # once per outage, not every tick
                log.warning("could not renew this process's lease: %s", type(error).__name__)
            self._failing = True
            return False
        if self._failing:
            log.warning("renewed this process's lease again")
            self._recovered_at = self._clock()
        self._failing = False
        return True

    def steady(self) -> bool:
        """Whether the store has worked for this process for a whole lease period since its
        last failed renewal: only then has every live process had the time to renew, and an
        expired lease means a gone process."""
        ttl = self.ttl_us / 1_000_000
        return not self._failing and self._clock() - self._recovered_at >= ttl

    def _run(self) -> None:
        every = self.ttl_us / 4_000_000
        while not self._stop.wait(every):
            self.renew()

    def close(self) -> None:
        """Give the lease up (the process has finished its requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.engine.begin() as conn:
                conn.execute(processes.delete().where(processes.c.process_id == self.process_id))
        except Exception as error:
            log.warning("could not give this process's lease up: %s", type(error).__name__)


def live_processes(engine: Engine, candidates: Collection[str]) -> set[str]:
    """Which of `candidates` hold an unexpired lease now (by the database's clock)."""
    if not candidates:
        return set()
    now = _now_sql(engine)
    query = text(
        f"SELECT process_id FROM lr_processes WHERE expires_us > {now} AND process_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    with engine.begin() as conn:
        rows = conn.execute(query, _with_now(engine, {"ids": list(candidates)})).all()
        conn.execute(
            text(f"DELETE FROM lr_processes WHERE expires_us < {now} - :forget"),
            _with_now(engine, {"forget": FORGET_AFTER_US}),
        )
    return {str(row.process_id) for row in rows}
