"""The Kubernetes client's transport (httpx2 over aiohttp) against a local server.

A local HTTPS server that misbehaves on purpose: a 5xx answer, a server that
closes the connection without an answer, one that closes an idle keep-alive
connection, one that never answers (read timeout), a gzip body, each request
in one piece and a large body whole.
Against the real kube-apiserver: tests/integration/cluster/test_kubehttp_apiserver.py.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from akv_issuer.runtime.kubehttp import kube_transport
from support.tls import local_tls

# What the local server answers to one request: (status line and headers, body),
# or None to close the connection without an answer.
Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]


async def _ok(head: bytes, body: bytes) -> bytes | None:
    return _reply(b"200 OK", b'{"ok":true}')


def _reply(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@dataclass
class Server:
    url: str
    ca_file: Path
    answer: Answer = _ok
    # Close each connection right after its first answer (an idle keep-alive timeout).
    close_after_answer: bool = False
    # What each request's first read on the server held, and every body received.
    first_reads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    context, ca_file = local_tls(tmp_path)
    found = Server("", ca_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections += 1
        try:
            while True:
                first = await reader.read(1 << 20)
                if not first:
                    return
                found.first_reads.append(first)
                head, _, body = first.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    body += await reader.read(1 << 20)
                found.bodies.append(body)
                reply = await found.answer(head, body)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if found.close_after_answer:
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    found.url = f"https://127.0.0.1:{port}"
    async with listener:
        yield found


def _client(server: Server, ca_file: Path | None = None, **timeout: float) -> httpx2.AsyncClient:
    verify = ssl.create_default_context(cafile=str(ca_file or server.ca_file))
    transport = kube_transport(verify, httpx2.Limits(max_connections=4))
    return httpx2.AsyncClient(
        base_url=server.url,
        transport=transport,
        timeout=httpx2.Timeout(5.0, **timeout),
    )


async def test_a_request_arrives_in_one_piece(server: Server) -> None:
    async with _client(server) as client:
        for i in range(3):
            body = b'{"status": "%d"}' % i
            response = await client.patch("/status", content=body)
            assert response.json() == {"ok": True}
    # Head and body in the server's first read, for every request, one connection.
    assert [read.partition(b"\r\n\r\n")[2] for read in server.first_reads] == server.bodies
    assert server.bodies == [b'{"status": "%d"}' % i for i in range(3)]
    assert server.connections == 1


async def test_a_large_body_arrives_whole(server: Server) -> None:
    body = bytes(range(256)) * 768  # 192 KiB
    async with _client(server) as client:
        response = await client.post("/big", content=body)
    assert response.status_code == 200
    assert server.bodies == [body]


async def test_the_headers_sent_are_httpx2s_alone(server: Server) -> None:
    async with _client(server) as client:
        await client.post("/x", content=b"{}", headers={"Content-Type": "application/json"})
    names = sorted(
        line.split(b":", 1)[0].lower() for line in server.first_reads[0].split(b"\r\n")[1:-2]
    )
    assert names == [
        b"accept",
        b"accept-encoding",
        b"connection",
        b"content-length",
        b"content-type",
        b"host",
        b"user-agent",
    ]


async def test_a_server_error_is_answered_as_it_came(server: Server) -> None:
    async def unavailable(head: bytes, body: bytes) -> bytes:
        return _reply(b"503 Service Unavailable", b'{"kind":"Status","code":503}')

    server.answer = unavailable
    async with _client(server) as client:
        response = await client.get("/x")
    assert response.status_code == 503
    assert response.reason_phrase == "Service Unavailable"
    assert response.json() == {"kind": "Status", "code": 503}


async def test_a_gzip_body_is_decoded_once(server: Server) -> None:
    payload = b'{"items":[' + b",".join(b'{"n":%d}' % i for i in range(1000)) + b"]}"

    async def zipped(head: bytes, body: bytes) -> bytes:
        return _reply(b"200 OK", gzip.compress(payload), b"Content-Encoding: gzip\r\n")

    server.answer = zipped
    async with _client(server) as client:
        response = await client.get("/list")
    assert response.content == payload


async def test_a_connection_closed_without_an_answer_is_a_remote_protocol_error(
    server: Server,
) -> None:
    async def hang_up(head: bytes, body: bytes) -> None:
        return None

    server.answer = hang_up
    async with _client(server) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.patch("/status", content=b"{}")


async def test_a_body_cut_short_is_a_remote_protocol_error(server: Server) -> None:
    async def cut(head: bytes, body: bytes) -> bytes:
        server.close_after_answer = True
        return b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial"'

    server.answer = cut
    async with _client(server) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get("/x")


async def test_an_idle_connection_the_server_closed_is_not_reused(server: Server) -> None:
    server.close_after_answer = True
    async with _client(server) as client:
        for _ in range(3):
            response = await client.patch("/status", content=b"{}")
            assert response.json() == {"ok": True}
            await asyncio.sleep(0.1)
    assert server.connections == 3


async def test_no_answer_in_time_is_a_read_timeout(server: Server) -> None:
    async def never(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(30)
        return _reply(b"200 OK", b"{}")

    server.answer = never
    async with _client(server, read=0.3) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.get("/slow")


async def test_a_certificate_from_another_ca_is_refused(server: Server, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    _, other_ca = local_tls(tmp_path / "other")
    async with _client(server, ca_file=other_ca) as client:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get("/x")
    assert server.bodies == []


async def test_a_refused_connection_is_a_connect_error(server: Server) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    server.url = f"https://127.0.0.1:{port}"
    async with _client(server) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get("/x")
