"""Everything a process needs, wired once: the application, spend control, projections."""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Engine

from application.app import Lowrouter
from application.clock import Clock, system_clock
from application.reconcile import reconcile
from application.retry import retry_transient
from application.spend import SpendControl
from domain.redaction import safe_error_text
from infrastructure.chain.store import catch_up_chain
from infrastructure.database import Database
from infrastructure.key_uses import create_key_uses_table
from infrastructure.leadership import ensure_leadership_table
from infrastructure.liveness import ProcessLease, create_processes_table, live_processes
from infrastructure.observability.metrics import LedgerMetrics
from infrastructure.persistence import (
    PostgresPageLock,
    build_app,
    build_engine,
    build_key_lookup,
    build_leadership,
    build_page_lock,
    open_database,
)
from infrastructure.settings import Settings, postgres_conninfo
from infrastructure.webhooks.vault import create_secrets_table
from projections import all_projections
from projections.lookup import KeyLookup, live_key_count
from projections.queries.freshness import ReadSide
from projections.queries.holds import stale_holds
from projections.runner import ProjectionRunner
from projections.webhooks import create_delivery_tables

SCHEMA_LOCK = UUID("6c6f7772-6f75-7465-7273-6368656d6121")  # an advisory lock key, not an account
LEADERSHIP_TICK = 0.1  # seconds between the background jobs' looks at the leadership

if TYPE_CHECKING:  # imported when first used: the webhooks load only where they run
    from application.webhooks import Webhooks


@dataclass
class Runtime:
    settings: Settings
    app: Lowrouter
    spend: SpendControl
    engine: Engine
    projections: ProjectionRunner
    lookup: KeyLookup
    # PostgreSQL: the process's one pool, which all of the above borrow from (None on SQLite).
    database: Database | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _deliverer: Any = None  # infrastructure.webhooks.deliverer.Deliverer, once started
    lease: ProcessLease | None = None  # this process's liveness lease, once it serves requests
    _witness: ProcessLease | None = None  # a lease that only watches the store (see _live_owners)

    def start_lease(self) -> None:
        """This process serves requests: register its liveness lease and record it on every
        hold it reserves, so the reconciler leaves them alone while it lives."""
        if self.lease is None:
            self.lease = ProcessLease(self.engine, self.settings.process_lease_seconds).start()
            self.spend.owner = self.lease.process_id

    @cached_property
    def reads(self) -> ReadSide:
        """The read models, each query's projections caught up first (projections.queries)."""
        return ReadSide(self.engine, self.projections, settlements_of=self._settlements_of)

    def _settlements_of(self, account_id: UUID) -> None:
        """A read of the account's page queues behind the writer's settlements for it, so
        once it answers they are durable (the barrier ReadSide.ask_after_settlements uses)."""
        self.spend.view(account_id).result()

    @cached_property
    def webhooks(self) -> "Webhooks":
        """The webhook use cases (application.webhooks.Webhooks)."""
        from infrastructure.webhooks.wiring import webhook_use_cases

        return webhook_use_cases(self)

    def reconcile(self) -> int:
        """Settle holds older than the hold timeout (see application.reconcile). A failed usage
        projection does not stop it (best effort): settling is idempotent per request id, so a
        hold whose settlement the open-holds table has not seen yet is left as it is by the
        ledger."""
        timeout = self.settings.hold_timeout_seconds
        return reconcile(
            self.app,
            self.spend,
            lambda before: self.reads.best_effort.ask(stale_holds, before),
            timedelta(seconds=timeout),
            live_owners=self._live_owners,
            backstop=timedelta(seconds=timeout + self.settings.max_request_seconds),
        )

    def _live_owners(self, owners: Collection[str]) -> set[str]:
        """The owners whose leases are live; all of them right after an outage this process
        saw (infrastructure.liveness): a live owner may not have renewed yet."""
        witness = self.lease
        if witness is None:  # a process that serves no requests watches the store all the same
            if self._witness is None:
                self._witness = ProcessLease(
                    self.engine, self.settings.process_lease_seconds
                ).start()
            witness = self._witness
        if not witness.steady():
            return set(owners)
        return live_processes(self.engine, owners)

    def _reconcile_and_log(self) -> None:
        settled = self.reconcile()
        if settled:
            logging.getLogger("lowrouter.reconcile").warning(
                "settled %d stale holds at the held amount (a gateway stopped before "
                "settling them)",
                settled,
                extra={"event": "reconciled", "settled": settled},
            )

    def start_background(
        self, reconcile_every: float | None = None, chain_every: float = 5.0
    ) -> None:
        """What `lowrouter serve` runs beside requests: the projections, the reconciler and the
        tamper-evidence chain. All three follow one leader per database (the projection
        runner's leadership): on the other processes they stand by, and take over together."""
        every = reconcile_every or self.settings.reconcile_interval_seconds
        self.projections.start()
        for job, interval, name in (
            (self._reconcile_and_log, every, "lowrouter-reconciler"),
            (lambda: catch_up_chain(self), chain_every, "lowrouter-chain"),
        ):
            threading.Thread(
                target=self._while_leading, args=(job, interval, name), daemon=True, name=name
            ).start()
        from infrastructure.webhooks.wiring import start_deliverer

        self._deliverer = start_deliverer(self)  # webhooks, on a loop of its own

    def _while_leading(self, job: Callable[[], object], every: float, name: str) -> None:
        """Run `job` every `every` seconds while this process leads, and at once on taking
        over (a crashed leader's open holds and unchained events are not left waiting)."""
        last: float | None = None
        while not self._stopping.wait(LEADERSHIP_TICK):
            if not self.projections.leading:
                last = None
                continue
            now = time.monotonic()
            if last is not None and now - last < every:
                continue
            last = now
            try:
                # A transient store error (a blip, a failover) is retried here with backoff and
                # jitter rather than waiting a whole interval; anything else is logged.
                retry_transient(job, attempts=4, base=0.2)
            except Exception as error:  # the safe text: a driver error's parameters hold hashes
                logging.getLogger(name.replace("-", ".")).error(
                    "%s pass failed: %s", name, safe_error_text(error)
                )

    def close(self) -> None:
        self._stopping.set()
        if self._deliverer is not None:
            self._deliverer.stop()
        self.projections.stop()
        self.lookup.close()
        self.spend.close()
        if self.lease is not None:  # after the last settlement: its holds are all closed
            self.lease.close()
        if self._witness is not None:
            self._witness.close()
        self.app.close()
        self.engine.dispose()
        if self.database is not None:
            self.database.close()  # last: everything above borrowed from it


