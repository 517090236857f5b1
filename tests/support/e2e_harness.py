"""Harness for the end-to-end tests: real cert-manager + our controller.

Session-wide: cert-manager's controller (``akv_devcluster.certmanager``,
under its chart's RBAC plus our approver RBAC) and one azure-keyvault-issuer
controller (under ``config/rbac``), both talking to the e2e tier's own
kube-apiserver (``devcluster`` as tests/e2e/conftest.py overrides it); our
controller signs with the session's Key Vault emulator.
Per test: a namespace, issuers and Certificates, and checks a user would make
on the resulting Secret (``openssl verify`` of tls.crt against ca.crt, tls.key
matches tls.crt).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding
from lightkube.types import PatchType

from akv_devcluster import DevCluster, DevClusterError
from akv_devcluster.binaries import BinariesError
from akv_devcluster.certmanager import (
    Certificate,
    CertManager,
    CMIssuer,
    certificate_body,
    running_cert_manager,
    start_cert_manager,
    stop_cert_manager,
)
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import API_VERSION, GROUP, CertificateRequest, ClusterIssuer, Issuer
from support.controller_harness import (
    CA,
    Env,
    condition,
    open_env,
    wait_for,
)

WAIT = 90.0


# ---------------------------------------------------------------------------
# Session: cert-manager and our controller


@pytest.fixture(scope="session")
def cert_manager(devcluster: DevCluster) -> Iterator[CertManager]:
    """cert-manager's controller; reused if the dev cluster already runs one
    (``akv-devcluster up --with-cert-manager``), else started for the session."""
    running = running_cert_manager(devcluster)
    if running is not None:
        yield running
        return
    try:
        started = start_cert_manager(devcluster, build=False)
    except (DevClusterError, BinariesError) as exc:
        pytest.fail(f"cert-manager did not start: {exc}", pytrace=False)
    try:
        yield started
    finally:
        stop_cert_manager(devcluster)


@pytest_asyncio.fixture(scope="session")
async def session_env(
    kube_client: AsyncClient,
    manager_role: str,
    devcluster: DevCluster,
    emulator_process: EmulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Env]:
    """Our controller, once for the session, in its own namespace."""
    tmp = tmp_path_factory.mktemp("e2e-controller")
    namespace = f"akv-e2e-{uuid.uuid4().hex[:6]}"
    await kube_client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    env, binding = await open_env(
        kube_client, devcluster, emulator_process, namespace, manager_role, tmp
    )
    kv = env.kv
    try:
        controller = env.start_controller()
        await env.wait_ready(controller)
        yield env
    finally:
        for controller in env.controllers:
            controller.kill()
        await kv.close()
        with contextlib.suppress(ApiError):
            await kube_client.delete(ClusterRoleBinding, binding)
        with contextlib.suppress(ApiError):
            await kube_client.delete(Namespace, namespace)


# ---------------------------------------------------------------------------
# Per test


@dataclass
class Issued:
    """A Certificate's Secret, checked: the leaf, its chain and the CA."""

    secret: Secret
    leaf: x509.Certificate
    chain: list[x509.Certificate]
    ca_pem: bytes


