"""cert-manager's trust-manager on the dev cluster, to test published trust bundles.

Why: an issuer's trust bundle (``spec.trustBundle``) is only useful if the
real Bundle controller that relying parties use accepts it as a source and
copies it to their namespaces. ``start_trust_manager(cluster, trust_namespace)``
runs upstream's own ``trust-manager`` binary (built from its Go module by
``hack/trust-manager``) as a managed process of a :class:`DevCluster`:

- with the Bundle CRD from the pinned module (``deploy/crds``, never copied);
- under its own ServiceAccount ``trust-manager/trust-manager`` with a
  TokenRequest kubeconfig and exactly the RBAC trust-manager's Helm chart
  grants it (rendered by ``helm template`` from the chart inside the module),
  never admin;
- with ``--trust-namespace`` where our ConfigMaps are (an Issuer's namespace,
  or the cluster resource namespace for a ClusterIssuer);
- with its validating webhook server serving a throwaway self-signed
  certificate: upstream's main always starts it, but no
  ValidatingWebhookConfiguration points at it here, so the API server never
  calls it (Bundles are validated by their CRD schema only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

from akv_devcluster import binaries as bins
from akv_devcluster.cluster import DevCluster, DevClusterError, free_port
from akv_devcluster.helm import template as helm_template
from akv_devcluster.identity import create_identity
from akv_devcluster.process import ProcessRecord, ProcessSpec

NAMESPACE = "trust-manager"
SERVICE_ACCOUNT = "trust-manager"
PROCESS_NAME = "trust-manager"
FIELD_MANAGER = "akv-devcluster"
TOKEN_SECONDS = 7 * 24 * 3600
BUNDLE_CRD = "trust.cert-manager.io_bundles.yaml"
CHART_RBAC = (
    "templates/serviceaccount.yaml",
    "templates/clusterrole.yaml",
    "templates/clusterrolebinding.yaml",
    "templates/role.yaml",
    "templates/rolebinding.yaml",
)

Bundle = create_global_resource("trust.cert-manager.io", "v1alpha1", "Bundle", "bundles")


class TrustManagerError(DevClusterError):
    """trust-manager could not be prepared or started; one-line message."""


@dataclass(frozen=True)
class TrustManager:
    record: ProcessRecord
    trust_namespace: str
    readyz_port: int

    @property
    def log_file(self) -> Path:
        return Path(self.record.log_file)


def module_dir() -> Path:
    """The pinned trust-manager module (after ``go mod download``)."""
    info = bins.download_module(bins.TRUST_MANAGER_MODULE, bins.TRUST_MANAGER_VERSION)
    return Path(info["Dir"])


def binary(*, build: bool) -> Path:
    found = bins._required_version(
        bins.HACK_DIR / "trust-manager" / "go.mod", bins.TRUST_MANAGER_MODULE
    )
    if found != bins.TRUST_MANAGER_VERSION:
        raise TrustManagerError(
            f"hack/trust-manager/go.mod requires {bins.TRUST_MANAGER_MODULE} {found}, "
            f"expected {bins.TRUST_MANAGER_VERSION}"
        )
    if build:
        return bins.ensure_binary(bins.TRUST_MANAGER)
    if bins._is_fresh(bins.TRUST_MANAGER):
        return bins.binary_path(bins.TRUST_MANAGER)
    raise TrustManagerError(
        f"trust-manager {bins.TRUST_MANAGER_VERSION} is not built yet; run `make binaries`"
    )


def render_chart_rbac(helm: Path, chart: Path, trust_namespace: str) -> list[Any]:
    return helm_template(
        helm,
        "trust-manager",
        chart,
        NAMESPACE,
        sets=(f"app.trust.namespace={trust_namespace}",),
        show_only=CHART_RBAC,
        error=TrustManagerError,
    )


def write_webhook_certificate(folder: Path) -> Path:
    """A self-signed tls.crt/tls.key for the (never called) webhook server."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trust-manager webhook")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder


async def _prepare(cluster: DevCluster, helm: Path, trust_namespace: str) -> Path:
    client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager=FIELD_MANAGER
    )
    try:
        source = module_dir()
        with (source / "deploy" / "crds" / BUNDLE_CRD).open() as handle:
            for crd in codecs.load_all_yaml(handle):
                await client.apply(crd, field_manager=FIELD_MANAGER, force=True)
        for name in dict.fromkeys((NAMESPACE, trust_namespace)):
            await client.apply(
                Namespace(metadata=ObjectMeta(name=name)), field_manager=FIELD_MANAGER
            )
        chart = source / "deploy" / "charts" / "trust-manager"
        for obj in render_chart_rbac(helm, chart, trust_namespace):
            await client.apply(obj, field_manager=FIELD_MANAGER, force=True)
        await _wait_established(client, "bundles.trust.cert-manager.io")
        identity = await create_identity(
            client,
            namespace=NAMESPACE,
            name=SERVICE_ACCOUNT,
            server_url=cluster.server_url,
            ca_pem=cluster.ca_file.read_bytes(),
            kubeconfig_dir=cluster.directory / "identities",
            expiration_seconds=TOKEN_SECONDS,
        )
        return identity.kubeconfig_path
    except ApiError as exc:
        raise TrustManagerError(f"cannot prepare trust-manager: {exc.status.message}") from exc
    finally:
        await client.close()


async def _wait_established(client: AsyncClient, name: str, limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        crd = await client.get(CustomResourceDefinition, name)
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        await asyncio.sleep(0.2)
    raise TrustManagerError(f"CRD {name} not established after {limit:.0f}s")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_trust_manager(
    cluster: DevCluster,
    trust_namespace: str,
    *,
    build: bool = False,
    timeout: float = 60.0,
) -> TrustManager:
    """Start trust-manager, sourcing Bundles from ``trust_namespace``.

    Blocking (runs its own event loop for the API calls): call it from
    synchronous code, or through ``asyncio.to_thread``.
    """
    executable = binary(build=build)
    helm = bins.ensure_binary(bins.HELM) if build else bins.binary_path(bins.HELM)
    if not helm.is_file():
        raise TrustManagerError("helm is not built yet (it renders trust-manager's RBAC)")
    kubeconfig = asyncio.run(_prepare(cluster, helm, trust_namespace))
    certs = write_webhook_certificate(cluster.directory / "trust-manager-webhook")
    readyz, metrics, webhook = free_port(), free_port(), free_port()
    argv = [
        str(executable),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--trust-namespace={trust_namespace}",
        f"--readiness-probe-port={readyz}",
        f"--metrics-port={metrics}",
        "--webhook-host=127.0.0.1",
        f"--webhook-port={webhook}",
        f"--webhook-certificate-dir={certs}",
        "--log-level=2",
    ]
    record = cluster.start_process(
        ProcessSpec(PROCESS_NAME, argv), ready=lambda: _ready(readyz), timeout=timeout
    )
    return TrustManager(record, trust_namespace, readyz)


def stop_trust_manager(cluster: DevCluster) -> None:
    cluster.processes.stop(PROCESS_NAME)
