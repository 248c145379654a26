"""Reading an upstream's server-sent events: every `data:` payload, in order, however the bytes
are split across network reads, with LF, CRLF or CR line ends; nothing after `[DONE]`."""

import asyncio
from collections.abc import AsyncIterator

import httpx
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.dialects.sse import sse_data


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
