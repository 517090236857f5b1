"""The Kubernetes client's transport (httpx2 over aiohttp) against real servers.

Against a real kube-apiserver: lightkube with this transport streams a watch,
reads a 404 as lightkube's ApiError, and refuses a server whose certificate
the configured CA did not sign. Against a local HTTPS server that misbehaves
on purpose: a 5xx answer, a server that closes the connection without an
answer, one that closes an idle keep-alive connection, one that never answers
(read timeout), a gzip body, each request in one piece and a large body whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import ApiError, AsyncClient
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from akv_devcluster import DevCluster
from akv_devtls import server_certificate
from akv_issuer.runtime.kubehttp import kube_transport

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
    _, other_ca = _tls(tmp_path / "other")
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


# ---------------------------------------------------------------------------
# lightkube over this transport, against the real kube-apiserver


def _lightkube(kubeconfig: Path, ca_file: Path | None = None) -> AsyncClient:
    single = KubeConfig.from_file(kubeconfig).get()
    assert single is not None
    assert single.user is not None
    verify = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file
        else verify_cluster(single.cluster, single.user, single.abs_file)
    )
    return AsyncClient(
        config=single,
        field_manager="akv-tests",
        timeout=httpx2.Timeout(10.0),
        transport=kube_transport(verify, httpx2.Limits(max_connections=8)),
    )


async def test_lightkube_watches_and_reads_errors_through_it(
    devcluster: DevCluster, namespace: str
) -> None:
    client = _lightkube(devcluster.kubeconfig_path)
    try:
        seen: list[tuple[str, str]] = []
        started = asyncio.Event()

        async def watch() -> None:
            started.set()
            async for kind, obj in client.watch(ConfigMap, namespace=namespace):
                assert obj.metadata is not None
                if obj.metadata.name and obj.metadata.name.startswith("w-"):
                    seen.append((kind, obj.metadata.name))
                    if len(seen) == 3:
                        return

        task = asyncio.create_task(watch())
        await started.wait()
        await asyncio.sleep(0.3)
        for i in range(3):
            # Each event arrives while the stream stays open, before the next create.
            await client.create(
                ConfigMap(
                    metadata=ObjectMeta(name=f"w-{i}", namespace=namespace), data={"i": str(i)}
                )
            )
            for _ in range(100):
                if len(seen) > i:
                    break
                await asyncio.sleep(0.02)
            assert seen[-1] == ("ADDED", f"w-{i}")
        await asyncio.wait_for(task, 10)

        with pytest.raises(ApiError) as missing:
            await client.get(ConfigMap, "absent", namespace=namespace)
        assert missing.value.status.code == 404
    finally:
        await client.close()


async def test_a_kube_apiserver_outside_the_ca_is_refused(
    devcluster: DevCluster, tmp_path: Path
) -> None:
    _, other_ca = _tls(tmp_path)
    client = _lightkube(devcluster.kubeconfig_path, ca_file=other_ca)
    try:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(ConfigMap, "absent", namespace="default")
    finally:
        await client.close()
