"""Asking the read models: a query names the projections whose tables it reads, and asking it
brings those projections up to the head of the log first (read-your-writes), so no caller
guesses what to catch up.

Catching up is local in every `LOWROUTER_BACKGROUND` mode: the asking process applies the
missing batches itself (ProjectionRunner.catch_up), beside whichever runner leads — positions
are compare-and-set, so nothing is applied twice, and a batch another runner holds is waited
for.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from domain.redaction import safe_error_text
from projections.runner import ProjectionFailed, ProjectionRunner

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("lowrouter.reads")


@dataclass(frozen=True)
class Query(Generic[P, R]):
    """A read of the read models and the projections it needs fresh (those whose tables it
    reads, and those their content follows: deliveries follow the forensics flags). Not
    callable: ask it through a ReadSide; `run` reads the tables as they are (for tests, and for
    queries that compose others)."""

    needs: tuple[str, ...]
    run: Callable[Concatenate[Engine, P], R]

    @property
    def name(self) -> str:
        return getattr(self.run, "__name__", repr(self.run))


def query(*needs: str) -> Callable[[Callable[Concatenate[Engine, P], R]], Query[P, R]]:
    """Declare a read function (its first argument the engine) as a Query needing `needs`."""

    def declare(run: Callable[Concatenate[Engine, P], R]) -> Query[P, R]:
        return Query(tuple(needs), run)

    return declare


@dataclass(frozen=True)
class ReadSide:
    """Answers queries, each from projections caught up to the head of the log.

    Strict (the default): a projection that failed raises ProjectionFailed — the answer would
    be wrong. `best_effort`: a failed projection, or a store too busy to catch up (SQLite's
    lock), answers from the tables as they are, for figures that may lag (a page, a key's
    last use) but must not hide what is current."""

    engine: Engine
    runner: ProjectionRunner
    tolerate_lag: bool = False
    # The port to this process's ledger writer (the runtime supplies it): returns once every
    # settlement it queued for the account before the call is durable. None: nothing queued
    # here (a CLI, a test of the tables).
    settlements_of: Callable[[UUID], None] | None = None

    @property
    def best_effort(self) -> "ReadSide":
        return replace(self, tolerate_lag=True)

    def ask(self, asked: Query[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        self._freshen(asked)
        return asked.run(self.engine, *args, **kwargs)

    def ask_after_settlements(
        self, account_id: UUID, asked: Query[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """`ask`, after this process's settlements queued for the account are durable: a
        gateway that settles after the answer has answered requests whose usage rows are not
        in the log yet, and a read of the account's usage must see them (read-your-writes)."""
        if self.settlements_of is not None:
            self.settlements_of(account_id)
        return self.ask(asked, *args, **kwargs)

    def _freshen(self, asked: "Query[..., Any]") -> None:
        if not asked.needs:
            return
        # In the runner's order, whatever the declaration's: a projection that reads another's
        # tables (the webhook outbox reads the forensics flags) comes after it.
        names = [name for name in self.runner.projections if name in asked.needs]
        if len(names) != len(set(asked.needs)):
            raise ValueError(f"{asked.name} needs an unknown projection: {asked.needs}")
        try:
            self.runner.catch_up(names)
        except (ProjectionFailed, OperationalError) as error:
            if not self.tolerate_lag:
                raise
            # The safe text: a driver error's parameters can hold token hashes.
            log.warning(
                "%s answered from the tables as they are: %s", asked.name, safe_error_text(error)
            )
