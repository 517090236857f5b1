"""Harness for the controller tests of the cluster tier (tests/integration/controller;
the e2e harness builds on it).

The controller runs as a subprocess (``python -m akv_issuer.controller``)
under a ServiceAccount bound to exactly ``config/rbac``'s roles -- the manager
ClusterRole's rules plus those of the feature roles (re-issuing, revocation:
all features on, unless a test binds fewer with ``Env.bind_features``), the
configmap-writer role, the secret-reader role and the leader-election Role in
its namespace (the cluster resource namespace) -- against the session's real kube-apiserver and
the Key Vault emulator. Tests act as a user and cert-manager would: an admin client
creates issuers and requests and writes the Approved/Denied conditions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from lightkube import ApiError, AsyncClient, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import Event, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding, RoleBinding
from lightkube.types import PatchType

from akv_devcluster import DevCluster
from akv_devcluster.kubeconfig import write_kubeconfig
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import (
    API_VERSION,
    GROUP,
    CertificateRequest,
    ClusterIssuer,
    Issuer,
)
from akv_issuer.keyvault import ClientSecret, KeyVaultAccess
from akv_issuer.pki import SignatureAlgorithm, build_root_ca, default_algorithm, sign_certificate
from support.emulator import import_certificate
from support.secret_scan import SESSION

REPO = Path(__file__).resolve().parents[2]
TEST_MANAGER = "akv-tests"
WAIT = 90.0

# ---------------------------------------------------------------------------
# Session setup: our CRDs and the manager ClusterRole, as shipped.


@pytest.fixture(scope="session")
def issuer_crds(devcluster: DevCluster) -> list[str]:
    return devcluster.install_crds(sorted((REPO / "config/crd/bases").glob("*.yaml")))


RBAC = REPO / "config" / "rbac"
# The ClusterRoles a feature switch binds cluster-wide (Helm rbac.<feature>,
# kustomize config/components/<feature>).
FEATURE_ROLES = {
    "reissue": "reissuer_role.yaml",
    "revocation": "revoker_role.yaml",
    # Helm controller.clusterTrustBundles, kustomize config/components/cluster-trust-bundles.
    "cluster-trust-bundles": "cluster_trust_bundle_publisher_role.yaml",
}
ALL_FEATURES = tuple(FEATURE_ROLES)
CONFIGMAP_ROLE = "configmap_writer_role.yaml"
# `get` on Secrets: bound in the cluster resource namespace as the chart's
# default (rbac.clusterResourceNamespaceSecrets) and config/rbac do.
SECRET_ROLE = "secret_reader_role.yaml"


def _rbac(file: str) -> Any:
    with (RBAC / file).open() as handle:
        (role,) = codecs.load_all_yaml(handle)
    return role


async def controller_role(
    kube: AsyncClient, features: tuple[str, ...], without: tuple[str, ...] = ()
) -> str:
    """A ClusterRole holding exactly the rules of config/rbac/role.yaml and of
    the feature roles named: what an install with those switches on binds
    cluster-wide (``without``: drop the rules on these resources, as an older
    ClusterRole would lack them). Applied; its name."""
    rules = [r for r in _rbac("role.yaml").rules if not set(r.resources) & set(without)]
    for feature in sorted(features):
        rules += _rbac(FEATURE_ROLES[feature]).rules
    name = "-".join(["akv-tests-manager", *sorted(features), *(f"no-{w}" for w in without)])
    await kube.apply(
        ClusterRole(metadata=ObjectMeta(name=name), rules=rules),
        field_manager=TEST_MANAGER,
        force=True,
    )
    return name


@pytest_asyncio.fixture(scope="session")
async def manager_role(kube_client: AsyncClient, issuer_crds: list[str]) -> str:
    """The shipped roles applied; the name of the cluster-wide role with every
    feature on, which the controller under test is bound to."""
    for file in ("role.yaml", CONFIGMAP_ROLE, SECRET_ROLE, *FEATURE_ROLES.values()):
        await kube_client.apply(_rbac(file), field_manager=TEST_MANAGER, force=True)
    return await controller_role(kube_client, ALL_FEATURES)


def _leader_role() -> Any:
    return _rbac("leader_election_role.yaml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# The controller subprocess


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    probe_port: int
    crl_port: int = 0

    def crl(self, path: str) -> tuple[int, bytes, str]:
        """GET ``path`` from the CRL endpoint: (status, body, content type)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.crl_port}{path}", timeout=5) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), ""
        except OSError:
            return 0, b"", ""

    def _get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self._get(self.probe_port, "/readyz")[0] == 200

    def metrics(self) -> str:
        return self._get(self.metrics_port, "/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(30)


@dataclass
class Env:
    """Everything a controller test needs, created per test."""

    kube: AsyncClient
    namespace: str
    cluster_namespace: str
    emulator: EmulatorProcess
    kv: KeyVaultAccess
    kv_auth: ClientSecret
    kubeconfig: Path
    tmp: Path
    controllers: list[Controller] = field(default_factory=list)
    cluster_issuers: list[str] = field(default_factory=list)
    # The controller's ServiceAccount (in ``namespace``) and its ClusterRoleBinding.
    account: str = "controller"
    binding: str = ""

    # -- RBAC -----------------------------------------------------------------

    async def bind_features(self, *features: str, without: tuple[str, ...] = ()) -> None:
        """Bind the controller cluster-wide to role.yaml plus only these feature
        roles (none: the default install), instead of all of them; ``without``
        drops role.yaml's rules on those resources."""
        role = await controller_role(self.kube, tuple(features), without)
        await self.kube.delete(ClusterRoleBinding, self.binding)
        await self.kube.create(
            ClusterRoleBinding(
                metadata=ObjectMeta(name=self.binding),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role
                ),
                subjects=[
                    Subject(kind="ServiceAccount", name=self.account, namespace=self.namespace)
                ],
            )
        )

    async def grant_configmaps(self, namespace: str) -> None:
        """The configmap-writer role in ``namespace`` (Helm rbac.configMapNamespaces)."""
        await _bind_configmaps(self.kube, namespace, self.account, self.namespace)

    async def grant_secrets(self, namespace: str) -> None:
        """The secret-reader role in ``namespace`` (Helm rbac.secretNamespaces)."""
        await _bind_role(self.kube, SECRET_ROLE, namespace, self.account, self.namespace)

    # -- controller -----------------------------------------------------------

    def start_controller(self, *extra: str, wait_ready: bool = True) -> Controller:
        metrics_port, probe_port, crl_port = free_port(), free_port(), free_port()
        log_path = self.tmp / f"controller-{len(self.controllers)}.log"
        env = {
            **os.environ,
            **self.emulator.env.azure_environ(),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("KUBECONFIG", None)
        command = [
            sys.executable,
            "-m",
            "akv_issuer.controller",
            "--kubeconfig",
            str(self.kubeconfig),
            "--cluster-resource-namespace",
            self.cluster_namespace,
            "--leader-election-namespace",
            self.namespace,
            "--metrics-bind-address",
            f"127.0.0.1:{metrics_port}",
            "--health-probe-bind-address",
            f"127.0.0.1:{probe_port}",
            "--crl-bind-address",
            f"127.0.0.1:{crl_port}",
            "--tls-ca-file",
            self.emulator.env.ca_file,
            "--log-level",
            "debug",
            *extra,
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        controller = Controller(process, log_path, metrics_port, probe_port, crl_port)
        self.controllers.append(controller)
        SESSION.add_log(log_path)  # scanned for credentials at session end
        return controller

    async def wait_ready(self, controller: Controller) -> None:
        async def ready() -> bool:
            if not controller.alive():
                raise AssertionError(f"controller exited:\n{controller.log()[-4000:]}")
            return await asyncio.to_thread(controller.ready)

        await wait_for(ready, what="controller /readyz")

    def sign_calls(self) -> int:
        """Sign requests the emulator has received (CA creation included)."""
        return int(self.emulator.admin.counters().get("sign", 0))

    # -- Key Vault CA -----------------------------------------------------------

    async def make_ca(
        self,
        kind: str = "RSA",
        *,
        size: int | None = None,
        curve: str | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=365),
        pss: bool = False,
    ) -> CA:
        """A root CA whose key is in the emulator; valid from now for ``lifetime``
        (a year: from a minute ago, to tolerate clock differences); RSASSA-PSS
        signed if ``pss``."""
        name = f"ca-{uuid.uuid4().hex[:10]}"
        return await self.rotate_ca(name, kind, size=size, curve=curve, lifetime=lifetime, pss=pss)

    async def rotate_ca(
        self,
        name: str,
        kind: str = "RSA",
        *,
        size: int | None = None,
        curve: str | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=365),
        store: bool = True,
        pss: bool = False,
    ) -> CA:
        """A new version of key ``name`` (the first, if there is none) and a root
        CA certificate for it, stored as a new version of the secret ``name``
        unless ``store`` is False."""
        vault = self.emulator.env.vault_url
        key = await self.kv.create_key(vault, name, self.kv_auth, kty=kind, size=size, curve=curve)
        now = dt.datetime.now(dt.UTC)
        if lifetime > dt.timedelta(hours=1):
            now -= dt.timedelta(minutes=1)
        plan = build_root_ca(key.public_key, f"Test CA {name}", lifetime=lifetime, now=now)
        algorithm = default_algorithm(key.public_key, pss=pss)
        cert = await sign_certificate(
            plan.builder, key.public_key, algorithm, self.kv.signer(key, self.kv_auth)
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if store:
            await self.kv.set_secret(vault, name, pem.decode(), self.kv_auth)
        return CA(name=name, key_version=key.version, pem=pem, cert=cert, algorithm=algorithm)

    async def put_secret(self, name: str, value: str) -> None:
        await self.kv.set_secret(self.emulator.env.vault_url, name, value, self.kv_auth)

    # -- issuers ----------------------------------------------------------------

    def issuer_spec(self, ca: CA, **extra: Any) -> dict[str, Any]:
        return {"keyVaultBaseURL": self.emulator.env.vault_url, "keyName": ca.name, **extra}

    async def create_issuer(
        self, name: str, spec: dict[str, Any], *, cluster: bool = False
    ) -> None:
        if cluster:
            obj: Any = ClusterIssuer(
                apiVersion=API_VERSION,
                kind="ClusterIssuer",
                metadata=ObjectMeta(name=name),
                spec=spec,
            )
            self.cluster_issuers.append(name)
        else:
            obj = Issuer(
                apiVersion=API_VERSION,
                kind="Issuer",
                metadata=ObjectMeta(name=name, namespace=self.namespace),
                spec=spec,
            )
        await self.kube.create(obj)

    async def get_issuer(
        self, name: str, *, cluster: bool = False, namespace: str | None = None
    ) -> dict[str, Any]:
        if cluster:
            return dict(await self.kube.get(ClusterIssuer, name))
        return dict(await self.kube.get(Issuer, name, namespace=namespace or self.namespace))

    async def wait_issuer(
        self, name: str, status: str, reason: str | None = None, *, cluster: bool = False
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            obj = await self.get_issuer(name, cluster=cluster)
            ready = condition(obj, "Ready")
            found.update(obj)
            generation = obj["metadata"].get("generation")
            return (
                ready is not None
                and ready.get("status") == status
                and (reason is None or ready.get("reason") == reason)
                and ready.get("observedGeneration") == generation
            )

        await wait_for(check, what=f"issuer {name} Ready={status} {reason or ''}", env=self)
        return found

    # -- certificate requests -----------------------------------------------------

    async def create_request(
        self,
        name: str,
        csr_pem: bytes,
        issuer: str,
        *,
        kind: str = "Issuer",
        namespace: str | None = None,
        group: str = GROUP,
        **spec: Any,
    ) -> None:
        body = {
            "request": base64.b64encode(csr_pem).decode(),
            "issuerRef": {"name": issuer, "kind": kind, "group": group},
            **spec,
        }
        await self.kube.create(
            CertificateRequest(
                apiVersion="cert-manager.io/v1",
                kind="CertificateRequest",
                metadata=ObjectMeta(name=name, namespace=namespace or self.namespace),
                spec=body,
            )
        )

    async def set_condition(
        self, name: str, type_: str, reason: str, message: str, namespace: str | None = None
    ) -> None:
        """Write Approved/Denied as cert-manager's approver does (status subresource)."""
        ns = namespace or self.namespace
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": name, "namespace": ns},
            "status": {
                "conditions": [
                    {
                        "type": type_,
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now,
                    }
                ]
            },
        }
        await self.kube.patch(
            CertificateRequest.Status,
            name,
            body,
            namespace=ns,
            patch_type=PatchType.APPLY,
            field_manager="test-approver",
            force=True,
        )

    async def approve(self, name: str, namespace: str | None = None) -> None:
        await self.set_condition(name, "Approved", "cert-manager.io", "approved by test", namespace)

    async def deny(self, name: str, namespace: str | None = None) -> None:
        await self.set_condition(name, "Denied", "test-policy", "denied by test policy", namespace)

    async def get_request(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(
            await self.kube.get(CertificateRequest, name, namespace=namespace or self.namespace)
        )

    async def wait_request(
        self, name: str, reason: str, *, namespace: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            obj = await self.get_request(name, namespace)
            found.clear()
            found.update(obj)
            ready = condition(obj, "Ready")
            return (
                ready is not None
                and ready.get("reason") == reason
                and (message is None or message in str(ready.get("message")))
            )

        await wait_for(check, what=f"request {name} Ready reason {reason}", env=self)
        return found

    async def events_for(
        self, name: str, namespace: str | None = None
    ) -> list[tuple[str, str, str]]:
        ns = namespace or self.namespace
        found = []
        async for event in self.kube.list(Event, namespace=ns):
            if event.involvedObject.name == name:
                found.append((str(event.type), str(event.reason), str(event.message)))
        return found

    async def wait_event(
        self, name: str, reason: str, *, type_: str | None = None, namespace: str | None = None
    ) -> tuple[str, str, str]:
        """Events are recorded just after the status write they describe."""
        found: list[tuple[str, str, str]] = []

        async def check() -> bool:
            found[:] = [
                e
                for e in await self.events_for(name, namespace)
                if e[1] == reason and (type_ is None or e[0] == type_)
            ]
            return bool(found)

        await wait_for(check, what=f"event {reason} on {name}", env=self)
        return found[0]

    def openssl_verify(self, request: dict[str, Any], ca: CA) -> x509.Certificate:
        """``openssl verify`` the issued chain against the CA; return the leaf."""
        ca_pem = base64.b64decode(request["status"]["ca"])
        assert ca_pem.strip() == ca.pem.strip(), "status.ca is not the issuer's CA"
        return self.openssl_verify_against(request, ca_pem)

    def openssl_verify_against(
        self, request: dict[str, Any], anchor_pem: bytes
    ) -> x509.Certificate:
        """``openssl verify`` the issued chain with ``anchor_pem`` as the only
        trusted certificate; return the leaf."""
        chain_pem = base64.b64decode(request["status"]["certificate"])
        certs = x509.load_pem_x509_certificates(chain_pem)
        with tempfile.TemporaryDirectory(dir=self.tmp) as work:
            root = Path(work, "ca.pem")
            root.write_bytes(anchor_pem)
            leaf = Path(work, "leaf.pem")
            leaf.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
            args = ["openssl", "verify", "-CAfile", str(root)]
            if len(certs) > 1:
                untrusted = Path(work, "untrusted.pem")
                untrusted.write_bytes(
                    b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:])
                )
                args += ["-untrusted", str(untrusted)]
            result = subprocess.run([*args, str(leaf)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"openssl verify failed: {result.stdout}{result.stderr}"
        return certs[0]


@dataclass(frozen=True)
class CA:
    name: str
    key_version: str
    pem: bytes
    cert: x509.Certificate
    algorithm: SignatureAlgorithm


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    limit: float = WAIT,
    env: Env | None = None,
) -> None:
    """Wait until ``check`` holds: a bound on waiting, not an assertion about speed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        if await check():
            return
        if loop.time() > deadline:
            logs = ""
            if env is not None:
                logs = "\n".join(c.log()[-3000:] for c in env.controllers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------
# CSRs


def csr_pem(
    key_type: str = "rsa",
    cn: str = "app.example.com",
    *,
    is_ca: bool = False,
    default_usages_in_csr: bool = False,
) -> bytes:
    """A CSR for a fresh key; ``default_usages_in_csr``: with the KeyUsage
    cert-manager encodes for its default usages (digital signature, key
    encipherment, plus cert sign for a CA), whatever the key type."""
    key: Any
    if key_type.startswith("rsa"):
        # "rsa" is RSA-2048; "rsa1024" and the like ask for another size.
        size = int(key_type[3:] or 2048)
        key = rsa.generate_private_key(public_exponent=65537, key_size=size)
    elif key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(key_type)
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if default_usages_in_csr:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=is_ca,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    algorithm = None if key_type == "ed25519" else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------------
# Fixture


async def _service_account_kubeconfig(
    kube: AsyncClient, cluster: DevCluster, namespace: str, name: str, folder: Path
) -> Path:
    """A ServiceAccount and a kubeconfig with its TokenRequest token: the
    controller runs with exactly the RBAC bound to it, never as admin."""
    await kube.apply(
        ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)),
        field_manager=TEST_MANAGER,
    )
    issued = await kube.create(
        ServiceAccountToken(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
        ),
        name=name,
        namespace=namespace,
    )
    assert issued.status is not None
    SESSION.add_secret(issued.status.token)
    return write_kubeconfig(
        folder / f"{namespace}.{name}.kubeconfig",
        server_url=cluster.server_url,
        ca_pem=cluster.ca_file.read_bytes(),
        user=f"{namespace}-{name}",
        token=issued.status.token,
        namespace=namespace,
    )


async def _bind_configmaps(kube: AsyncClient, namespace: str, sa: str, sa_namespace: str) -> None:
    await _bind_role(kube, CONFIGMAP_ROLE, namespace, sa, sa_namespace)


async def _bind_role(
    kube: AsyncClient, file: str, namespace: str, sa: str, sa_namespace: str
) -> None:
    """A RoleBinding of config/rbac's ClusterRole ``file`` in ``namespace``."""
    role = _rbac(file)
    await kube.apply(
        RoleBinding(
            metadata=ObjectMeta(name=role.metadata.name.removesuffix("-role"), namespace=namespace),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role.metadata.name
            ),
            subjects=[Subject(kind="ServiceAccount", name=sa, namespace=sa_namespace)],
        ),
        field_manager=TEST_MANAGER,
    )


async def _bind_controller(kube: AsyncClient, namespace: str, role: str, sa: str) -> str:
    """The controller's grants: ``role`` cluster-wide; in ``namespace`` (its
    own and the cluster resource namespace) the leader election Role, the
    configmap-writer role and the secret-reader role, as the chart and
    config/rbac bind them by default."""
    binding_name = f"akv-controller-{namespace}"
    await kube.apply(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=binding_name),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[Subject(kind="ServiceAccount", name=sa, namespace=namespace)],
        ),
        field_manager=TEST_MANAGER,
    )
    leader_role = _leader_role()
    leader_role.metadata.namespace = namespace
    await kube.apply(leader_role, field_manager=TEST_MANAGER)
    await kube.apply(
        RoleBinding(
            metadata=ObjectMeta(name="leader-election", namespace=namespace),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="Role", name=leader_role.metadata.name
            ),
            subjects=[Subject(kind="ServiceAccount", name=sa, namespace=namespace)],
        ),
        field_manager=TEST_MANAGER,
    )
    await _bind_configmaps(kube, namespace, sa, namespace)
    await _bind_role(kube, SECRET_ROLE, namespace, sa, namespace)
    return binding_name


