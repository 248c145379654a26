"""Parsing a request body and a number at the HTTP edge (infrastructure/http/limits.py), as plain
functions: what is refused, with which error, and what gets through unchanged."""

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.http.errors import ApiError
from infrastructure.http.limits import (
    MAX_JSON_DEPTH,
    BodyLimitMiddleware,
    json_depth,
    parse_json_bytes,
    whole_number,
)


def nested(depth: int) -> str:
    """A JSON text whose containers nest `depth` deep, alternating lists and objects."""
    text = "1"
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k": {text}}}'
    return text


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("x", 0), (None, 0), ([], 1), ({}, 1), ([1, [2, [3]]], 3), ({"a": [{}], "b": 1}, 3)],
)
def test_json_depth_counts_the_deepest_container(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_stops_counting_past_the_limit() -> None:
    deep: list[object] = []
    for _ in range(10 * MAX_JSON_DEPTH):
        deep = [deep]
    assert MAX_JSON_DEPTH < json_depth(deep) <= MAX_JSON_DEPTH + 1


@pytest.mark.parametrize("depth", [1, MAX_JSON_DEPTH])
def test_a_body_up_to_the_depth_limit_parses_to_what_was_sent(depth: int) -> None:
    text = nested(depth)
    assert parse_json_bytes(text.encode()) == json.loads(text)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000])
def test_a_body_nested_deeper_than_the_limit_is_a_400_json_too_deep(depth: int) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json_bytes(nested(depth).encode())
    assert (refused.value.status, refused.value.code) == (400, "json_too_deep")
    assert str(MAX_JSON_DEPTH) in refused.value.message


@pytest.mark.parametrize("raw", [b"", b"{", b"{name: 1}", b"\xff", b"[1,]", b"NaN"])
def test_a_body_that_is_not_json_is_a_400_invalid_json(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json_bytes(raw)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")


@given(st.integers(0, 10**18 - 1))
def test_whole_number_reads_every_decimal_of_up_to_18_digits(number: int) -> None:
    assert whole_number(str(number)) == number


@pytest.mark.parametrize(
    "text",
    [None, "", "-1", "+1", "1.0", " 1", "1 ", "1e3", "0x10", "²", "١٢", "1" * 19, "9" * 5_000],
)
def test_whole_number_refuses_anything_else(text: str | None) -> None:
    assert whole_number(text) is None


def test_whole_number_takes_a_smaller_bound() -> None:
    assert whole_number("1234", max_digits=4) == 1234
    assert whole_number("12345", max_digits=4) is None


def _body_read_through(middleware_timeout: float, receive: Any) -> list[Any]:
    """What the inner app gets from one receive() through BodyLimitMiddleware, or the error."""
    got: list[Any] = []

    async def inner(scope: Any, bounded_receive: Any, send: Any) -> None:
        try:
            got.append(await bounded_receive())
        except ApiError as error:
            got.append(error)

    middleware = BodyLimitMiddleware(inner, max_bytes=1024, timeout=middleware_timeout)
    scope = {"type": "http", "headers": [(b"content-length", b"2")]}
    asyncio.run(middleware(scope, receive, None))  # type: ignore[arg-type]
    return got


def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    async def never() -> Any:
        await asyncio.sleep(10)

    started = time.monotonic()
    [error] = _body_read_through(0.05, never)
    assert isinstance(error, ApiError) and error.status == 408
    assert error.code == "request_timeout"
    assert time.monotonic() - started < 2


def test_a_body_that_arrives_in_time_goes_through_unchanged() -> None:
    message = {"type": "http.request", "body": b"{}", "more_body": False}

    async def soon() -> Any:
        await asyncio.sleep(0.01)
        return message

    assert _body_read_through(5.0, soon) == [message]
