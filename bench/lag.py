"""Sampling a projection's lag while the gateway is under load, from a separate runtime on the
same database: events behind the log's head, and how old the oldest unprojected event is."""

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infrastructure.runtime import Runtime

SAMPLE_EVERY = 0.1


@dataclass
class LagSamples:
    projection: str
    events: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float | int | str]:
        return {
            "projection": self.projection,
            "samples": len(self.events),
            "max_lag_events": max(self.events, default=0),
            "mean_lag_events": round(sum(self.events) / len(self.events), 1) if self.events else 0,
            "max_behind_s": round(max(self.seconds, default=0.0), 3),
            "sample_errors": self.errors,
        }


class LagSampler:
    """`with LagSampler(runtime) as samples:` samples every 100 ms until the block ends."""

    def __init__(self, runtime: Runtime, projection: str = "usage") -> None:
        self.runtime = runtime
        self.samples = LagSamples(projection)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-lag", daemon=True)

    def __enter__(self) -> LagSamples:
        self._thread.start()
        return self.samples

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                events, seconds = self.sample()
            except Exception:
                self.samples.errors += 1
                continue
            self.samples.events.append(events)
            self.samples.seconds.append(seconds)

    def sample(self) -> tuple[int, float]:
        runner, app = self.runtime.projections, self.runtime.app
        position = runner.position(self.samples.projection)
        head = runner.head()
        if head <= position:
            return 0, 0.0
        oldest = app.recorder.select_notifications(start=position + 1, limit=1)
        if not oldest:
            return head - position, 0.0
        written = app.mapper.to_domain_event(oldest[0]).timestamp
        behind = (datetime.now(UTC) - written).total_seconds()
        return head - position, max(0.0, behind)


def wait_caught_up(runtime: Runtime, timeout: float = 30.0) -> float:
    """Seconds until every projection reached the head seen now (the runner is in the server)."""
    started = time.monotonic()
    head = runtime.projections.head()
    while time.monotonic() - started < timeout:
        if all(s.position >= head for s in runtime.projections.status()):
            break
        time.sleep(0.02)
    return time.monotonic() - started