async def open_env(
    kube_client: AsyncClient,
    devcluster: DevCluster,
    emulator: EmulatorProcess,
    namespace: str,
    manager_role: str,
    tmp: Path,
) -> tuple[Env, str]:
    """An Env whose controller identity lives in ``namespace`` (which doubles as its
    cluster resource namespace) bound to ``manager_role`` (the shipped roles,
    every feature on); returns the Env and the name of the ClusterRoleBinding
    to delete afterwards."""
    kubeconfig = await _service_account_kubeconfig(
        kube_client, devcluster, namespace, "controller", tmp
    )
    binding = await _bind_controller(kube_client, namespace, manager_role, "controller")
    kv, auth = emulator.env.service_principal_access(timeout=30)
    env = Env(
        kube=kube_client,
        namespace=namespace,
        cluster_namespace=namespace,
        emulator=emulator,
        kv=kv,
        kv_auth=auth,
        kubeconfig=kubeconfig,
        tmp=tmp,
        binding=binding,
    )
    return env, binding


@pytest_asyncio.fixture
async def env(
    kube_client: AsyncClient,
    namespace: str,
    manager_role: str,
    devcluster: DevCluster,
    emulator: EmulatorProcess,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    test_env, binding = await open_env(
        kube_client, devcluster, emulator, namespace, manager_role, tmp_path
    )
    kv = test_env.kv
    try:
        yield test_env
    finally:
        for controller in test_env.controllers:
            controller.kill()
        await kv.close()
        # Namespaces are never finalized here (no kube-controller-manager), so
        # delete what later tests' controllers would otherwise list and check.
        for name in test_env.cluster_issuers:
            with contextlib.suppress(ApiError):
                await kube_client.delete(ClusterIssuer, name)
        await kube_client.deletecollection(Issuer, namespace=namespace)
        await kube_client.deletecollection(CertificateRequest, namespace=namespace)
        await kube_client.delete(ClusterRoleBinding, binding)


async def certificate_object_ca(env: Env, vault_url: str, common_name: str) -> CA:
    """A self-signed P-256 CA imported into ``vault_url`` as a Key Vault
    certificate object (key, secret and certificate of one new name), for
    ``caSource.keyVaultCertificate``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    bundle = pem + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    name = f"cert-{uuid.uuid4().hex[:10]}"
    await import_certificate(env.emulator, vault_url, name, bundle)
    algorithm = default_algorithm(key.public_key())
    return CA(name=name, key_version="", pem=pem, cert=cert, algorithm=algorithm)
