"""The kustomize base config/default on a real node, as `kubectl apply -k` installs it.

An overlay (written to a temporary folder, as a user would keep one beside
their cluster config) points the base's image at ours with pullPolicy Never
and adds what the emulator needs (its CA, the Entra authority, no challenge
resource check). The base's own Namespace enforces `restricted`; the Pod
must become Ready there, read-only and non-root, and sign a Certificate.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Namespace

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_devcluster.certmanager import CertManager
from akv_devcluster.workloads import wait_ready
from akv_emulator.testing import EmulatorProcess
from support.node_install import (
    CA_CONFIGMAP,
    CA_MOUNT,
    REPO,
    NodeCA,
    emulator_ca_configmap,
    openssl_verify,
    request_certificate,
    sp_issuer,
    tool,
    wait_certificate_secret,
)

# The first test to ask for the image may build it (minutes when cold).
pytestmark = pytest.mark.timeout(900)

NAMESPACE = "azure-keyvault-issuer-system"
DEPLOYMENT = "azure-keyvault-issuer-controller-manager"


def _overlay(folder: Path, image: str, emulator: EmulatorProcess) -> Path:
    repository, tag = image.rsplit(":", 1)
    container_patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy",
         "value": "Never"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": f"--tls-ca-file={CA_MOUNT}/ca.crt"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": "--no-verify-challenge-resource"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "AZURE_AUTHORITY_HOST", "value": emulator.env.authority_host}},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
         "value": {"name": "emulator-ca", "mountPath": CA_MOUNT, "readOnly": True}},
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "emulator-ca", "configMap": {"name": CA_CONFIGMAP}}},
    ]  # fmt: skip
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "config" / "default", folder)],
        "images": [{"name": "azure-keyvault-issuer", "newName": repository, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "controller-manager"},
                "patch": yaml.safe_dump(container_patch),
            }
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


@pytest.fixture(scope="module")
def kustomize_install(
    node_cluster: DevCluster,
    node_kube: Client,
    node_emulator: EmulatorProcess,
    node_cert_manager: CertManager,
    controller_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    overlay = _overlay(
        tmp_path_factory.mktemp("kustomize") / "overlay", controller_image, node_emulator
    )
    kubectl = [tool(bins.KUBECTL), "--kubeconfig", str(node_cluster.kubeconfig_path)]
    applied = subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-k", str(overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    emulator_ca_configmap(node_kube, NAMESPACE, node_emulator)
    try:
        yield overlay
    finally:
        subprocess.run(
            [*kubectl, "delete", "--ignore-not-found", "--wait=false", "-n", NAMESPACE,
             "deployment,service,poddisruptionbudget,serviceaccount,role,rolebinding",
             "-l", "app.kubernetes.io/name=azure-keyvault-issuer"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        subprocess.run(
            [*kubectl, "delete", "--ignore-not-found", "clusterrole,clusterrolebinding",
             "-l", "app.kubernetes.io/name=azure-keyvault-issuer"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def test_kustomize_base_runs_restricted_and_signs(
    kustomize_install: Path,
    node_kube: Client,
    node_emulator: EmulatorProcess,
    node_ca: NodeCA,
    tmp_path: Path,
) -> None:
    namespace = node_kube.get(Namespace, NAMESPACE)
    assert namespace.metadata is not None
    assert (namespace.metadata.labels or {})["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_ready(node_kube, NAMESPACE, DEPLOYMENT, timeout=180)
    ref = sp_issuer(node_kube, NAMESPACE, node_emulator, node_ca.key_name, "kustomize-issuer")
    request_certificate(node_kube, NAMESPACE, ref, "kustomize-web")
    secret = wait_certificate_secret(node_kube, NAMESPACE, "kustomize-web")
    assert openssl_verify(secret, node_ca.pem_file, tmp_path).strip().endswith(": OK")
