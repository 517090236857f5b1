"""A CA pool over three emulated vaults, one of them killed in the middle of a burst:
every request is issued, none fails, and the issuer's status names the dead member.

The controller's issuers and requests features run on the in-memory API server
(fakekube, as the unit tests of the features), with the real Key Vault layer and the
real Azure SDK over HTTPS. The vaults ``pool-a/b/c.vault.azure.net`` are the emulator
under three host names (its TLS certificate carries them), reached through a CONNECT
proxy of this test that can take one host "down": it drops that host's open tunnels and
refuses new ones, as a regional outage does (TLS and the SDK's challenge check stay on).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_emulator.testing import EmulatorProcess
from akv_issuer import pki
from akv_issuer.controller import issuers, requests
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, CertificateRequest, ClusterIssuer
from akv_issuer.controller.core import IssuerKey, KeyVaultGateway
from akv_issuer.keyvault import ClientSecret, KeyInfo, KeyVaultAccess, KeyVaultOptions
from support.controllerkit import (
    CLUSTER_NS,
    FakeHost,
    b64,
    certificate_request,
    condition,
    events,
    issuer_object,
)
from support.fakeclock import FakeClock
from support.fakekube import FakeKube

HOSTS = ("pool-a.vault.azure.net", "pool-b.vault.azure.net", "pool-c.vault.azure.net")
POOL = IssuerKey(CLUSTER_ISSUER_KIND, "", "pool")


class SwitchProxy:
    """A CONNECT proxy to the emulator for ``HOSTS``; :meth:`down` kills one host."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.dead: set[str] = set()
        self.tunnels: dict[str, list[asyncio.StreamWriter]] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for writers in self.tunnels.values():
            for writer in writers:
                writer.close()
        if self._server is not None:
            self._server.close()

    def down(self, host: str) -> None:
        """Refuse ``host`` from now on and reset its open connections."""
        self.dead.add(host)
        for writer in self.tunnels.pop(host, []):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            host = target.rsplit(":", 1)[0].lower()
            if method.upper() != "CONNECT" or host not in HOSTS or host in self.dead:
                writer.transport.abort()  # connection reset: the vault is gone
                return
            # Registered before any await, so down() in between resets it too.
            self.tunnels.setdefault(host, []).append(writer)
            up_reader, upstream = await asyncio.open_connection(*self.target)
            if host in self.dead:
                writer.transport.abort()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        end.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


@pytest.fixture(scope="module")
def pool_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    args = [arg for host in HOSTS for arg in ("--tls-name", host)]
    process = EmulatorProcess.start(tmp_path_factory.mktemp("akv-pool"), extra_args=args)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def proxy(
    pool_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SwitchProxy]:
    pool_emulator.admin.reset()
    parts = urlsplit(pool_emulator.env.vault_url)
    made = SwitchProxy((parts.hostname or "127.0.0.1", parts.port or 443))
    monkeypatch.setenv("HTTPS_PROXY", await made.start())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield made
    await made.stop()


WAIT = 60.0  # seconds: real time here, the SDK talks to a real server


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    for _ in range(int(WAIT / 0.02)):
        if check() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert check(), f"{what} did not happen within {WAIT:.0f}s"


