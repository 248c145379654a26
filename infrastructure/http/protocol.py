"""uvicorn's httptools protocol with the bounds llhttp leaves to its user: a request's line and
headers at most `h11_max_incomplete_event_size` bytes (uvicorn's own knob, which httptools
ignores; default 64 KiB here), else a 400 and the connection closed; and all of them within
`header_timeout` seconds of the request's first byte (or of the connection), else the
connection is closed: a slow-drip client cannot hold a connection, nor send a 32 MB header.
Idle keep-alive connections are uvicorn's `timeout_keep_alive`."""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_SECONDS = 10.0


class HeadersTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = HEADER_TIMEOUT_SECONDS  # set from the settings (server.app_factory)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    # uvicorn's own signature (asyncio.Transport, narrower than BaseProtocol's BaseTransport,
    # which uvicorn ignores too): an override must take what the method it extends takes.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._start_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > (self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES):
            raise HeadersTooLarge  # httptools stops parsing; uvicorn answers 400 and closes

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
