"""Faults a user meets on a node, each reported as one clear line.

- the image was never loaded into the node (`pullPolicy: Never`):
  ErrImageNeverPull with the image name, not a `helm --wait` timeout;
- values that break the `restricted` Pod Security Standard: the ReplicaSet's
  FailedCreate with the violated rules, not Pods that never appear;
- a cluster directory the node would hide: `akv-devcluster up --node` exits 1
  with the reason before starting anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lightkube import Client
from node_install import (
    CHART,
    chart_values,
    emulator_ca_configmap,
    helm,
    restricted_namespace,
    tool,
)

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_devcluster.workloads import WorkloadError, wait_ready
from akv_emulator.testing import EmulatorProcess

# The first test to ask for the image may build it (minutes when cold).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _install(cluster: DevCluster, namespace: str, release: str, values: dict[str, object]) -> str:
    helm(
        tool(bins.HELM), cluster.kubeconfig_path,
        "install", release, str(CHART), "--namespace", namespace, "--skip-crds",
        values=values,
    )  # fmt: skip
    return f"{release}-azure-keyvault-issuer-controller-manager"


def _uninstall(cluster: DevCluster, namespace: str, release: str) -> None:
    subprocess.run(
        [tool(bins.HELM), "--kubeconfig", str(cluster.kubeconfig_path), "uninstall", release,
         "--namespace", namespace],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip


def test_image_not_loaded_is_err_image_never_pull(
    node_cluster: DevCluster, node_kube: Client, node_emulator: EmulatorProcess
) -> None:
    namespace = restricted_namespace(node_kube, "never-pull")
    emulator_ca_configmap(node_kube, namespace, node_emulator)
    image = "localhost/azure-keyvault-issuer:not-loaded"
    values = chart_values(image, node_emulator, replicaCount=1)
    deployment = _install(node_cluster, namespace, "never-pull", values)
    try:
        with pytest.raises(WorkloadError) as excinfo:
            wait_ready(node_kube, namespace, deployment, timeout=120, grace=0)
    finally:
        _uninstall(node_cluster, namespace, "never-pull")
    message = str(excinfo.value)
    assert "ErrImageNeverPull" in message
    assert image in message
    assert "\n" not in message


def test_pod_security_violation_is_one_clear_line(
    node_cluster: DevCluster, node_kube: Client, node_emulator: EmulatorProcess
) -> None:
    namespace = restricted_namespace(node_kube, "pss")
    values = chart_values(
        "localhost/azure-keyvault-issuer:dev",
        node_emulator,
        replicaCount=1,
        securityContext={"allowPrivilegeEscalation": True, "readOnlyRootFilesystem": True},
    )
    deployment = _install(node_cluster, namespace, "pss", values)
    try:
        with pytest.raises(WorkloadError) as excinfo:
            wait_ready(node_kube, namespace, deployment, timeout=120, grace=0)
    finally:
        _uninstall(node_cluster, namespace, "pss")
    message = str(excinfo.value)
    assert "FailedCreate" in message
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "allowPrivilegeEscalation != false" in message
    assert "\n" not in message


def test_up_node_refuses_a_directory_the_node_would_hide(tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "akv-devcluster"
    proc = subprocess.run(
        [str(cli), "up", "--node", "--no-build", "--dir", "/run/akv-devcluster-test-hidden"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "akv-devcluster: error: the cluster directory /run/akv-devcluster-test-hidden is under "
        "/run, which the node hides behind its own tmpfs; choose another --dir"
    ]
    assert not Path("/run/akv-devcluster-test-hidden").exists()
