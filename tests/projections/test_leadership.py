"""One background projection runner per database works at a time; a standby takes over when
the leader stops."""

import time
from pathlib import Path

from sqlalchemy import text

from domain.actor import Actor
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings, load_settings
from tests.support.stores import PEPPER

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
        account = first.app.open_account("led", OPERATOR).account
        first.spend.fund(account.id, 5, OPERATOR).result()
        assert wait_until(lambda: all(s.lag == 0 for s in second.projections.status()))

        first.projections.stop()  # the leader stops: the standby takes over
        second.spend.fund(account.id, 7, OPERATOR).result()
        assert wait_until(lambda: second.projections.leadership())
        assert wait_until(lambda: all(s.lag == 0 for s in second.projections.status()))
    finally:
        first.close()
        second.close()


def test_the_lease_lasts_as_long_as_the_setting_says(postgres_url: str, tmp_path: Path) -> None:
    """LOWROUTER_LEADERSHIP_LEASE_SECONDS bounds a takeover (README, "Running on many hosts"):
    the lease a runner takes expires that long after its last renewal."""
    env = {
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        "LOWROUTER_LEADERSHIP_LEASE_SECONDS": "2.5",
    }
    runtime = open_runtime(load_settings(env, database_url=postgres_url))
    try:
        assert runtime.projections.leadership() is True
        with runtime.engine.connect() as conn:
            left = conn.execute(
                text("SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM lr_leadership")
            ).scalar_one()
        # renewed every quarter of the lease: never less than three quarters of it left
        assert 2.5 * 0.75 - 0.2 < float(left) <= 2.5
    finally:
        runtime.close()
