"""Failed authentication per client address: a burst, then a short ban; other addresses are
unaffected; memory stays bounded."""

from hypothesis import given
from hypothesis import strategies as st

from domain.throttle import FailureThrottle


def test_a_burst_of_failures_bans_the_address_for_a_while() -> None:
    throttle = FailureThrottle(burst=3, window=10, ban=30)
    assert not throttle.failed("a", 0) and not throttle.failed("a", 1)
    assert throttle.banned_for("a", 1) is None
    assert throttle.failed("a", 2)  # the third in ten seconds
    assert throttle.banned_for("a", 2) == 30
    assert throttle.banned_for("b", 2) is None  # another address may try
    assert throttle.banned_for("a", 31.5) == 0.5
    assert throttle.banned_for("a", 32) is None  # the ban is over, and the count starts again
    assert not throttle.failed("a", 33)


def test_failures_spread_beyond_the_window_never_ban() -> None:
    throttle = FailureThrottle(burst=3, window=10, ban=30)
    assert not any(throttle.failed("a", t * 6) for t in range(100))


def test_a_burst_of_zero_turns_it_off() -> None:
    throttle = FailureThrottle(burst=0)
    assert not any(throttle.failed("a", 0) for _ in range(1000))
    assert throttle.banned_for("a", 0) is None


@given(st.lists(st.integers(0, 10_000), max_size=300))
def test_memory_is_bounded_however_many_addresses_fail(addresses: list[int]) -> None:
    throttle = FailureThrottle(burst=2, window=100, ban=1, max_addresses=50)
    for n, address in enumerate(addresses):
        throttle.failed(str(address), n * 0.01)
    assert len(throttle._failures) <= 50
    assert len(throttle._banned) <= 50
