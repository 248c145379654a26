"""Reading an upstream's server-sent events: every `data:` payload, in order, however the bytes
are split across network reads, with LF, CRLF or CR line ends; nothing after `[DONE]`."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.dialects.sse import EventTooLarge, SseParser, sse_data


class Reads(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def payloads_of(parts: list[bytes]) -> list[bytes]:
    async def collect() -> list[bytes]:
        response = httpx.Response(200, stream=Reads(parts))
        return [payload async for batch in sse_data(response) for payload in batch]

    return asyncio.run(collect())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


events = st.lists(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
    max_size=8,
).map(lambda items: [b'{"n":"' + item.hex().encode() + b'"}' for item in items])


@given(events, st.sampled_from([b"\n", b"\r\n", b"\r"]), st.lists(st.integers(0, 400)))
def test_every_payload_in_order_however_the_stream_is_cut(
    payloads: list[bytes], end: bytes, cuts: list[int]
) -> None:
    lines = [b": keep-alive", b"event: completion"]
    for payload in payloads:
        lines += [b"data: " + payload, b""]
    stream = end.join([*lines, b"data: [DONE]", b"", b"data: after-done", b""])
    assert payloads_of(split(stream, cuts)) == payloads


def test_a_last_line_without_a_line_end_is_read() -> None:
    assert payloads_of([b"data: {}\n\ndata: ", b'{"last":1}']) == [b"{}", b'{"last":1}']


def test_data_without_a_space_after_the_colon() -> None:
    assert payloads_of([b'data:{"a":1}\n\n']) == [b'{"a":1}']


def test_a_long_line_split_into_many_reads_is_one_payload_and_joined_once() -> None:
    body = b"x" * 300_000
    line = b'data: "' + body + b'"\n\n'
    parser = SseParser()
    joined = 0
    found: list[bytes] = []
    for piece in split(line, list(range(1024, len(line), 1024))):
        before = len(parser._pieces)
        found += parser.feed(piece)
        joined += before > 0 and not parser._pieces  # the pieces were joined into a line
    assert found == [b'"' + body + b'"']
    assert joined == 1


def test_a_line_longer_than_the_limit_is_an_upstream_error_not_a_memory_spike() -> None:
    parser = SseParser(max_event_bytes=10_000)
    parser.feed(b"data: {}\n\n")
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            parser.feed(b"y" * 1000)
    assert parser._pending_size <= 10_000 + 1000  # it stopped keeping bytes at the limit
    with pytest.raises(EventTooLarge):  # one read bigger than the limit, too
        SseParser(max_event_bytes=100).feed(b"data: " + b"z" * 200 + b"\n")


def test_the_parser_says_whether_the_stream_reached_done() -> None:
    ended, cut = SseParser(), SseParser()
    ended.feed(b"data: {}\n\ndata: [DONE]\n\n")
    cut.feed(b"data: {}\n\n")
    assert ended.done and not cut.done