def open_runtime(
    settings: Settings,
    clock: Clock = system_clock,
    prepare_schema: bool = True,
    role: str = "cli",
) -> Runtime:
    """Open the store, create or upgrade the projection tables, and wire read-your-writes:
    commands that change access return only once the key lookup shows the change.

    Worker processes pass prepare_schema=False: their parent created or upgraded the schema, and
    concurrent DDL on PostgreSQL fails ("tuple concurrently updated"). `role` names the
    process's PostgreSQL connections (`lowrouter-<role>` in pg_stat_activity)."""
    database = open_database(settings, role)
    # Hosts starting together take turns preparing the schema (concurrent DDL fails).
    turns = PostgresPageLock(database) if prepare_schema and database else None
    try:
        with turns([SCHEMA_LOCK]) if turns else contextlib.nullcontext():
            app = build_app(settings, clock, create_tables=prepare_schema, database=database)
            engine = build_engine(settings.database_url, database)
            listen = settings.listen_url
            runner = ProjectionRunner(
                engine,
                app,
                all_projections(),
                leadership=build_leadership(
                    settings.database_url, settings.leadership_lease_seconds, database
                ),
                listen_conninfo=postgres_conninfo(listen) if listen and database else None,
            )
            if prepare_schema:
                runner.create_schema()
                create_delivery_tables(engine)
                create_secrets_table(engine)
                create_key_uses_table(engine)
                create_processes_table(engine)
                if database is not None:
                    ensure_leadership_table(database)
    except BaseException:
        if database is not None:
            database.close()
        raise
    app.access_barrier = lambda position: runner.wait_for(position, names=("keys",))
    app.max_keys_per_account = settings.max_keys_per_account or None
    app.live_key_count = lambda account_id: live_key_count(engine, account_id, app.clock())
    observer = LedgerMetrics() if settings.metrics else None
    spend = SpendControl(app, build_page_lock(settings.database_url, database), observer)
    lookup = build_key_lookup(settings.database_url, database)
    return Runtime(settings, app, spend, engine, runner, lookup, database)
