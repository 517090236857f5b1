"""The Kubernetes client's transport against a real local HTTPS server: each
request arrives in one piece and large bodies arrive whole; the idle check
sees a connection the server hung up."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_devtls import server_certificate
from akv_issuer.runtime.kubehttp import FLUSH_AT, _readable, kube_transport


@dataclass
class Server:
    url: str
    ca_file: Path
    # What each request's first read on the server held, and every body received.
    first_reads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key, cert = server_certificate(
        ca_key, ca, ["127.0.0.1"], common_name="127.0.0.1", lifetime=dt.timedelta(hours=1), now=now
    )
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    context, ca_file = _tls(tmp_path)
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
                reply = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(reply)}\r\n\r\n".encode()
                    + reply
                )
                await writer.drain()
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    found.url = f"https://127.0.0.1:{port}"
    async with listener:
        yield found


def _client(server: Server) -> httpx2.AsyncClient:
    verify = ssl.create_default_context(cafile=str(server.ca_file))
    transport = kube_transport(verify, httpx2.Limits(max_connections=4))
    return httpx2.AsyncClient(base_url=server.url, transport=transport)


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
    body = bytes(range(256)) * (3 * FLUSH_AT // 256)
    async with _client(server) as client:
        response = await client.post("/big", content=body)
    assert response.status_code == 200
    assert server.bodies == [body]


def test_the_idle_check_sees_a_hang_up() -> None:
    """The pool's question before reusing an idle connection: readable (the
    server closed it) or closed means do not reuse."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert _readable(ours) is False
        theirs.close()
        assert _readable(ours) is True
    assert _readable(ours) is True  # closed here: fd -1
