"""Session fixtures of the node tier (tests/node, tools/tests/node): one dev
cluster with a node, shared. A fixture plugin (``support.plugin``), so both
folders share one node cluster per session.

- ``node_cluster``: ``akv_devcluster`` with ``node=...`` (kubelet, containerd,
  kube-proxy, scheduler, controller-manager); started once per session
  (about 15 s) and stopped at its end.
- ``controller_image``: the project's Dockerfile built by ``make image``'s
  code (``akv_devcluster.dockerfile``; warm in seconds, cold a few minutes)
  and loaded into the node.
- ``node_emulator``: the Key Vault emulator on the host end of the node's
  link, the address Pods reach the host at; its TLS certificate covers it.
- ``node_cert_manager``: cert-manager's controller (a host process).
- ``node_ca``: a CA key in the emulator and its root certificate.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig

from akv_devcluster import DevCluster, DevClusterError
from akv_devcluster.binaries import BinariesError, locate
from akv_devcluster.certmanager import CertManager, start_cert_manager, stop_cert_manager
from akv_devcluster.dockerfile import IMAGE_TAG, ImageBuildError, build_image
from akv_devcluster.node import NodeError, build_node_binaries, load_image
from akv_emulator.testing import EmulatorProcess, environ_with
from support.cluster import session_cluster
from support.node_install import NodeCA
from support.secret_scan import SESSION


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """Run a command; on failure raise with its stderr (the user's view)."""
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:4])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    try:
        binaries = locate(build=False)
        node = build_node_binaries(build=False)
    except (BinariesError, NodeError) as exc:
        pytest.fail(f"node binaries missing: {exc}", pytrace=False)
    with session_cluster(
        tmp_path_factory.mktemp("nodecluster"),
        binaries,
        "the node cluster did not start",
        node=node,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def node_kube(node_cluster: DevCluster) -> Iterator[Client]:
    client = Client(
        config=KubeConfig.from_file(node_cluster.kubeconfig_path), field_manager="akv-tests"
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def controller_image_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's Dockerfile built as `make image` does (warm: the layer cache)."""
    archive = tmp_path_factory.mktemp("image") / "azure-keyvault-issuer.tar"
    try:
        return build_image(out=archive)
    except ImageBuildError as exc:
        pytest.fail(f"the controller image could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def controller_image(node_cluster: DevCluster, controller_image_archive: Path) -> str:
    """That image loaded into the node; its reference."""
    try:
        load_image(node_cluster, controller_image_archive)
    except NodeError as exc:
        pytest.fail(f"the controller image could not be loaded: {exc}", pytrace=False)
    return IMAGE_TAG


@pytest.fixture(scope="session")
def node_emulator(
    node_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorProcess]:
    network = node_cluster.node_network
    assert network is not None
    process = EmulatorProcess.start(tmp_path_factory.mktemp("node-emulator"), host=network.host_ip)
    SESSION.add_secret(process.env.values["AKV_EMULATOR_SP_CLIENT_SECRET"])
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def node_cert_manager(node_cluster: DevCluster) -> Iterator[CertManager]:
    try:
        manager = start_cert_manager(node_cluster, build=False)
    except (DevClusterError, BinariesError) as exc:
        pytest.fail(f"cert-manager did not start: {exc}", pytrace=False)
    try:
        yield manager
    finally:
        stop_cert_manager(node_cluster)


@pytest.fixture(scope="session")
def node_ca(node_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> NodeCA:
    """An RSA CA key in the emulator and its root certificate (uploaded as a secret)."""
    name = f"node-ca-{uuid.uuid4().hex[:6]}"
    pem = tmp_path_factory.mktemp("node-ca") / "ca.pem"
    akv_issuer = str(Path(sys.executable).parent / "akv-issuer")
    run(
        [
            akv_issuer, "ca", "create",
            "--vault-url", node_emulator.env.vault_url,
            "--key-name", name,
            "--create-key", "rsa-2048",
            "--common-name", "Node Test CA",
            "--lifetime", "30d",
            "--upload-secret",
            "--out", str(pem),
        ],
        env=environ_with(node_emulator.env),
    )  # fmt: skip
    return NodeCA(name, pem)


# --- order -----------------------------------------------------------------------
#
# test_node_pod_certificates.py waits 11-17 minutes for the kubelet to refresh
# its Pods' certificates (beginRefreshAt: the API's earliest, 10 minutes after
# issuance, plus the kubelet's jitter of up to 5 and its pass of 1-2). Its
# Pods, the CA rotation and the denied Pod come first; the modules below run
# during the wait; the refresh check follows; then the rest. The modules
# beside the wait run no controller of ours on the node cluster: every
# controller reconciles every Issuer and ClusterIssuer and signs their
# requests, so a chart or kustomize release running beside the Pod
# certificates' one would sign the other's requests (and hide a broken one)
# and report the other's ClusterIssuer not Ready. A new module runs after the
# refresh check unless it is added here.
POD_CERTIFICATES_MODULE = "test_node_pod_certificates.py"
REFRESH_TEST = (
    "test_kubelet_refreshes_every_pod_certificate_to_the_new_ca_and_the_pods_keep_talking"
)
BESIDE_THE_REFRESH_WAIT = frozenset(
    {
        "test_alerts.py",
        "test_node_faults.py",
        "test_node_image.py",
        "test_node_release.py",
        "test_node_devcluster.py",
        "test_node_kubelet_requests.py",
    }
)


def node_order(items: list[pytest.Item]) -> list[pytest.Item]:
    """The node tier's items in the order above; the others keep theirs."""
    node = [item for item in items if item.get_closest_marker("node")]
    podcert = [item for item in node if item.path.name == POD_CERTIFICATES_MODULE]
    refresh = [item for item in podcert if getattr(item, "originalname", item.name) == REFRESH_TEST]
    if not refresh:
        return items
    start = [item for item in podcert if item not in refresh]
    beside = [item for item in node if item.path.name in BESIDE_THE_REFRESH_WAIT]
    rest = [item for item in node if item not in podcert and item not in beside]
    ordered = iter(start + beside + refresh + rest)
    return [next(ordered) if item.get_closest_marker("node") else item for item in items]


# trylast: after support.plugin marked the tiers (and `-m` deselected).
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = node_order(items)
