"""Key Vault through an HTTPS proxy from the environment (HTTPS_PROXY / NO_PROXY),
as platform teams behind an egress proxy run it: a real CONNECT proxy in front
of the emulator, TLS verified end to end through the tunnel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from akv_emulator.testing import EmulatorProcess
from akv_issuer.keyvault import KeyVaultAccess, KeyVaultOptions, WorkloadIdentity, proxy_for
from akv_issuer.pki import SignatureAlgorithm
from support.emulator import digest_for


class ConnectProxy:
    """A minimal HTTP CONNECT proxy: records each tunnel's target, then pipes bytes."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            self.targets.append(target)
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[tuple[ConnectProxy, str]]:
    server = ConnectProxy()
    url = await server.start()
    try:
        yield server, url
    finally:
        await server.stop()


async def _sign_once(emulator: EmulatorProcess, name: str) -> None:
    env = emulator.env
    # The token endpoint under another name of the same emulator, so that
    # NO_PROXY=localhost keeps the credential's own traffic off the proxy and
    # only the Key Vault calls can reach it.
    auth = WorkloadIdentity(
        client_id=env.workload_client_id,
        tenant_id=env.tenant_id,
        token_file=env.federated_token_file,
        authority_host=env.authority_host.replace("127.0.0.1", "localhost"),
    )
    access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=env.ca_file))
    try:
        key = await access.create_key(env.vault_url, name, auth)
        signature = await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
        assert len(signature) == 256
    finally:
        await access.close()


async def test_key_vault_calls_go_through_the_https_proxy(
    emulator: EmulatorProcess,
    unique_name: str,
    proxy: tuple[ConnectProxy, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = proxy
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.delenv("no_proxy", raising=False)
    await _sign_once(emulator, unique_name)
    vault_host = emulator.env.vault_url.removeprefix("https://").rstrip("/")
    assert "127.0.0.1" in vault_host
    # The vault's calls (create, sign) went through one kept-alive tunnel.
    assert server.targets == [vault_host]


async def test_no_proxy_bypasses_the_proxy(
    emulator: EmulatorProcess,
    unique_name: str,
    proxy: tuple[ConnectProxy, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = proxy
    monkeypatch.setenv("HTTPS_PROXY", url)
    host = emulator.env.vault_url.removeprefix("https://").split(":")[0]
    monkeypatch.setenv("NO_PROXY", f"example.com,{host},localhost")
    await _sign_once(emulator, unique_name)
    assert server.targets == []


P = "http://p:1"
KV = "https://kv.vault.azure.net"


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({}, KV, None),
        ({"HTTPS_PROXY": P}, KV, P),
        ({"https_proxy": P}, KV, P),
        ({"ALL_PROXY": P}, KV, P),
        ({"HTTPS_PROXY": P, "ALL_PROXY": "http://a:1"}, KV, P),
        ({"HTTPS_PROXY": P, "NO_PROXY": "*"}, KV, None),
        ({"HTTPS_PROXY": P, "NO_PROXY": ".azure.net"}, KV, None),
        ({"HTTPS_PROXY": P, "no_proxy": "example.com, vault.azure.net:443"}, KV, None),
        ({"HTTPS_PROXY": P, "NO_PROXY": "KV.vault.azure.net"}, KV, None),
        ({"HTTPS_PROXY": P, "NO_PROXY": "azure.net.evil"}, KV, P),
        ({"HTTPS_PROXY": P, "NO_PROXY": "ault.azure.net"}, KV, P),
        ({"HTTPS_PROXY": P, "NO_PROXY": " , "}, KV, P),
    ],
)
def test_proxy_for(environ: dict[str, str], url: str, expected: str | None) -> None:
    assert proxy_for(url, environ) == expected
