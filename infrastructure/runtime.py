"""Everything a process needs, wired once: the ledger, spend control, projections."""

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from application.clock import Clock, system_clock
from application.keys import Lowrouter
from application.reconcile import reconcile
from application.spend import SpendControl
from infrastructure.observability.metrics import LedgerMetrics
from infrastructure.persistence import (
    build_engine,
    build_key_lookup,
    build_leadership,
    build_ledger,
    build_page_lock,
)
from infrastructure.settings import Settings
from infrastructure.webhooks.vault import create_secrets_table
from projections import all_projections
from projections.chain import catch_up_chain
from projections.holds import stale_holds
from projections.lookup import KeyLookup
from projections.runner import ProjectionRunner
from projections.webhooks import create_delivery_tables

if TYPE_CHECKING:  # imported when first used: the webhooks load only where they run
    from application.webhooks import Webhooks


@dataclass
class Runtime:
    settings: Settings
    ledger: Lowrouter
    spend: SpendControl
    engine: Engine
    projections: ProjectionRunner
    lookup: KeyLookup
    _stopping: threading.Event = field(default_factory=threading.Event)
    _deliverer: Any = None  # infrastructure.webhooks.deliverer.Deliverer, once started

    @cached_property
    def webhooks(self) -> "Webhooks":
        """The webhook use cases (application.webhooks.Webhooks)."""
        from infrastructure.webhooks.wiring import webhook_use_cases

        return webhook_use_cases(self)

    def reconcile(self) -> int:
        """Settle holds older than the hold timeout (see application.reconcile)."""
        self.projections.catch_up(["usage"])
        return reconcile(
            self.ledger,
            self.spend,
            lambda before: stale_holds(self.engine, before),
            timedelta(seconds=self.settings.hold_timeout_seconds),
        )

    def start_background(self, reconcile_every: float = 30.0, chain_every: float = 5.0) -> None:
        """What `lowrouter serve` runs beside requests: the projections, the reconciler and the
        tamper-evidence chain."""
        self.projections.start()
        for target, every, name in (
            (self._reconcile_forever, reconcile_every, "lowrouter-reconciler"),
            (self._chain_forever, chain_every, "lowrouter-chain"),
        ):
            threading.Thread(target=target, args=(every,), daemon=True, name=name).start()
        from infrastructure.webhooks.wiring import start_deliverer

        self._deliverer = start_deliverer(self)  # webhooks, on a loop of its own

    def _chain_forever(self, every: float) -> None:
        """Extend the tamper-evidence chain (projections.chain) as events are appended."""
        while not self._stopping.wait(every):
            try:
                catch_up_chain(self)
            except Exception:
                logging.getLogger("lowrouter.chain").exception("chain catch-up failed")

    def _reconcile_forever(self, every: float) -> None:
        while not self._stopping.wait(every):
            try:
                settled = self.reconcile()
                if settled:
                    logging.getLogger("lowrouter.reconcile").warning(
                        "settled %d stale holds at the held amount (a gateway stopped before "
                        "settling them)",
                        settled,
                        extra={"event": "reconciled", "settled": settled},
                    )
            except Exception:
                logging.getLogger("lowrouter.reconcile").exception("reconciler pass failed")

    def close(self) -> None:
        self._stopping.set()
        if self._deliverer is not None:
            self._deliverer.stop()
        self.projections.stop()
        self.lookup.close()
        self.spend.close()
        self.ledger.close()
        self.engine.dispose()


def open_runtime(
    settings: Settings, clock: Clock = system_clock, prepare_schema: bool = True
) -> Runtime:
    """Open the store, create or upgrade the projection tables, and wire read-your-writes:
    commands that change access return only once the key lookup shows the change.

    Worker processes pass prepare_schema=False: their parent created or upgraded the schema, and
    concurrent DDL on PostgreSQL fails ("tuple concurrently updated")."""
    ledger = build_ledger(settings, clock, create_tables=prepare_schema)
    engine = build_engine(settings.database_url)
    runner = ProjectionRunner(
        engine, ledger, all_projections(), leadership=build_leadership(settings.database_url)
    )
    if prepare_schema:
        runner.create_schema()
        create_delivery_tables(engine)
        create_secrets_table(engine)
    ledger.access_barrier = lambda position: runner.wait_for(position, names=("keys",))
    observer = LedgerMetrics() if settings.metrics else None
    spend = SpendControl(ledger, build_page_lock(settings.database_url), observer)
    return Runtime(settings, ledger, spend, engine, runner, build_key_lookup(settings.database_url))
