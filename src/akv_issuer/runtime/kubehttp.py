"""The Kubernetes client's wire: httpx2 clients over aiohttp's connections.

Every status write, Event and watch event costs the controller a trip through
the HTTP client, three per certificate. lightkube's own stack (httpx2 ->
httpcore2 -> h11 -> anyio) is pure Python below httpx2: h11's event
machinery, header validation, anyio's streams and cancel scopes and the
connection pool's bookkeeping came to about a third of the controller's
Kubernetes I/O in the burst profile (docs/benchmarks.md). aiohttp is already
loaded (the Key Vault SDK and the probe servers run on it) and parses HTTP in
C, coalesces a request's head and body into one send, and keeps its pool in
a dict keyed by host.

So :class:`AiohttpTransport` replaces only the transport under httpx2 (under
both clients of :class:`~.kubeapi.KubeApi`: lightkube's and the hot path's,
which lightkube's ``client_adapter`` builds): every request is still built
and every response read through httpx2, so lightkube's configuration, auth
flows (token files re-read, exec plugins, client certificates), proxies from
the environment (httpx2 mounts its own proxy transports for those) and error
handling stay as they are. What the transport
keeps of httpx2's:

- TLS: the ``SSLContext`` lightkube built (CA, client certificate,
  verification on) verifies every connection, against the URL's host or the
  request's ``sni_hostname`` extension.
- Timeouts: the request's ``timeout`` extension (connect, read, pool; the
  watch's read timeout is None); aiohttp has no write timeout, a stalled send
  ends at the read timeout that follows it.
- Errors: aiohttp's are raised as httpx2's (``ConnectError`` for a refused
  connection or a failed certificate check, ``ConnectTimeout``,
  ``ReadTimeout``, ``RemoteProtocolError`` for a server that closes a
  connection without a (complete) response, ``ReadError`` for other socket
  errors), so callers catching ``httpx2.HTTPError`` see the same.
- Streaming: the response body is handed on chunk by chunk as it arrives (a
  watch); closing a response before its end closes its connection.
- Bodies: httpx2 encodes and decodes them (Content-Encoding included), aiohttp
  adds no header of its own and decompresses nothing.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2
from yarl import URL

# Response head limits: h11's (httpcore2's parser) allows a 64 KiB head;
# aiohttp's defaults (8 KiB per line) are below that.
_MAX_HEAD_LINE = 64 * 1024

# Headers aiohttp would add on its own; httpx2 has already set what it means to send.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@contextmanager
def _as_httpx(request: httpx2.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx2 errors httpcore2 raises for the same failures."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS and certificate failures
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx2.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        ) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        if isinstance(exc, aiohttp.ClientConnectionError):
            raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        raise httpx2.TransportError(str(exc), request=request) from exc
    except TimeoutError as exc:
        raise httpx2.ReadTimeout("timed out", request=request) from exc
    except OSError as exc:  # a socket or TLS error aiohttp let through
        raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx2.AsyncByteStream):
    """A response body as it arrives; closing it early closes the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; one
        # left unread (a watch given up) closes it.
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport on an aiohttp session made at the first request (inside the loop)."""

    def __init__(self, verify: ssl.SSLContext | str | bool, limits: httpx2.Limits) -> None:
        self._ssl = (
            verify if isinstance(verify, ssl.SSLContext) else httpx2.create_ssl_context(verify)
        )
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx2 keeps the cookies
                auto_decompress=False,  # httpx2 decodes Content-Encoding
                skip_auto_headers=_NO_AUTO_HEADERS,
                trust_env=False,  # httpx2 routes proxied URLs to its own transports
                max_line_size=_MAX_HEAD_LINE,
                max_field_size=_MAX_HEAD_LINE,
            )
        return self._session

    def _timeout(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout") or {}
        key = (given.get("pool"), given.get("connect"), given.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            pool, connect, read = key
            timeout = aiohttp.ClientTimeout(
                total=None, connect=pool, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._get_session()
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        sni = request.extensions.get("sni_hostname")
        with _as_httpx(request):
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                timeout=self._timeout(request),
                allow_redirects=False,  # httpx2 follows (or not) on its own
                server_hostname=sni if isinstance(sni, str) else None,
            )
        return httpx2.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def kube_transport(verify: Any, limits: httpx2.Limits) -> httpx2.AsyncBaseTransport:
    """The transport under the httpx2 clients of the API server (``KubeApi``)."""
    return AiohttpTransport(verify, limits)
