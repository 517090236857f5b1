"""cert-manager's controller on the dev cluster, and its CA issuer as a baseline.

``start_cert_manager(cluster)`` runs the real cert-manager controller (built
from cert-manager's Go modules by ``hack/cert-manager``) as one more managed
process of a :class:`DevCluster`:

- under its own ServiceAccount ``cert-manager/cert-manager`` with a
  TokenRequest kubeconfig, never admin;
- with exactly the RBAC cert-manager's Helm chart grants that ServiceAccount
  (``templates/rbac.yaml`` and ``templates/serviceaccount.yaml`` rendered by
  ``helm template`` from the chart inside the pinned cert-manager module, not
  a copy), plus *our* shipped approver ClusterRole and binding from
  ``config/rbac/`` so its approver may approve requests for our issuers;
- without its webhook and cainjector, and without the controllers that need
  an ACME server (``orders``, ``challenges``); ingress-shim runs (Certificates
  from annotated Ingresses: cert-manager's conformance specs use it);
- with its (alpha) Kubernetes CSR signers on (``FEATURE_GATES``).

``issue_certificates`` creates N Certificates against any issuerRef and
measures each one's time to Ready: the benchmark calls it with our issuer and
with cert-manager's built-in CA issuer (``create_ca_issuer``) on the same
control plane and reports ratios.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import re
import shutil
import statistics
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from akv_devcluster import binaries as bins
from akv_devcluster.cluster import DevCluster, DevClusterError, free_port
from akv_devcluster.helm import template as helm_template
from akv_devcluster.identity import Identity, create_identity
from akv_devcluster.process import ProcessRecord, ProcessSpec

# tools/src/akv_devcluster/ -> the repository root (config/rbac); see binaries.HACK_DIR.
REPO = Path(__file__).resolve().parents[3]
APPROVER_RBAC = (
    REPO / "config" / "rbac" / "approver_role.yaml",
    REPO / "config" / "rbac" / "approver_role_binding.yaml",
)

NAMESPACE = "cert-manager"
SERVICE_ACCOUNT = "cert-manager"
PROCESS_NAME = "cert-manager-controller"
FIELD_MANAGER = "akv-devcluster"
# Controllers that need ACME servers or solver pods; nothing here uses them
# and the dev cluster runs no pods.
DISABLED_CONTROLLERS = ("orders", "challenges")
# cert-manager's Kubernetes CSR signers (certificatesigningrequests-issuer-*)
# are alpha upstream and off by default; on here so that cert-manager's own CA
# issuer can be the baseline of the CSR conformance specs
# (tests/e2e/test_e2e_conformance.py). They only act on CSRs whose signerName
# is in cert-manager.io.
FEATURE_GATES = ("ExperimentalCertificateSigningRequestControllers=true",)
# The TokenRequest token in the controller's kubeconfig. No kubelet refreshes
# it here, so it lives as long as a long dev session.
TOKEN_SECONDS = 7 * 24 * 3600

CERTIFICATE_API_VERSION = "cert-manager.io/v1"
Certificate = create_namespaced_resource("cert-manager.io", "v1", "Certificate", "certificates")
CMIssuer = create_namespaced_resource("cert-manager.io", "v1", "Issuer", "issuers")


class CertManagerError(DevClusterError):
    """cert-manager could not be prepared or started; one-line message."""


# --- binaries ----------------------------------------------------------------


def controller_binary(*, build: bool) -> Path:
    """The cert-manager controller built from hack/cert-manager (cached by
    version) at the version of the ``AKV_MATRIX`` point."""
    binary = bins.matrix_point().cert_manager_controller
    check_gomod(binary)
    if build:
        return bins.ensure_binary(binary)
    if bins._is_fresh(binary):
        return bins.binary_path(binary)
    raise CertManagerError(f"{binary.name} {binary.version} is not built yet; run `make binaries`")


def check_gomod(binary: bins.GoBinary | None = None) -> None:
    binary = binary or bins.CERT_MANAGER_CONTROLLER
    gomod = bins.HACK_DIR / "cert-manager" / (binary.modfile or "go.mod")
    found = bins._required_version(gomod, bins.CERT_MANAGER_MODULE)
    if found != binary.version:
        raise CertManagerError(
            f"{gomod} requires {bins.CERT_MANAGER_MODULE} {found}, but the CRDs are "
            f"{binary.version}; change both together"
        )


def chart_dir() -> Path:
    """cert-manager's Helm chart inside the pinned module (never copied into
    the repository) at the ``AKV_MATRIX`` point's version."""
    crds = bins.cert_manager_crd_dir()
    chart = crds.parent / "charts" / "cert-manager"
    if not (chart / "templates" / "rbac.yaml").is_file():
        raise CertManagerError(f"cert-manager's chart is not at {chart}")
    if (chart / "Chart.yaml").is_file():
        return chart
    return _released_chart(chart, bins.matrix_point().cert_manager)