class E2E:
    def __init__(self, env: Env, cert_manager: CertManager, namespace: str, tmp: Path) -> None:
        self.env = env
        self.kube = env.kube
        self.cert_manager = cert_manager
        self.namespace = namespace
        self.tmp = tmp
        self.cluster_issuers: list[str] = []

    # -- waiting --------------------------------------------------------------

    def logs(self) -> str:
        ours = "\n".join(c.log()[-3000:] for c in self.env.controllers)
        theirs = self.cert_manager.log_file.read_text(errors="replace")[-4000:]
        return f"--- our controller ---\n{ours}\n--- cert-manager ---\n{theirs}"

    async def wait(
        self, check: Callable[[], Awaitable[bool]], what: str, limit: float = WAIT
    ) -> None:
        try:
            await wait_for(check, what=what, limit=limit)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    # -- issuers --------------------------------------------------------------

    async def issuer(
        self, ca: CA, *, cluster: bool = False, name: str | None = None, **spec: Any
    ) -> dict[str, str]:
        """Create one of our issuers for ``ca``, wait until Ready; return its issuerRef."""
        name = name or f"akv-{uuid.uuid4().hex[:8]}"
        body = {"keyVaultBaseURL": self.env.emulator.env.vault_url, "keyName": ca.name, **spec}
        if cluster:
            await self.kube.create(
                ClusterIssuer(
                    apiVersion=API_VERSION,
                    kind="ClusterIssuer",
                    metadata=ObjectMeta(name=name),
                    spec=body,
                )
            )
            self.cluster_issuers.append(name)
        else:
            await self.kube.create(
                Issuer(
                    apiVersion=API_VERSION,
                    kind="Issuer",
                    metadata=ObjectMeta(name=name, namespace=self.namespace),
                    spec=body,
                )
            )
        kind = "ClusterIssuer" if cluster else "Issuer"
        await self.wait_issuer(name, kind, "True")
        return {"name": name, "kind": kind, "group": GROUP}

    async def get_issuer(self, name: str, kind: str) -> dict[str, Any]:
        if kind == "ClusterIssuer":
            return dict(await self.kube.get(ClusterIssuer, name))
        return dict(await self.kube.get(Issuer, name, namespace=self.namespace))

    async def wait_issuer(self, name: str, kind: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.update(await self.get_issuer(name, kind))
            ready = condition(found, "Ready")
            return ready is not None and ready.get("status") == status

        await self.wait(check, f"{kind} {name} Ready={status}")
        return found

    async def wait_issuer_cm(self, name: str) -> None:
        """Wait for one of cert-manager's own Issuers to be Ready."""

        async def check() -> bool:
            obj = dict(await self.kube.get(CMIssuer, name, namespace=self.namespace))
            ready = condition(obj, "Ready")
            return ready is not None and ready.get("status") == "True"

        await self.wait(check, f"cert-manager Issuer {name} Ready")

    # -- Certificates ----------------------------------------------------------

    async def create_certificate(self, name: str, issuer_ref: dict[str, str], **spec: Any) -> None:
        await self.kube.create(certificate_body(self.namespace, name, issuer_ref, **spec))

    async def get_certificate(self, name: str) -> dict[str, Any]:
        obj = await self.kube.get(Certificate, name, namespace=self.namespace)
        return dict(obj)

    async def wait_certificate(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.clear()
            found.update(await self.get_certificate(name))
            return predicate(found)

        await self.wait(check, f"Certificate {name}: {what}")
        return found

    async def wait_ready(self, name: str, *, revision: int = 1) -> dict[str, Any]:
        def ready(obj: dict[str, Any]) -> bool:
            cond = condition(obj, "Ready")
            status = obj.get("status") or {}
            return (
                cond is not None
                and cond.get("status") == "True"
                and int(status.get("revision") or 0) >= revision
                and cond.get("observedGeneration") == obj["metadata"].get("generation")
            )

        return await self.wait_certificate(name, ready, f"Ready at revision >= {revision}")

    async def trigger_renewal(self, name: str) -> None:
        """What ``cmctl renew`` does: add the Issuing condition (reason
        ManuallyTriggered) through the status subresource."""
        obj = await self.get_certificate(name)
        conditions = [
            c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] != "Issuing"
        ]
        conditions.append(
            {
                "type": "Issuing",
                "status": "True",
                "reason": "ManuallyTriggered",
                "message": "Certificate re-issuance manually triggered",
                "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "observedGeneration": obj["metadata"]["generation"],
            }
        )
        await self.kube.patch(
            Certificate.Status,
            name,
            {"status": {"conditions": conditions}},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )

    async def requests_for(self, name: str) -> list[dict[str, Any]]:
        found = []
        async for cr in self.kube.list(CertificateRequest, namespace=self.namespace):
            obj = dict(cr)
            owners = obj["metadata"].get("ownerReferences") or []
            annotations = obj["metadata"].get("annotations") or {}
            if any(o.get("name") == name for o in owners) or (
                annotations.get("cert-manager.io/certificate-name") == name
            ):
                found.append(obj)
        return sorted(
            found,
            key=lambda o: int(
                (o["metadata"].get("annotations") or {}).get(
                    "cert-manager.io/certificate-revision", "0"
                )
            ),
        )

    # -- Secrets ----------------------------------------------------------------

    async def secret(self, name: str) -> Secret:
        return await self.kube.get(Secret, name, namespace=self.namespace)

    async def check_secret(self, name: str) -> Issued:
        """What a user checks: the Secret is kubernetes.io/tls, tls.crt chains
        to ca.crt (``openssl verify``) and matches tls.key."""
        secret = await self.secret(name)
        assert secret.type == "kubernetes.io/tls", secret.type
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        for key in ("tls.crt", "tls.key", "ca.crt"):
            assert data.get(key), f"Secret {name} has no {key}"
        chain = x509.load_pem_x509_certificates(data["tls.crt"])
        with tempfile.TemporaryDirectory(dir=self.tmp) as work:
            folder = Path(work)
            for key, value in data.items():
                (folder / key).write_bytes(value)
            (folder / "leaf.pem").write_bytes(chain[0].public_bytes(Encoding.PEM))
            args = ["openssl", "verify", "-CAfile", str(folder / "ca.crt")]
            if len(chain) > 1:
                (folder / "untrusted.pem").write_bytes(
                    b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:])
                )
                args += ["-untrusted", str(folder / "untrusted.pem")]
            verify = _run([*args, str(folder / "leaf.pem")])
            assert verify.returncode == 0, f"openssl verify: {verify.stdout}{verify.stderr}"
            cert_pub = _run(
                ["openssl", "x509", "-in", str(folder / "leaf.pem"), "-noout", "-pubkey"]
            )
            key_pub = _run(["openssl", "pkey", "-in", str(folder / "tls.key"), "-pubout"])
            assert cert_pub.returncode == 0, cert_pub.stderr
            assert key_pub.returncode == 0, key_pub.stderr
            assert cert_pub.stdout == key_pub.stdout, "tls.key does not match tls.crt"
        return Issued(secret=secret, leaf=chain[0], chain=chain, ca_pem=data["ca.crt"])

    # -- cleanup ----------------------------------------------------------------

    async def cleanup(self) -> None:
        # No kube-controller-manager: nothing garbage-collects and namespaces
        # stay Terminating, so delete what cert-manager and our controller
        # would otherwise keep reconciling (renewals included).
        ns = self.namespace
        for resource in (Certificate, CertificateRequest, Issuer, CMIssuer):
            with contextlib.suppress(ApiError):
                await self.kube.deletecollection(resource, namespace=ns)
        for name in self.cluster_issuers:
            with contextlib.suppress(ApiError):
                await self.kube.delete(ClusterIssuer, name)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@pytest_asyncio.fixture
async def e2e(
    session_env: Env,
    cert_manager: CertManager,
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[E2E]:
    session_env.emulator.admin.clear_faults()
    harness = E2E(session_env, cert_manager, namespace, tmp_path)
    try:
        yield harness
    finally:
        session_env.emulator.admin.clear_faults()
        await harness.cleanup()


# A CA in the emulator per key type, made once: each costs a Key Vault sign.
_CAS: dict[str, CA] = {}
_CA_LOCK = asyncio.Lock()


async def shared_ca(env: Env, kind: str = "RSA", **kwargs: Any) -> CA:
    key = f"{kind}:{sorted(kwargs.items())}"
    async with _CA_LOCK:
        if key not in _CAS:
            _CAS[key] = await env.make_ca(kind, **kwargs)
        return _CAS[key]
