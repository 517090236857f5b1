"""The Helm chart on a real node, the way users install it.

One release (2 replicas, the image of our Dockerfile with pullPolicy Never) in
a namespace enforcing the `restricted` Pod Security Standard, shared by the
tests of this module in order: Pods Ready through their probes, read-only and
non-root as seen from inside; one Lease holder; an Issuer Ready against the
emulator and a Certificate whose chain openssl verifies; the leader's Pod
deleted and the next Certificate issued by the other; `helm upgrade` rolling
the Pods while requests keep coming; `helm uninstall` removing what
docs/install.md says and keeping the CRDs and Issuers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Secret, Service, ServiceAccount
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding, Role

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_devcluster.certmanager import CertManager
from akv_devcluster.workloads import wait_ready
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import Issuer
from support.node_install import (
    CHART,
    NodeCA,
    chart_selector,
    chart_values,
    controller_pods,
    emulator_ca_configmap,
    helm,
    lease_holder,
    openssl_verify,
    request_certificate,
    restricted_namespace,
    sp_issuer,
    tool,
    wait_certificate_secret,
    wait_until,
)

# The first test to ask for the image may build it (minutes when cold).
pytestmark = pytest.mark.timeout(900)

RELEASE = "akv-node"
DEPLOYMENT = f"{RELEASE}-azure-keyvault-issuer-controller-manager"


@dataclass
class Release:
    kube: Client
    cluster: DevCluster
    emulator: EmulatorProcess
    image: str
    ca: NodeCA
    namespace: str
    helm: str
    workdir: Path
    issuer_ref: dict[str, str] = field(default_factory=dict)

    def install_args(self, verb: str) -> list[str]:
        return [verb, RELEASE, str(CHART), "--namespace", self.namespace]

    def values(self, **overrides: object) -> dict[str, object]:
        return chart_values(self.image, self.emulator, **overrides)

    def pods(self) -> list[Pod]:
        return controller_pods(self.kube, self.namespace, chart_selector(RELEASE))

    def exec(self, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        kubectl = tool(bins.KUBECTL)
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.cluster.kubeconfig_path), "-n", self.namespace,
             "exec", pod, "--", *command],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def release(
    node_cluster: DevCluster,
    node_kube: Client,
    node_emulator: EmulatorProcess,
    node_cert_manager: CertManager,
    controller_image: str,
    node_ca: NodeCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    namespace = restricted_namespace(node_kube, "chart")
    emulator_ca_configmap(node_kube, namespace, node_emulator)
    rel = Release(
        node_kube, node_cluster, node_emulator, controller_image, node_ca, namespace,
        tool(bins.HELM), tmp_path_factory.mktemp("chart"),
    )  # fmt: skip
    helm(rel.helm, node_cluster.kubeconfig_path, *rel.install_args("install"), values=rel.values())
    try:
        yield rel
    finally:
        subprocess.run(
            [rel.helm, "--kubeconfig", str(node_cluster.kubeconfig_path), "uninstall", RELEASE,
             "--namespace", namespace, "--ignore-not-found"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def test_pods_ready_through_probes_read_only_and_non_root(release: Release) -> None:
    wait_ready(release.kube, release.namespace, DEPLOYMENT, timeout=180)
    pods = release.pods()
    assert len(pods) == 2
    for pod in pods:
        assert pod.status is not None
        assert pod.status.containerStatuses
        assert all(s.ready for s in pod.status.containerStatuses)
        # What the user sees from inside the running container.
        whoami = release.exec(pod.metadata.name, "python3", "-c", "import os; print(os.getuid())")
        assert whoami.stdout.strip() == "65532", whoami.stderr
        write = release.exec(pod.metadata.name, "python3", "-c", "open('/opt/venv/x', 'w')")
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr


def test_one_replica_holds_the_lease(release: Release) -> None:
    names = {p.metadata.name for p in release.pods()}
    holder = wait_until(lambda: lease_holder(release.kube, release.namespace), "a Lease holder")
    assert holder.split("_")[0] in names


def test_issuer_ready_and_certificate_chain_verifies(release: Release) -> None:
    release.issuer_ref = sp_issuer(
        release.kube, release.namespace, release.emulator, release.ca.key_name, "node-issuer"
    )
    request_certificate(release.kube, release.namespace, release.issuer_ref, "web")
    secret = wait_certificate_secret(release.kube, release.namespace, "web")
    out = openssl_verify(secret, release.ca.pem_file, release.workdir)
    assert out.strip().endswith(": OK")


def test_leader_pod_deleted_the_other_replica_takes_over(release: Release) -> None:
    assert release.issuer_ref, "needs the Issuer of the previous test"
    before = lease_holder(release.kube, release.namespace).split("_")[0]
    release.kube.delete(Pod, before, namespace=release.namespace, grace_period=0)

    def new_holder() -> str:
        holder = lease_holder(release.kube, release.namespace).split("_")[0]
        return holder if holder and holder != before else ""

    after = wait_until(new_holder, "another replica to take the Lease", limit=60)
    assert after != before
    request_certificate(release.kube, release.namespace, release.issuer_ref, "after-failover")
    secret = wait_certificate_secret(release.kube, release.namespace, "after-failover")
    openssl_verify(secret, release.ca.pem_file, release.workdir)


def test_helm_upgrade_rolls_the_pods_without_losing_a_request(release: Release) -> None:
    assert release.issuer_ref, "needs the Issuer of an earlier test"
    wait_ready(release.kube, release.namespace, DEPLOYMENT, timeout=120)
    old = {p.metadata.name for p in release.pods()}
    names = [f"during-upgrade-{i}" for i in range(4)]
    request_certificate(release.kube, release.namespace, release.issuer_ref, names[0])
    request_certificate(release.kube, release.namespace, release.issuer_ref, names[1])
    helm(
        release.helm, release.cluster.kubeconfig_path, *release.install_args("upgrade"),
        values=release.values(controller={"logLevel": "debug"}),
    )  # fmt: skip
    request_certificate(release.kube, release.namespace, release.issuer_ref, names[2])
    wait_ready(release.kube, release.namespace, DEPLOYMENT, timeout=180)
    request_certificate(release.kube, release.namespace, release.issuer_ref, names[3])
    new = {p.metadata.name for p in release.pods()}
    assert not old & new, f"the Pods were not replaced: {old} -> {new}"
    deployment = release.kube.get(Deployment, DEPLOYMENT, namespace=release.namespace)
    args = deployment.spec.template.spec.containers[0].args or []
    assert "--log-level=debug" in args
    for name in names:
        secret = wait_certificate_secret(release.kube, release.namespace, name)
        openssl_verify(secret, release.ca.pem_file, release.workdir)


def test_helm_uninstall_removes_the_release_and_keeps_crds_and_issuers(release: Release) -> None:
    subprocess.run(
        [release.helm, "--kubeconfig", str(release.cluster.kubeconfig_path), "uninstall", RELEASE,
         "--namespace", release.namespace, "--wait"],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    gone: list[tuple[type, str, str | None]] = [
        (Deployment, DEPLOYMENT, release.namespace),
        (ServiceAccount, DEPLOYMENT, release.namespace),
        (Service, f"{DEPLOYMENT}-metrics", release.namespace),
        (PodDisruptionBudget, DEPLOYMENT, release.namespace),
    ]
    for kind, name, namespace in gone:
        with pytest.raises(ApiError) as excinfo:
            release.kube.get(kind, name, namespace=namespace)
        assert excinfo.value.status.code == 404, (kind, name)
    labels = {"app.kubernetes.io/instance": RELEASE}
    assert not list(release.kube.list(Role, namespace=release.namespace, labels=labels))
    assert not list(release.kube.list(ClusterRole, labels=labels))
    assert not list(release.kube.list(ClusterRoleBinding, labels=labels))
    wait_until(lambda: not release.pods(), "the controller Pods to go")
    # docs/install.md: the CRDs, and so every Issuer, stay; issued Secrets too.
    assert release.kube.get(Issuer, "node-issuer", namespace=release.namespace)
    assert release.kube.get(Secret, "web", namespace=release.namespace)
    assert "release: not found" in subprocess.run(
        [release.helm, "--kubeconfig", str(release.cluster.kubeconfig_path), "status", RELEASE,
         "--namespace", release.namespace],
        capture_output=True, text=True, timeout=60, check=False,
    ).stderr  # fmt: skip
