"""The orjson-decoding transcoder reads exactly what eventsourcing's JSON transcoder reads."""

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.transcoder import OrjsonDecodingTranscoder


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    Application.register_transcodings(Application.__new__(Application), transcoder)
    return transcoder


STANDARD = registered(JSONTranscoder())
FAST = registered(OrjsonDecodingTranscoder())

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.uuids()
    | st.datetimes(timezones=st.just(UTC))
    | st.decimals(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=30
)


@given(values)
def test_it_decodes_whatever_the_standard_transcoder_encodes_to_the_same_value(
    value: object,
) -> None:
    stored = STANDARD.encode(value)
    assert FAST.decode(stored) == STANDARD.decode(stored)


def test_typed_values_come_back_typed_and_nested() -> None:
    event = {
        "originator_id": UUID(int=7),
        "timestamp": datetime(2031, 3, 14, 1, 2, 3, 4, tzinfo=UTC),
        "amounts": [Decimal("1.50"), {"inner": UUID(int=8)}],
        "huge": 2**80,  # beyond orjson's integers: read by the json module instead
    }
    decoded = FAST.decode(STANDARD.encode(event))
    assert decoded == event
    assert isinstance(decoded["originator_id"], UUID)
    assert isinstance(decoded["amounts"][1]["inner"], UUID)


def test_integers_just_beyond_64_bits_are_read_exactly() -> None:
    # orjson turns these into floats rather than refusing them (found by the property above).
    for number in (-(2**63) - 1, 2**64, -(2**64), 2**63, -(2**63)):
        encoded = STANDARD.encode({"n": number})
        assert FAST.decode(encoded) == {"n": number}
        assert type(FAST.decode(encoded)["n"]) is int