def _released_chart(source: Path, version: str) -> Path:
    """Up to cert-manager 1.19 the module holds ``Chart.template.yaml``, which
    cert-manager's release tooling turns into ``Chart.yaml`` (version and
    appVersion filled in). Do the same once, on a copy in the user cache (the
    module cache is read-only)."""
    template = source / "Chart.template.yaml"
    if not template.is_file():
        raise CertManagerError(f"cert-manager's chart at {source} has no Chart.yaml")
    target = bins.cache_root() / "charts" / f"cert-manager-{version}"
    if (target / "Chart.yaml").is_file():
        return target
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    for path in [partial, *partial.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # copied from the read-only module cache
    text = template.read_text()
    text = re.sub(r"^version: .*$", f"version: {version}", text, flags=re.M)
    text = re.sub(r"^appVersion: .*$", f"appVersion: {version}", text, flags=re.M)
    (partial / "Chart.yaml").write_text(text.replace("{{IS_PRERELEASE}}", "false"))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def render_chart_rbac(helm: Path, chart: Path, *, namespace: str = NAMESPACE) -> list[Any]:
    """The ServiceAccount and RBAC objects the chart installs for the controller.

    Rendered with the chart's defaults (release ``cert-manager`` in
    ``namespace``); cainjector/webhook/startupapicheck templates are not
    rendered because those components do not run here.
    """
    return helm_template(
        helm,
        "cert-manager",
        chart,
        namespace,
        show_only=("templates/serviceaccount.yaml", "templates/rbac.yaml"),
        error=CertManagerError,
    )


def approver_rbac() -> list[Any]:
    """Our shipped approver ClusterRole + binding (config/rbac), as a user applies them."""
    objects: list[Any] = []
    for path in APPROVER_RBAC:
        with path.open() as handle:
            objects += codecs.load_all_yaml(handle)
    return objects


# --- the controller process ---------------------------------------------------


@dataclass(frozen=True)
class CertManager:
    """A running cert-manager controller of a dev cluster."""

    record: ProcessRecord
    cluster_resource_namespace: str
    healthz_port: int
    metrics_port: int

    @property
    def log_file(self) -> Path:
        return Path(self.record.log_file)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    @classmethod
    def from_record(cls, record: ProcessRecord) -> CertManager:
        args = _flag_values(record.argv)
        return cls(
            record=record,
            cluster_resource_namespace=args["--cluster-resource-namespace"],
            healthz_port=int(args["--healthz-listen-address"].rsplit(":", 1)[1]),
            metrics_port=int(args["--metrics-listen-address"].rsplit(":", 1)[1]),
        )


def _flag_values(argv: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, _, value = arg.partition("=")
            values[key] = value
    return values


def controller_argv(
    binary: Path,
    *,
    kubeconfig: Path,
    cluster_resource_namespace: str,
    healthz_port: int,
    metrics_port: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--cluster-resource-namespace={cluster_resource_namespace}",
        "--controllers=*," + ",".join(f"-{name}" for name in DISABLED_CONTROLLERS),
        "--enable-certificate-owner-ref=true",
        "--feature-gates=" + ",".join(FEATURE_GATES),
        f"--healthz-listen-address=127.0.0.1:{healthz_port}",
        f"--metrics-listen-address=127.0.0.1:{metrics_port}",
        "--v=2",
        *extra_args,
    ]


def _admin_client(cluster: DevCluster) -> AsyncClient:
    return AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager=FIELD_MANAGER
    )


async def install_rbac(
    client: AsyncClient, *, helm: Path, chart: Path, cluster_resource_namespace: str
) -> None:
    """Namespaces, the chart's ServiceAccount and RBAC, and our approver RBAC."""
    for name in dict.fromkeys((NAMESPACE, cluster_resource_namespace)):
        await client.apply(Namespace(metadata=ObjectMeta(name=name)), field_manager=FIELD_MANAGER)
    for obj in [*render_chart_rbac(helm, chart), *approver_rbac()]:
        await client.apply(obj, field_manager=FIELD_MANAGER, force=True)


async def prepare_identity(
    cluster: DevCluster, *, helm: Path, chart: Path, cluster_resource_namespace: str
) -> Identity:
    client = _admin_client(cluster)
    try:
        await install_rbac(
            client, helm=helm, chart=chart, cluster_resource_namespace=cluster_resource_namespace
        )
        return await create_identity(
            client,
            namespace=NAMESPACE,
            name=SERVICE_ACCOUNT,
            server_url=cluster.server_url,
            ca_pem=cluster.ca_file.read_bytes(),
            kubeconfig_dir=cluster.directory / "identities",
            expiration_seconds=TOKEN_SECONDS,
        )
    except ApiError as exc:
        raise CertManagerError(f"cannot install cert-manager's RBAC: {exc.status.message}") from exc
    finally:
        await client.close()


def _livez(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def running_cert_manager(cluster: DevCluster) -> CertManager | None:
    """The cert-manager controller this cluster already runs, if any."""
    record = cluster.processes.get(PROCESS_NAME)
    if record is None or cluster.processes.exit_code(record) is not None:
        return None
    return CertManager.from_record(record)


def start_cert_manager(
    cluster: DevCluster,
    *,
    build: bool = True,
    cluster_resource_namespace: str = NAMESPACE,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> CertManager:
    """Start cert-manager's controller as a managed process of ``cluster``.

    Blocking (runs its own event loop for the API calls): call it from
    synchronous code, or through ``asyncio.to_thread``.
    """
    if running_cert_manager(cluster) is not None:
        raise CertManagerError(f"{PROCESS_NAME} already runs in {cluster.directory}")
    binary = controller_binary(build=build)
    helm = bins.ensure_binary(bins.HELM) if build else bins.binary_path(bins.HELM)
    if not helm.is_file():
        raise CertManagerError(
            "helm is not built yet (it renders cert-manager's RBAC); run `make binaries`"
        )
    identity = asyncio.run(
        prepare_identity(
            cluster,
            helm=helm,
            chart=chart_dir(),
            cluster_resource_namespace=cluster_resource_namespace,
        )
    )
    healthz_port, metrics_port = free_port(), free_port()
    argv = controller_argv(
        binary,
        kubeconfig=identity.kubeconfig_path,
        cluster_resource_namespace=cluster_resource_namespace,
        healthz_port=healthz_port,
        metrics_port=metrics_port,
        extra_args=extra_args,
    )
    record = cluster.start_process(
        ProcessSpec(PROCESS_NAME, argv), ready=lambda: _livez(healthz_port), timeout=timeout
    )
    return CertManager(record, cluster_resource_namespace, healthz_port, metrics_port)


def stop_cert_manager(cluster: DevCluster) -> None:
    cluster.processes.stop(PROCESS_NAME)


# --- cert-manager's own CA issuer (the benchmark baseline) --------------------


@dataclass(frozen=True)
class LocalCA:
    cert_pem: bytes
    key_pem: bytes


def make_local_ca(
    key_type: str = "ecdsa-p256",
    common_name: str = "cert-manager CA baseline",
    *,
    lifetime: dt.timedelta = dt.timedelta(days=365),
) -> LocalCA:
    """A self-signed CA whose key sits in a Secret: what cert-manager's CA issuer uses."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from akv_issuer.pki import build_root_ca

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type.startswith("rsa-"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    else:
        raise ValueError(f"unsupported CA key type {key_type!r}")
    plan = build_root_ca(
        key.public_key(),
        common_name,
        lifetime=lifetime,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    cert = plan.builder.sign(key, hashes.SHA256())
    return LocalCA(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def create_ca_issuer(
    client: AsyncClient, namespace: str, name: str, ca: LocalCA | None = None
) -> LocalCA:
    """A ``ca`` Issuer of cert-manager (key pair in a ``kubernetes.io/tls`` Secret)."""
    ca = ca or make_local_ca()
    await client.apply(
        Secret(
            metadata=ObjectMeta(name=f"{name}-keypair", namespace=namespace),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(ca.cert_pem).decode(),
                "tls.key": base64.b64encode(ca.key_pem).decode(),
            },
        ),
        field_manager=FIELD_MANAGER,
    )
    await client.apply(
        CMIssuer(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={"ca": {"secretName": f"{name}-keypair"}},
        ),
        field_manager=FIELD_MANAGER,
    )
    return ca


# --- issuing N Certificates and measuring them --------------------------------


@dataclass
class IssuanceResult:
    """Outcome of ``issue_certificates``: wall time and per-Certificate latency."""

    count: int
    total_seconds: float
    latencies: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Certificates per second, creation of the first to Ready of the last."""
        return self.count / self.total_seconds if self.total_seconds > 0 else float("inf")

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def summary(self) -> dict[str, float]:
        return {
            "count": float(self.count),
            "total_seconds": self.total_seconds,
            "throughput_per_second": self.throughput,
            "latency_p50": self.percentile(0.5),
            "latency_p90": self.percentile(0.9),
            "latency_max": max(self.latencies, default=float("nan")),
            "latency_mean": statistics.fmean(self.latencies) if self.latencies else float("nan"),
        }


def certificate_body(
    namespace: str,
    name: str,
    issuer_ref: dict[str, str],
    *,
    secret_name: str | None = None,
    **spec: Any,
) -> Any:
    body: dict[str, Any] = {
        "secretName": secret_name or name,
        "issuerRef": issuer_ref,
        "commonName": f"{name}.example.com",
        "dnsNames": [f"{name}.example.com"],
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    body.update(spec)
    body = {key: value for key, value in body.items() if value is not None}
    return Certificate(metadata=ObjectMeta(name=name, namespace=namespace), spec=body)


def ready_condition(obj: Any) -> dict[str, Any] | None:
    status = obj.get("status") if isinstance(obj, dict) else getattr(obj, "status", None)
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


async def issue_certificates(
    client: AsyncClient,
    namespace: str,
    issuer_ref: dict[str, str],
    count: int,
    *,
    prefix: str | None = None,
    wait_seconds: float = 300.0,
    **spec: Any,
) -> IssuanceResult:
    """Create ``count`` Certificates at once and wait until all are Ready.

    Latency of one Certificate: from just before its create call to the
    first time it is seen with ``Ready=True`` (a watch, so no polling
    delay). Total: from the first create to the last Ready. Raises
    ``TimeoutError`` (naming the ones still not Ready) after ``wait_seconds``.
    """
    prefix = prefix or f"bench-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(count)]
    created: dict[str, float] = {}
    ready_at: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    all_ready = asyncio.Event()

    async def watch() -> None:
        async for _, obj in client.watch(Certificate, namespace=namespace):
            name = obj.metadata.name if obj.metadata else None
            if name in created and name not in ready_at:
                cond = ready_condition(obj)
                if cond and cond.get("status") == "True":
                    ready_at[name] = loop.time()
                    if len(ready_at) == count:
                        all_ready.set()
                        return

    watcher = asyncio.create_task(watch())
    # Give the watch a moment to be established before the first create.
    await asyncio.sleep(0.2)
    started = loop.time()

    async def create(name: str) -> None:
        created[name] = loop.time()
        await client.create(certificate_body(namespace, name, issuer_ref, **spec))

    try:
        await asyncio.gather(*(create(n) for n in names))
        try:
            await asyncio.wait_for(all_ready.wait(), wait_seconds)
        except TimeoutError:
            missing = [n for n in names if n not in ready_at]
            raise TimeoutError(
                f"{len(missing)} of {count} Certificates not Ready after {wait_seconds:.0f}s: "
                f"{', '.join(missing[:5])}"
            ) from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    total = max(ready_at.values()) - started
    return IssuanceResult(
        count=count,
        total_seconds=total,
        latencies=[ready_at[n] - created[n] for n in names],
        names=names,
    )


__all__ = [
    "DISABLED_CONTROLLERS",
    "NAMESPACE",
    "PROCESS_NAME",
    "SERVICE_ACCOUNT",
    "CMIssuer",
    "CertManager",
    "CertManagerError",
    "Certificate",
    "IssuanceResult",
    "LocalCA",
    "approver_rbac",
    "certificate_body",
    "chart_dir",
    "controller_binary",
    "create_ca_issuer",
    "issue_certificates",
    "make_local_ca",
    "render_chart_rbac",
    "running_cert_manager",
    "start_cert_manager",
    "stop_cert_manager",
]
