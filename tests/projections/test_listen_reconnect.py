"""The background runner's LISTEN while PostgreSQL is out: it retries every second and says so
once, not with a traceback a second (a 15 s outage wrote fifteen)."""

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from projections.runner import ProjectionRunner


class QuickStop(threading.Event):
    """The runner's stop event, counting the retries' waits and shortening them."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(0.005)


def test_a_lost_listen_is_logged_once_however_many_retries_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = SimpleNamespace(channel_name="events", datastore=SimpleNamespace())
    app: Any = SimpleNamespace(recorder=recorder)
    nowhere = "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2"  # refused
    runner = ProjectionRunner(Any, app, [], listen_conninfo=nowhere)  # type: ignore[arg-type]
    runner.leading = True
    stop = runner._stop = QuickStop()
    with caplog.at_level(logging.WARNING, logger="lowrouter"):
        listener = threading.Thread(target=runner._listen)
        listener.start()
        deadline = time.monotonic() + 10
        while stop.waits < 5:
            assert time.monotonic() < deadline, "LISTEN was not retried"
            time.sleep(0.01)
        stop.set()
        listener.join(10)
    lines = [r for r in caplog.records if "LISTEN" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, lines
    assert "polling until it reconnects" in lines[0].getMessage()
