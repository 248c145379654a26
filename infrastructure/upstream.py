"""Talking to upstreams: one pooled aiohttp session per worker for every provider and dialect.

aiohttp's client directly, not httpx's API over it: httpx's request and response models cost
about 0.2 ms of CPU a request, more than the whole bare pass-through (measured in bench/).
Failures come out as our own three errors (below), whatever the client said, so the routes
never see aiohttp's exception tree.
"""

from collections.abc import AsyncIterator, Iterable
from time import perf_counter
from urllib.parse import urlsplit

import aiohttp

from domain.routing import Provider
from infrastructure.catalogue import DEMO_BASE_URL, DEMO_HOST
from infrastructure.dialects import anthropic, openai
from infrastructure.observability.upstream import BodyTimer, observed_send

CONNECT_SECONDS = 5.0  # a TCP (and TLS) connect; the read timeout is the settings' one
MAX_CONNECTIONS = 512
KEEPALIVE_SECONDS = 30
MAX_BODY_BYTES = 16 * 1024 * 1024  # a whole non-streamed answer (as SSE bounds one event)


class UpstreamError(Exception):
    """The upstream leg failed (no answer, or an answer cut short)."""


class UpstreamTimeout(UpstreamError):
    """No connection, or no bytes, within the timeout."""


class UpstreamUnreachable(UpstreamError):
    """No answer: the connection was refused, reset or closed before the response's head."""


class UpstreamBrokeOff(UpstreamError):
    """The answer's body was cut short (connection lost, or a malformed body)."""


class UpstreamTooLarge(UpstreamError):
    """The answer's body is bigger than MAX_BODY_BYTES: not read on, an upstream error."""


def _failure(error: BaseException, before_answer: bool) -> UpstreamError:
    """Ours for aiohttp's: a timeout is a timeout wherever it happened (aiohttp's socket
    timeouts are TimeoutErrors too); anything else is unreachable before the head, broken off
    after it. The detail keeps aiohttp's class name (never its message: it may hold a URL)."""
    if isinstance(error, TimeoutError):
        return UpstreamTimeout(type(error).__name__)
    kind = UpstreamUnreachable if before_answer else UpstreamBrokeOff
    return kind(type(error).__name__)


class UpstreamResponse:
    """An upstream's answer: its status, and its body read whole (`aread`, then `content`) or
    as it arrives (`aiter_bytes`). This one holds a body already read (the in-process demo)."""

    def __init__(self, status_code: int, content: bytes = b"") -> None:
        self.status_code = status_code
        self.content = content
        self.timer: BodyTimer | None = None  # set when the request is observed

    async def aread(self) -> bytes:
        return self.content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self.content:
            yield self.content

    async def aclose(self) -> None:
        if self.timer is not None:
            self.timer.closed()


