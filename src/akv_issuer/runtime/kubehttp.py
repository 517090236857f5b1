"""The Kubernetes client's connections: one send per request, a cheap idle check.

Every status write and Event costs the controller a full trip through
httpx2/httpcore2/anyio, and two parts of it were pure overhead on the
controller's cores (measured with py-spy on a loop of status applies against
kube-apiserver, see docs/benchmarks.md):

- httpcore2 writes a request's head and its body separately, so each request
  with a body was two TLS records and two ``send()`` calls. On loopback each
  send also runs the receiving side in the kernel: about a fifth of the
  client's CPU was in those sends. :class:`_OneSendStream` holds the writes
  of a request and sends them as one when the response is read (the
  protocol's next step), or at once when they pass :data:`FLUSH_AT`, so a
  large body still streams.
- Before each request the pool asks every idle connection whether its socket
  is readable (a server that closed it); anyio answered by rebuilding the
  socket's attribute map (``getpeername`` and all) each time, for every idle
  connection. :class:`_OneSendStream` looks the socket up once.

Together: 1.17 -> 0.98 ms of client CPU per status apply (3 A/B rounds of
1,500 applies, 16 in flight). Nothing else changes: the same TLS, the same
pool limits, the same errors (a failed send surfaces from the read that
follows it, as httpcore2's own ``WriteError`` or ``WriteTimeout``).
"""

from __future__ import annotations

import select
import ssl
from typing import Any

import httpx2

# Writes held for one request are sent at once beyond this size.
FLUSH_AT = 64 * 1024


class _OneSendStream:
    """An httpcore2 network stream that sends a request's writes in one go."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pending: list[bytes] = []
        self._size = 0
        self._timeout: float | None = None
        self._socket: Any = None

    # httpcore2's stream interface passes timeouts as arguments (hence the noqa).
    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        self._pending.append(buffer)
        self._size += len(buffer)
        self._timeout = timeout
        if self._size >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        await self._inner.write(data, self._timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush()
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def aclose(self) -> None:
        self._pending.clear()
        self._size = 0
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> _OneSendStream:
        await self._flush()
        return _OneSendStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            if self._socket is None:
                self._socket = self._inner.get_extra_info("socket")
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: Any) -> bool:
    """httpcore2's own test: readable, or closed (fd -1), means the server hung up."""
    if sock is None:
        return False
    fd = sock.fileno()
    if fd == -1:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


class _OneSendBackend:
    """Wraps httpcore2's network backend: every stream it opens is a :class:`_OneSendStream`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> _OneSendStream:
        return _OneSendStream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> _OneSendStream:
        return _OneSendStream(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def kube_transport(verify: Any, limits: httpx2.Limits) -> httpx2.AsyncHTTPTransport:
    """httpx2's transport for the API server, its connections sending once per request.

    httpx2 builds its httpcore2 pool without a way to pass a network backend,
    so the pool's backend is wrapped after the fact; should a future httpx2
    name it differently, the transport is returned as it is (correct, only
    dearer).
    """
    transport = httpx2.AsyncHTTPTransport(verify=verify, limits=limits)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if pool is not None and backend is not None:
        pool._network_backend = _OneSendBackend(backend)
    return transport
