"""Everything a process needs, wired once: the ledger, spend control, projections."""

from dataclasses import dataclass

from sqlalchemy import Engine

from application.clock import Clock, system_clock
from application.keys import Lowrouter
from application.spend import SpendControl
from infrastructure.persistence import build_engine, build_ledger
from infrastructure.settings import Settings
from projections import all_projections
from projections.runner import ProjectionRunner


@dataclass
class Runtime:
    settings: Settings
    ledger: Lowrouter
    spend: SpendControl
    engine: Engine
    projections: ProjectionRunner

    def close(self) -> None:
        self.projections.stop()
        self.spend.close()
        self.ledger.close()
        self.engine.dispose()


def open_runtime(settings: Settings, clock: Clock = system_clock) -> Runtime:
    """Open the store, create or upgrade the projection tables, and wire read-your-writes:
    commands that change access return only once the key lookup shows the change."""
    ledger = build_ledger(settings, clock)
    engine = build_engine(settings.database_url)
    runner = ProjectionRunner(engine, ledger, all_projections())
    runner.create_schema()
    ledger.access_barrier = lambda position: runner.wait_for(position, names=("keys",))
    return Runtime(settings, ledger, SpendControl(ledger), engine, runner)
