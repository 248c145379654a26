"""The read-your-writes barrier of the usage reads: ReadSide.ask_after_settlements waits for the
account's settlements queued in this process (the runtime's port) before it reads."""

from typing import cast
from uuid import UUID, uuid4

from sqlalchemy import Engine

from projections.queries.freshness import ReadSide, query
from projections.runner import ProjectionRunner


def test_the_barrier_is_passed_before_the_query_reads() -> None:
    order: list[str] = []
    account = uuid4()

    @query()  # needs no projection: nothing to catch up
    def rows(engine: Engine, account_id: UUID, limit: int) -> str:
        order.append(f"read {limit}")
        return f"rows of {account_id}"

    reads = ReadSide(
        cast(Engine, None),
        cast(ProjectionRunner, None),
        settlements_of=lambda account_id: order.append(f"settled {account_id}"),
    )
    assert reads.best_effort.ask_after_settlements(account, rows, account, 3) == (
        f"rows of {account}"
    )
    assert order == [f"settled {account}", "read 3"]
    assert reads.ask(rows, account, 1) and order[-1] == "read 1"  # ask: no barrier
    assert len(order) == 3
