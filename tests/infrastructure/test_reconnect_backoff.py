"""The pool's reconnection while PostgreSQL is out: an attempt about every second, never the
1, 2, 4, 8, 16 s psycopg_pool would wait (after a 15 s outage its next attempt could come 16 s
after the store was back). Pure: the backoff's delays, no connection."""

import logging

from infrastructure.database import (
    RECONNECT_EVERY,
    _FailedConnectsOncePerOutage,
    _SteadyBackoff,
)


def test_reconnection_attempts_stay_about_a_second_apart_however_long_the_outage() -> None:
    attempt = _SteadyBackoff(timeout=300.0)
    now, delays = 0.0, []
    for _ in range(12):  # two minutes of failed attempts
        attempt.update_delay(now)
        delays.append(attempt.delay)
        now += attempt.delay
    assert 0.8 <= delays[0] <= RECONNECT_EVERY  # the first keeps psycopg_pool's jitter
    assert all(0.8 <= delay <= RECONNECT_EVERY for delay in delays)
    assert now < 13  # twelve attempts in about twelve seconds, not 1 + 2 + … + 2048


def test_the_attempts_still_give_up_at_the_reconnect_timeout() -> None:
    attempt = _SteadyBackoff(timeout=2.5)
    attempt.update_delay(0.0)
    attempt.update_delay(2.0)
    assert attempt.delay <= 0.5  # not past the give-up time
    assert attempt.time_to_give_up(2.5)


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, message, args, None)


def test_failed_connects_are_logged_once_per_pool_per_half_minute_not_every_second() -> None:
    quiet = _FailedConnectsOncePerOutage()
    failed = "error connecting in %r: %s"
    assert quiet.filter(record(failed, "lowrouter-gateway", "refused"))
    assert not quiet.filter(record(failed, "lowrouter-gateway", "refused"))  # a second later
    assert quiet.filter(record(failed, "lowrouter-background", "refused"))  # another pool
    assert quiet.filter(record("discarding broken connection: %s", "conn"))  # other warnings
