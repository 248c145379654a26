"""Driving SpendControl by hand: a clock the test moves, and the usage record of a settlement."""

from datetime import datetime, timedelta
from typing import Any

from domain.actor import Actor
from domain.usage import Usage

OPERATOR = Actor("operator", "ledger-machine")
MODEL = "test/model"
TIMEOUT = 30  # seconds to wait for the writer to answer


class MutableClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def usage(key_name: str = "k", **overrides: Any) -> Usage:
    """The usage record a settlement records (the gateway passes one)."""
    fields: dict[str, Any] = {
        "key_name": key_name,
        "model": MODEL,
        "provider": "test",
        "region": None,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "status": "ok",
        "status_code": 200,
        "latency_ms": 5,
        "streamed": False,
        "client_ip": "127.0.0.1",
        "user_agent": "pytest",
    }
    fields.update(overrides)
    return Usage(**fields)
