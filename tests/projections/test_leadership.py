"""One background projection runner per database works at a time; a standby takes over when
the leader stops."""

import time

from domain.actor import Actor
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings

OPERATOR = Actor("operator", "test")


def wait_until(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_only_one_runner_leads_and_a_standby_takes_over(settings: Settings) -> None:
    first, second = open_runtime(settings), open_runtime(settings)
    try:
        assert first.projections.leadership() is True
        assert second.projections.leadership() is False  # the lock is taken
        first.projections.start()
        second.projections.start()
        account = first.ledger.open_account("led", OPERATOR).account
        first.spend.fund(account.id, 5, OPERATOR).result()
        assert wait_until(lambda: all(s.lag == 0 for s in second.projections.status()))

        first.projections.stop()  # the leader stops: the standby takes over
        second.spend.fund(account.id, 7, OPERATOR).result()
        assert wait_until(lambda: second.projections.leadership())
        assert wait_until(lambda: all(s.lag == 0 for s in second.projections.status()))
    finally:
        first.close()
        second.close()
