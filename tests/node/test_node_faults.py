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

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_devcluster.workloads import WorkloadError, wait_ready
from akv_emulator.testing import EmulatorProcess
from support.node_install import (
    CHART,
    chart_values,
    emulator_ca_configmap,
    helm,
    restricted_namespace,
    tool,
)

# The first test to ask for the image may build it (minutes when cold).
pytestmark = pytest.mark.timeout(900)


def _never_ready(
    cluster: DevCluster, kube: Client, namespace: str, release: str, values: dict[str, object]
) -> str:
    """Install the chart, expect its Deployment never to become ready, uninstall;
    the one-line error ``wait_ready`` gave."""
    helm(
        tool(bins.HELM), cluster.kubeconfig_path,
        "install", release, str(CHART), "--namespace", namespace, "--skip-crds",
        values=values,
    )  # fmt: skip
    deployment = f"{release}-azure-keyvault-issuer-controller-manager"
    try:
        with pytest.raises(WorkloadError) as excinfo:
            wait_ready(kube, namespace, deployment, timeout=120, grace=0)
    finally:
        subprocess.run(
            [tool(bins.HELM), "--kubeconfig", str(cluster.kubeconfig_path), "uninstall",
             release, "--namespace", namespace],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    return str(excinfo.value)


def test_image_not_loaded_is_err_image_never_pull(
    node_cluster: DevCluster, node_kube: Client, node_emulator: EmulatorProcess
) -> None:
    namespace = restricted_namespace(node_kube, "never-pull")
    emulator_ca_configmap(node_kube, namespace, node_emulator)
    image = "localhost/azure-keyvault-issuer:not-loaded"
    values = chart_values(image, node_emulator, replicaCount=1)
    message = _never_ready(node_cluster, node_kube, namespace, "never-pull", values)
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
    message = _never_ready(node_cluster, node_kube, namespace, "pss", values)
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


def test_up_node_names_the_missing_debian_packages(tmp_path: Path) -> None:
    # A machine without the node's packages: nothing of them on PATH.
    empty = tmp_path / "bin"
    empty.mkdir()
    cli = Path(sys.executable).parent / "akv-devcluster"
    proc = subprocess.run(
        [sys.executable, str(cli), "up", "--node", "--no-build", "--dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": str(empty)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "akv-devcluster: error: missing Debian packages for the node: containerd, iproute2, "
        "iptables, mount, runc, util-linux (run hack/install-node-deps.sh)"
    ]
    assert not (tmp_path / "c").exists()