def _intermediate(
    root_key: ec.EllipticCurvePrivateKey, root: x509.Certificate, key: KeyInfo, name: str
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    public = key.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


async def test_a_vault_killed_mid_burst_fails_no_request(
    pool_emulator: EmulatorProcess, proxy: SwitchProxy, tmp_path: Path
) -> None:
    env = pool_emulator.env
    auth = ClientSecret(env.tenant_id, env.sp_client_id, env.sp_client_secret, env.authority_host)
    suffix = str(int(time.time() * 1000))
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = pki.build_root_ca(
        root_key.public_key(),
        "Pool Root CA",
        lifetime=dt.timedelta(days=3650),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    ).builder.sign(root_key, hashes.SHA256())

    clock = FakeClock(wall=dt.datetime.now(dt.UTC))
    kube = FakeKube(clock)
    host = FakeHost(kube, clock)
    access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=env.ca_file, timeout=5.0))
    # The real Key Vault layer under the real gateway (the fake vault is not used).
    host.keyvault = KeyVaultGateway(access, host.metrics, concurrency=8, monotonic=clock)
    members: dict[str, KeyInfo] = {}
    for name, vault_host in zip("abc", HOSTS, strict=True):
        vault = f"https://{vault_host}"
        key = await access.create_key(vault, f"pool-{name}-{suffix}", auth, kty="EC", curve="P-256")
        members[name] = key
        cert = _intermediate(root_key, root, key, f"Pool {name}")
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, root))
        kube.add(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-ca", "namespace": CLUSTER_NS},
                "data": {"ca.crt": b64(pem)},
            }
        )
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sp", "namespace": CLUSTER_NS},
            "data": {"secret": b64(env.sp_client_secret.encode())},
        }
    )

    def member(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "keyVaultBaseURL": members[name].vault_url,
            "keyName": members[name].name,
            "caSource": {"secret": {"name": f"{name}-ca"}},
        }

    spec = {
        "keyVaultBaseURL": members["a"].vault_url,
        "keyName": members["a"].name,
        "caSource": {"secret": {"name": "a-ca"}},
        "auth": {
            "clientSecret": {
                "tenantID": env.tenant_id,
                "clientID": env.sp_client_id,
                "secretRef": {"name": "sp", "key": "secret"},
            },
            "authorityHost": env.authority_host,
        },
        "pool": {"primaryName": "a", "members": [member("b"), member("c")]},
    }
    side = issuers.setup(host)
    requests.setup(host, side)
    try:
        await host.start()
        kube.add(issuer_object(POOL, spec=spec, ready=None))

        def ready() -> dict[str, Any] | None:
            return condition(kube.get(ClusterIssuer, POOL.name), "Ready")

        await eventually(lambda: ready() is not None, "the first check")
        first = ready()
        assert first is not None
        assert (first["status"], first["reason"]) == ("True", "Checked"), first

        def issued(name: str) -> bool:
            found = condition(kube.get(CertificateRequest, name, "apps"), "Ready")
            return found is not None and found["reason"] == "Issued"

        names = [f"burst-{n}" for n in range(60)]
        for name in names[:30]:
            kube.add(certificate_request(name, POOL))
        await eventually(lambda: sum(issued(n) for n in names[:30]) >= 10, "some issued")
        proxy.down(HOSTS[1])  # vault b dies mid-burst
        for name in names[30:]:
            kube.add(certificate_request(name, POOL))
        await eventually(lambda: all(issued(n) for n in names), "every request issued")

        by_member: dict[str, int] = {}
        for name in names:
            obj = kube.get(CertificateRequest, name, "apps")
            assert obj is not None
            chain = x509.load_pem_x509_certificates(base64.b64decode(obj["status"]["certificate"]))
            member_name = chain[1].subject.rfc4514_string().removeprefix("CN=Pool ")
            by_member[member_name] = by_member.get(member_name, 0) + 1
            chain[0].verify_directly_issued_by(chain[1])
            chain[1].verify_directly_issued_by(root)
        assert by_member.get("a", 0) > 0
        assert by_member.get("c", 0) > 0
        failed = [e for e in events(kube) if e.get("reason") in ("Failed", "PermanentError")]
        assert failed == []

        def member_b() -> dict[str, Any]:
            status = (kube.get(ClusterIssuer, POOL.name) or {}).get("status") or {}
            return {m["name"]: m for m in status.get("members", [])}.get("b", {})

        await eventually(lambda: member_b().get("state") == "Unavailable", "b shown out")
        assert member_b()["reason"] == "KeyVaultUnreachable"
        assert member_b()["message"].startswith("pool member 'b': ")
        assert (ready() or {})["status"] == "True"
    finally:
        await host.close()
        await access.close()
