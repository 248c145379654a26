"""Header size and slow-header bounds (issue 15): a request line and headers over the limit get
a 400 and a closed connection; a client dripping its headers is disconnected; a normal request
on the same server is served. On uvicorn with the protocol `serve` uses, in a thread."""

import socket
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from infrastructure.http.protocol import BoundedHttpToolsProtocol
from tests.support.servers import LiveServer

LIMIT = 8 * 1024


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "header_timeout", 0.5)
    server = LiveServer(
        Starlette(routes=[Route("/", hello)]),
        name="header-limits",
        http=BoundedHttpToolsProtocol,
        h11_max_incomplete_event_size=LIMIT,
        log_level="critical",
        lifespan="off",
    )
    with server:
        yield server.port


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_header_over_the_limit_is_refused_and_the_connection_closed(port: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (LIMIT + 1) + b"\r\n\r\n"
    assert exchange(port, big).startswith(b"HTTP/1.1 400")
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * (LIMIT // 8 + 10) + b"\r\n"
    assert exchange(port, many).startswith(b"HTTP/1.1 400")
    ok = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"hi")


def test_a_client_dripping_its_headers_is_disconnected(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        started = time.monotonic()
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # one header line every 0.1 s: never finishes in time
            try:
                conn.sendall(b"X-Drip: 1\r\n")
            except OSError:
                closed = True
                break
            conn.settimeout(0.1)
            try:
                if conn.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed and time.monotonic() - started < 3


def test_a_silent_connection_is_closed_too(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        started = time.monotonic()
        assert conn.recv(1) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 3
