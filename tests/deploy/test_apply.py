"""The chart (default and non-default values) and the kustomize base, applied
with `kubectl apply --dry-run=server` to the real API server of the devcluster.

The server validates every object against its real schema (built-in kinds,
our CRDs, and prometheus-operator's ServiceMonitor CRD, read from the
prometheus-operator Go module at a pinned version the way cert-manager's CRDs
are) and applies its defaulting, which the comparisons below rely on.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from akv_devcluster import DevCluster
from akv_devcluster.binaries import download_module
from support.deploy import (
    NAMESPACE,
    RELEASE,
    Doc,
    docs,
    helm_template,
    identities,
    kubectl,
    kustomize_default,
    one,
    run,
)

# The ServiceMonitor CRD users get from kube-prometheus-stack / prometheus-operator.
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
SERVICE_MONITOR_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"

MakeNamespace = Callable[[], str]


def _kubectl(
    devcluster: DevCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run([kubectl(), "--kubeconfig", str(devcluster.kubeconfig_path), *args], stdin=stdin)


def _dry_run(devcluster: DevCluster, manifests: str) -> list[Doc]:
    """Apply with server dry-run; return the objects as the server would store them."""
    result = _kubectl(
        devcluster, "apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=manifests
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    items: list[Doc] = out["items"] if out.get("kind") == "List" else [out]
    return items


@pytest.fixture
def make_namespace(devcluster: DevCluster) -> Iterator[MakeNamespace]:
    created: list[str] = []

    def make() -> str:
        name = f"deploy-{secrets.token_hex(4)}"
        result = _kubectl(devcluster, "create", "namespace", name)
        assert result.returncode == 0, result.stderr
        created.append(name)
        return name

    yield make
    for name in created:
        _kubectl(devcluster, "delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def system_namespace(devcluster: DevCluster) -> str:
    # The kustomize base's own namespace; a dry run does not create it, and
    # its namespaced objects need it. Left in place (nothing runs in it).
    result = _kubectl(devcluster, "create", "namespace", NAMESPACE)
    assert result.returncode == 0 or "AlreadyExists" in result.stderr, result.stderr
    return NAMESPACE


@pytest.fixture(scope="module")
def service_monitor_crd(devcluster: DevCluster) -> str:
    info = download_module(PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION)
    path = Path(info["Dir"]) / SERVICE_MONITOR_CRD
    (name,) = devcluster.install_crds([path])
    return name


def test_default_chart_with_crds_passes_server_validation(
    devcluster: DevCluster, make_namespace: MakeNamespace
) -> None:
    namespace = make_namespace()
    manifests = helm_template(namespace=namespace, include_crds=True)
    stored = _dry_run(devcluster, manifests)
    assert identities(stored) == identities(docs(manifests))


def test_non_default_chart_passes_server_validation(
    devcluster: DevCluster, make_namespace: MakeNamespace, service_monitor_crd: str
) -> None:
    namespace, secrets_ns, lease_ns = make_namespace(), make_namespace(), make_namespace()
    values: dict[str, Any] = {
        "replicaCount": 2,
        "fullnameOverride": "akv",
        "image": {
            "repository": "myregistry.azurecr.io/azure-keyvault-issuer",
            "digest": "sha256:" + "ab" * 32,
        },
        "workloadIdentity": {
            "clientID": "11111111-2222-3333-4444-555555555555",
            "tenantID": "66666666-7777-8888-9999-000000000000",
        },
        "controller": {
            "clusterResourceNamespace": secrets_ns,
            "concurrency": 8,
            "tlsCAFile": "/etc/akv-ca/ca.pem",
            "logFormat": "json",
        },
        "leaderElection": {"namespace": lease_ns, "id": "akv-leader"},
        "metrics": {
            "port": 9402,
            "service": {"port": 9402},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        },
        "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1},
        "rbac": {"clusterWideSecrets": False, "secretNamespaces": [namespace]},
        "approver": {
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "cert-manager-approver-policy",
                    "namespace": "cert-manager",
                }
            ]
        },
        "extraVolumes": [{"name": "akv-ca", "configMap": {"name": "akv-ca"}}],
        "extraVolumeMounts": [{"name": "akv-ca", "mountPath": "/etc/akv-ca", "readOnly": True}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "azure-keyvault-issuer"}
                },
            }
        ],
    }
    manifests = helm_template(values, namespace=namespace)
    stored = _dry_run(devcluster, manifests)
    assert identities(stored) == identities(docs(manifests))
    assert one(stored, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(stored, "Role")["metadata"]["namespace"] == lease_ns


def test_service_monitor_crd_really_validates(
    devcluster: DevCluster, make_namespace: MakeNamespace, service_monitor_crd: str
) -> None:
    # Proof that the check above is a schema check: a broken ServiceMonitor is refused.
    namespace = make_namespace()
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    monitor = one(docs(helm_template(values, namespace=namespace)), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scheme"] = "gopher"
    result = _kubectl(
        devcluster, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(monitor)
    )
    assert result.returncode != 0
    assert "scheme" in result.stderr


def test_kustomize_base_passes_server_validation(
    devcluster: DevCluster, system_namespace: str
) -> None:
    manifests = kustomize_default()
    stored = _dry_run(devcluster, manifests)
    assert identities(stored) == identities(docs(manifests))


def test_chart_and_kustomize_pods_are_the_same_after_server_defaulting(
    devcluster: DevCluster, system_namespace: str
) -> None:
    # Same release name and namespace as the kustomize base: only labels and
    # the spelling of the (semantically equal, see test_chart.py) args differ.
    chart = one(
        _dry_run(devcluster, helm_template(namespace=NAMESPACE, release=RELEASE)), "Deployment"
    )
    base = one(_dry_run(devcluster, kustomize_default()), "Deployment")

    def pod_spec(deployment: Doc) -> Doc:
        spec: Doc = json.loads(json.dumps(deployment["spec"]["template"]["spec"]))
        for container in spec["containers"]:
            container.pop("args")
        return spec

    assert pod_spec(chart) == pod_spec(base)
    for field in ("replicas", "strategy", "revisionHistoryLimit", "progressDeadlineSeconds"):
        assert chart["spec"][field] == base["spec"][field], field
