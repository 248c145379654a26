"""Feeding projections from the event log, in batches, each batch one transaction.

Every projection has a tracking position (the last notification id it applied). A batch is applied
only if the position is still where the batch started (compare-and-set in the same transaction),
so any number of runners — the one inside each `lowrouter serve`, `lowrouter projections run`, or a
command waiting for its own change — can work at once without applying an event twice.
A runner never queues behind another's open batch (the claim skips a locked position row): a
batch left open by a vanished host holds its row until the server cuts it off, and every runner
queued behind it would become one more open batch to wait out in turn (see `BUSY_RETRY`).

We read notifications with eventsourcing's recorder and decode them with its mapper, but apply
them in batches of many events per transaction rather than eventsourcing's ProjectionRunner's one
transaction per event, which could not keep up with the hot path (see README, Performance).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from sqlalchemy import Connection, Engine, insert, select, update

from application.retry import backoff, is_transient
from domain.redaction import safe_error_text
from projections.base import Projection
from projections.schema import from_us, metadata, positions, projection_failures

log = logging.getLogger("lowrouter.projections")

BATCH_SIZE = 2000
ACCESS = "keys"  # the projection access is judged from: its failure stops the gateway's auth
RETRY_FAILED = 30.0  # seconds before a failed (non-access) projection is tried again
MIN_CYCLE = 0.1  # seconds: at most 10 cycles a second, each a batch (see _run)
STANDBY_INTERVAL = 0.15  # how often a standby runner checks whether it should take over
BUSY_RETRY = 0.005  # seconds before looking again at a position another runner's batch holds


TRANSIENT_ATTEMPTS = 6  # tries of a batch through transient store errors, backing off
PERMANENT_AFTER = 2  # the same (non-transient) failure on the same event this often: recorded


class ProjectionFailed(RuntimeError):
    """A projection could not apply an event. It stops there; it never skips an event."""

    def __init__(self, name: str, position: int, error: BaseException) -> None:
        self.name, self.position, self.error = name, position, error
        super().__init__(
            f"projection {name!r} failed on the event at position {position}: "
            f"{safe_error_text(error)}"
        )


class StoreTrouble(RuntimeError):
    """The store kept failing transiently; nothing is recorded, the runner tries again later."""


class ProjectionLagging(RuntimeError):
    """A projection did not reach a position in time (no runner alive, or it failed)."""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    moved_at: datetime | None = None  # when its position last moved

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


def now_us() -> int:
    return time.time_ns() // 1000


def claim_position(conn: Connection, name: str, start: int, end: int) -> bool:
    """In a batch's transaction: move `name`'s position from `start` to `end`, if it is still
    `start` and no other runner's batch holds its row (that one is skipped, not waited for).

    PostgreSQL: a batch whose runner vanished must not keep the row locked for long: the server
    ends the transaction after 5 s idle (set here, per transaction, as a transaction-mode pooler
    allows). A runner that vanished in the middle of a statement leaves it *active* instead,
    which no timeout ends: keepalive probes do (infrastructure.database, KEEPALIVE_*)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '5s'")
    unclaimed = (
        select(positions.c.name)
        .where(positions.c.name == name, positions.c.position == start)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    changed = conn.execute(
        update(positions)
        .where(positions.c.name == unclaimed)
        .values(position=end, updated_us=now_us())
    ).rowcount
    return bool(changed)


class ProjectionRunner:
    def __init__(
        self,
        engine: Engine,
        app: Application[UUID],
        projections: Sequence[Projection],
        leadership: Callable[[], bool] = lambda: True,
        listen_conninfo: str | None = None,
    ) -> None:
        self.engine = engine
        self.app = app
        # Only one background runner per database works at a time (the others stand by), so
        # several processes don't race to apply the same batches. Commands waiting for their own
        # change still help directly (wait_for), leader or not.
        self.leadership = leadership
        # Whether this runner led at its last look: the reconciler and the chain follow it.
        self.leading = False
        # PostgreSQL: where to LISTEN for new events (a direct connection: a transaction-mode
        # pooler cannot hold a LISTEN). None: poll only.
        self._listen_conninfo = listen_conninfo
        self.projections = {p.name: p for p in projections}
        # Every projection that failed on an event, by name. Only the access projection's
        # failure stops this runner (and makes the gateway refuse to authenticate); the others
        # stay stuck at their event, retried now and then, while the rest keep following.
        self.failures: dict[str, ProjectionFailed] = {}
        self._failed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None

    # Schema -------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create missing tables; rebuild a projection whose schema version changed."""
        metadata.create_all(self.engine, tables=[positions, projection_failures])
        with self.engine.begin() as conn:
            known = dict(conn.execute(select(positions.c.name, positions.c.schema_version)).all())
        for projection in self.projections.values():
            if projection.name in known and known[projection.name] != projection.schema_version:
                self.reset(projection.name)
            else:
                metadata.create_all(self.engine, tables=list(projection.tables))
                with self.engine.begin() as conn:
                    self._ensure_position_row(conn, projection)

    def reset(self, name: str) -> None:
        """Drop a projection's tables and start it again from the beginning of the log."""
        projection = self.projections[name]
        metadata.drop_all(self.engine, tables=list(projection.tables))
        metadata.create_all(self.engine, tables=list(projection.tables))
        with self.engine.begin() as conn:
            conn.execute(positions.delete().where(positions.c.name == name))
            conn.execute(projection_failures.delete().where(projection_failures.c.name == name))
            self._ensure_position_row(conn, projection)
        type(projection).__init__(projection)  # forget any in-memory memo

    @staticmethod
    def _ensure_position_row(conn: Connection, projection: Projection) -> None:
        exists = conn.execute(
            select(positions.c.name).where(positions.c.name == projection.name)
        ).first()
        if not exists:
            conn.execute(
                insert(positions).values(
                    name=projection.name,
                    position=0,
                    updated_us=now_us(),
                    schema_version=projection.schema_version,
                )
            )

    # Reading positions --------------------------------------------------------------------

    def position(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(positions.c.position).where(positions.c.name == name)
                ).scalar_one()
            )

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        query = select(positions.c.name, positions.c.position, positions.c.updated_us)
        with self.engine.connect() as conn:
            found = {name: (position, moved) for name, position, moved in conn.execute(query)}
        return [
            ProjectionStatus(name, found[name][0], head, from_us(found[name][1]))
            for name in self.projections
        ]

    @property
    def failure(self) -> ProjectionFailed | None:
        """The access projection's failure, if it failed: access cannot be judged any more."""
        return self.failures.get(ACCESS)

    # Processing ---------------------------------------------------------------------------

    def catch_up(
        self,
        names: Iterable[str] | None = None,
        until: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        wait_for_busy: bool = True,
    ) -> int:
        """Apply every event up to the head (or `until`). Returns how many events were applied.

        A projection that fails does not hold the others back: each is caught up in turn, and
        the first failure is raised once all have had their go. A projection whose next batch
        another runner is applying is waited for (polling its position), or, with
        `wait_for_busy=False` (the background cycle), left for the next call."""
        applied = 0
        head = self.head()
        stop = head if until is None else min(head, until)
        first_failure: ProjectionFailed | None = None
        for name in list(self.projections) if names is None else names:
            try:
                applied += self._catch_up_one(name, stop, head, progress, wait_for_busy)
            except ProjectionFailed as failure:
                self.failures[name] = failure
                self._failed_at[name] = time.monotonic()
                first_failure = first_failure or failure
        if first_failure is not None:
            raise first_failure
        return applied

    def _catch_up_one(
        self,
        name: str,
        stop: int,
        head: int,
        progress: Callable[[str, int, int], None] | None,
        wait_for_busy: bool = True,
    ) -> int:
        applied = 0
        projection = self.projections[name]
        position = self.position(name)
        while position < stop:
            claimed, position, count = self._apply_next_batch(projection, position, stop)
            if not claimed:  # another runner moved it, or is applying a batch of it right now
                moved = self.position(name)
                if moved == position:
                    if not wait_for_busy:
                        return applied
                    time.sleep(BUSY_RETRY)
                position = moved
            applied += count
            if progress is not None:
                progress(name, position, head)
        self.failures.pop(name, None)  # it got past whatever stopped it
        return applied

    def _due(self) -> list[str]:
        """The projections a background cycle works on: all but those that failed recently."""
        now = time.monotonic()
        return [
            name
            for name in self.projections
            if name not in self.failures or now - self._failed_at[name] >= RETRY_FAILED
        ]

    def _apply_next_batch(
        self, projection: Projection, start: int, stop: int
    ) -> tuple[bool, int, int]:
        """Apply the events after `start` (up to `stop`) in one transaction, if the position is
        still `start`. Returns (claimed, the new position, events applied).

        A transient store error (a statement timeout, a cancelled statement, a lost connection,
        a serialization failure) is retried with backoff and jitter and never recorded: if the
        store keeps failing, the error is raised as it is and the runner tries again later. A
        projection's own failure is recorded (and stops it) only when it repeats on the same
        event."""
        repeats = 0
        for attempt in range(TRANSIENT_ATTEMPTS):
            try:
                return self._apply_batch(projection, start, stop)
            except ProjectionFailed as failure:
                if is_transient(failure.error):
                    error: Exception = failure
                else:
                    repeats += 1
                    if repeats >= PERMANENT_AFTER:
                        self._record_failure(failure)
                        raise
                    continue  # once more at once: a failure that does not repeat is not one
            except Exception as raised:
                if not is_transient(raised):
                    raise
                error = raised
            if attempt == TRANSIENT_ATTEMPTS - 1:
                cause = error.error if isinstance(error, ProjectionFailed) else error
                # `from None`: a chained driver error would carry the SQL's bound parameters
                # (token hashes) into every traceback that logs this.
                raise StoreTrouble(safe_error_text(cause)) from None
            log.warning(
                "projection %r: transient store error at position %d (%s); retrying",
                projection.name,
                start,
                type(error.error if isinstance(error, ProjectionFailed) else error).__name__,
            )
            time.sleep(backoff(attempt, base=0.1, cap=2.0))
        raise AssertionError("unreachable")

    def _apply_batch(self, projection: Projection, start: int, stop: int) -> tuple[bool, int, int]:
        end, events = self.read_batch(projection, start, stop)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # A projection is a pure function of the log: after a crash it re-applies from
                # its durable position, so its commits need not wait for the disk (rows and
                # position commit or vanish together).
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            claimed = claim_position(conn, projection.name, start, end)
            if not claimed:  # another runner applied this batch first, or is applying it
                conn.rollback()
                return False, start, 0
            try:
                projection.apply(conn, events)
            except Exception as error:
                raise ProjectionFailed(
                    projection.name, self.first_position(events, end), error
                ) from error
            # Past a recorded failure (the code was fixed and the runner restarted): clear it.
            failures = projection_failures
            conn.execute(
                failures.delete().where(
                    failures.c.name == projection.name, failures.c.position <= end
                )
            )
        return True, end, len(events)

    def read_batch(
        self, projection: Projection, start: int, stop: int
    ) -> tuple[int, list[tuple[int, Any]]]:
        """The projection's events after `start` (at most a batch, up to `stop`), decoded, and
        the position the batch reaches: filtered-out events advance it too."""
        notifications = self.app.recorder.select_notifications(
            start=start + 1, limit=BATCH_SIZE, stop=stop, topics=projection.topics
        )
        end = notifications[-1].id if len(notifications) == BATCH_SIZE else stop
        events: list[tuple[int, Any]] = []
        for n in notifications:
            try:
                events.append((n.id, self.app.mapper.to_domain_event(n)))
            except Exception as error:
                raise ProjectionFailed(projection.name, n.id, error) from error
        return end, events

    def _record_failure(self, failure: ProjectionFailed) -> None:
        """Keep the failure where every process sees it; never hide the original error."""
        row = {
            "position": failure.position,
            "error": str(failure)[:2000],
            "at_us": now_us(),
        }
        try:
            with self.engine.begin() as conn:
                table = projection_failures
                done = conn.execute(
                    update(table).where(table.c.name == failure.name).values(**row)
                ).rowcount
                if not done:
                    conn.execute(insert(table).values(name=failure.name, **row))
        except Exception as error:
            log.error(
                "could not record the failure of projection %r: %s",
                failure.name,
                safe_error_text(error),
            )

    def recorded_failure(self, name: str) -> str | None:
        """The failure recorded for a projection by any process, if it has not been cleared."""
        with self.engine.connect() as conn:
            error = conn.execute(
                select(projection_failures.c.error).where(projection_failures.c.name == name)
            ).scalar_one_or_none()
        return None if error is None else str(error)

    @staticmethod
    def first_position(events: list[tuple[int, Any]], end: int) -> int:
        return events[0][0] if events else end

    def wait_for(
        self, position: int, names: Iterable[str] = ("keys",), timeout: float = 10.0
    ) -> None:
        """Return once the named projections have applied `position`, helping them along.

        Commands that change access call this, so a request that starts after the command
        returned is judged by the new state on every process.
        """
        deadline = time.monotonic() + timeout
        for name in names:
            while self.position(name) < position:
                self.catch_up([name], until=position)
                if time.monotonic() > deadline:
                    raise ProjectionLagging(f"projection {name!r} has not reached {position}")

    # Running in the background ------------------------------------------------------------

    def start(self, poll_interval: float = 0.05) -> None:
        """Run in a thread until stop(): catch up, then wait for a wake-up or the poll interval."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(poll_interval,), name="lowrouter-projections", daemon=True
        )
        self._thread.start()
        if self._listen_conninfo and hasattr(self.app.recorder, "channel_name"):
            self._listener = threading.Thread(
                target=self._listen, name="lowrouter-projections-listen", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        """PostgreSQL: the event recorder NOTIFYs on every insert; wake the runner at once
        instead of waiting for the next poll. (SQLite cannot notify: the runner polls.) Only
        the leading runner listens, on a connection of its own, named `<application>-listen`."""
        import psycopg
        from psycopg.sql import SQL, Identifier

        recorder: Any = self.app.recorder
        name = getattr(getattr(recorder.datastore, "database", None), "application_name", "")
        failing = False  # one line when LISTEN is lost and one when it is back, not one a second
        while not self._stop.is_set():
            if not self.leading:
                self._stop.wait(STANDBY_INTERVAL)
                continue
            try:
                with psycopg.connect(
                    str(self._listen_conninfo),
                    autocommit=True,
                    application_name=f"{name or 'lowrouter'}-listen",
                ) as conn:
                    conn.execute(SQL("LISTEN {0}").format(Identifier(recorder.channel_name)))
                    if failing:
                        log.warning("LISTEN for new events is back")
                        failing = False
                    while not self._stop.is_set() and self.leading:
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake.set()
            except Exception as error:
                if not failing:
                    log.warning(
                        "LISTEN for new events failed (%s); polling until it reconnects",
                        safe_error_text(error),
                    )
                    failing = True
                self._stop.wait(1.0)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._listener = None
        self.leading = False
        release = getattr(self.leadership, "release", None)
        if release is not None:
            release()  # let a standby runner in another process take over at once

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    @property
    def stopped_unexpectedly(self) -> bool:
        """Started, but no longer following the log (failed on an event, or its thread died)."""
        if self.failure is not None:
            return True
        return self._thread is not None and not self._thread.is_alive() and not self._stop.is_set()

    def _run(self, poll_interval: float) -> None:
        while not self._stop.is_set():
            cycle_started = time.monotonic()
            try:
                self.leading = self.leadership()
                if not self.leading:
                    self._stop.wait(STANDBY_INTERVAL)
                    continue
                self.catch_up(self._due(), wait_for_busy=False)
            except ProjectionFailed as failure:
                if self.failure is not None:
                    log.critical("%s; the runner has stopped", self.failure)
                    self.leading = False
                    release = getattr(self.leadership, "release", None)
                    if release is not None:
                        release()  # a standby elsewhere may try (and will stop at the same event)
                    return
                log.critical(
                    "%s; the other projections keep following, this one is retried every %g s",
                    failure,
                    RETRY_FAILED,
                )
            except Exception as error:  # a database hiccup: log it and try again shortly
                # The safe text, not the traceback: a driver error's parameters hold hashes.
                log.error("projection runner error; retrying: %s", safe_error_text(error))
                time.sleep(0.5)
            self._wake.wait(poll_interval)
            self._wake.clear()
            # Under load every append notifies; coalesce them into at most one cycle per
            # MIN_CYCLE so the runner works in batches instead of once per event.
            rest = MIN_CYCLE - (time.monotonic() - cycle_started)
            if rest > 0:
                self._stop.wait(rest)
