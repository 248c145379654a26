"""A gateway process for the multi-process policy tests: `infrastructure.server.app_factory`'s
wiring, with one difference: its clock can be moved a minute on by SIGUSR1, so "the next minute
admits again" is shown without the test waiting a real minute. Everything else (the ledger, the
lookup, the trailing-60 s windows) is the production code, judging by that clock.

    python -m tests.policy.shifted_gateway PORT
"""

import os
import signal
import sys
from datetime import datetime, timedelta
from typing import Any

import uvicorn

from application.clock import system_clock

SHIFT_ON_SIGNAL = timedelta(seconds=61)
_shift = [timedelta(0)]


def clock() -> datetime:
    return system_clock() + _shift[0]


def _move_on(*_: Any) -> None:
    _shift[0] += SHIFT_ON_SIGNAL


def factory() -> Any:
    from infrastructure.http.app import create_app
    from infrastructure.runtime import open_runtime
    from infrastructure.server import load_catalogue_for
    from infrastructure.settings import load_settings

    signal.signal(signal.SIGUSR1, _move_on)
    settings = load_settings()
    catalogue = load_catalogue_for(settings, os.environ["LOWROUTER_DEMO_BASE_URL"])
    return create_app(open_runtime(settings, clock, prepare_schema=False), catalogue, clock=clock)


if __name__ == "__main__":
    uvicorn.run(
        "tests.policy.shifted_gateway:factory",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # as `lowrouter serve`
    )