class NetworkResponse(UpstreamResponse):
    """An answer on a pooled connection: the body is read from the socket on demand, and the
    connection goes back to the pool when the body was read to its end (closed otherwise)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response.status)
        self._response = response

    async def aread(self) -> bytes:
        timer = self.timer
        asked = perf_counter()
        try:
            self.content = await self._read_bounded(MAX_BODY_BYTES)
        except UpstreamTooLarge:
            if timer is not None:
                timer.failed(asked, UpstreamTooLarge.__name__)
            raise
        except (aiohttp.ClientError, TimeoutError) as error:
            failure = _failure(error, before_answer=False)
            if timer is not None:
                timer.failed(asked, type(failure).__name__)
            raise failure from error
        finally:
            self._response.release()
        if timer is not None:
            timer.ended(asked)
        return self.content

    async def _read_bounded(self, limit: int) -> bytes:
        """The whole body, as aiohttp's read() would give it, but never more than `limit`
        bytes in memory: a bigger answer (declared or sent) stops the read."""
        declared = self._response.content_length
        if declared is not None and declared > limit:
            raise UpstreamTooLarge(f"the answer declares {declared} bytes")
        body = bytearray()
        async for chunk in self._response.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise UpstreamTooLarge(f"the answer is over {limit} bytes")
        return bytes(body)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """What arrived in each network read, as it arrives (no re-chunking, no decoding)."""
        content = self._response.content
        timer = self.timer
        while True:
            asked = perf_counter()
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, TimeoutError) as error:
                failure = _failure(error, before_answer=False)
                if timer is not None:
                    timer.failed(asked, type(failure).__name__)
                raise failure from error
            if not chunk:  # the end of the body
                if timer is not None:
                    timer.ended(asked)
                return
            if timer is not None:
                timer.read(asked)
            yield chunk

    async def aclose(self) -> None:
        await super().aclose()
        if self._response.content.is_eof():
            self._response.release()  # read to its end: the connection is reusable
        else:
            self._response.close()  # abandoned mid-body: the connection cannot be reused


class Upstream:
    """Sends requests to providers through one pooled aiohttp session. Each provider's URLs
    and headers are built once."""

    def __init__(self, timeout: float) -> None:
        # Made in the server's event loop (the lifespan), as aiohttp requires.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            # `timeout` bounds each wait: for a pooled connection, and for every read of the
            # answer (per read, not in total); a connect has its own, shorter bound.
            timeout=aiohttp.ClientTimeout(
                total=None, connect=timeout, sock_connect=CONNECT_SECONDS, sock_read=timeout
            ),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # an upstream's cookies never reach another
        )
        self._targets: dict[tuple[Provider, str], tuple[str, dict[str, str], bool]] = {}
        self._demo: InProcessDemo | None = None

    def prepare(self, providers: Iterable[Provider]) -> None:
        """What the first request would otherwise build (at start, not on a client's time): the
        in-process demo app, when a provider is the demo."""
        if self._demo is None and any(_is_demo(p) for p in providers):
            self._demo = InProcessDemo()

    async def send(
        self, provider: Provider, content: bytes, path: str = "/chat/completions"
    ) -> UpstreamResponse:
        """POST to the provider's `path` (in its dialect); the body is not read yet (it may
        stream). Raises UpstreamTimeout or UpstreamUnreachable when there is no answer."""
        target = self._targets.get((provider, path))
        if target is None:
            target = self._targets[(provider, path)] = (
                f"{provider.base_url}{path}",
                upstream_headers(provider),
                _is_demo(provider),
            )
        url, headers, demo = target
        if demo:
            if self._demo is None:
                self._demo = InProcessDemo()
            return await observed_send(self._demo.post(url, content, headers), provider.name)
        return await observed_send(self._post(url, content, headers), provider.name)

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> UpstreamResponse:
        try:
            response = await self.session.post(
                url, data=content, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _failure(error, before_answer=True) from error
        return NetworkResponse(response)

    async def aclose(self) -> None:
        await self.session.close()


class InProcessDemo:
    """Requests to the demo provider's host go to the demo app inside this process, so the demo
    upstream is never a public route (nothing unauthenticated reaches it). httpx's ASGI
    transport calls the app (the only use of httpx at run time); the answer is read whole."""

    def __init__(self) -> None:
        import httpx
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from infrastructure.demo_provider import demo_upstream_app

        app = Starlette(routes=[Mount(httpx.URL(DEMO_BASE_URL).path, app=demo_upstream_app())])
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> UpstreamResponse:
        response = await self._client.post(url, content=content, headers=headers)
        return UpstreamResponse(response.status_code, response.content)


def _is_demo(provider: Provider) -> bool:
    return urlsplit(provider.base_url).hostname == DEMO_HOST


def build_upstream(timeout: float) -> Upstream:
    """One pooled client for the whole process (connections are reused across requests)."""
    return Upstream(timeout)


def upstream_headers(provider: Provider) -> dict[str, str]:
    """The provider's headers, in its dialect (the credential is never logged)."""
    headers = anthropic.headers if provider.api == "anthropic" else openai.headers
    return headers(provider)
