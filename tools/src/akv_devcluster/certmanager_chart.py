"""cert-manager as Pods on the dev cluster's node, installed with its own Helm chart.

``install_cert_manager(cluster)`` is what a user does on AKS, on the node of
an ``akv-devcluster up --node`` cluster: ``helm upgrade --install`` of the chart
inside the pinned cert-manager module (``deploy/charts/cert-manager`` in the
module zip, never copied), with the controller, webhook and cainjector images
made from the binaries built from Go modules (``akv_devcluster.goimages``,
``pullPolicy: Never``). The chart's defaults stay as they are (leader
election, the webhook's dynamic serving CA, cainjector injecting that CA into
the webhook configurations) except:

- ``crds.enabled`` stays false: ``DevCluster.start`` already installed the
  same CRDs from the same module;
- ``startupapicheck.enabled: false``: it runs cmctl, which is not built here;
  instead this function waits for the three Deployments and then for the
  webhook to answer the API server (a dry-run Certificate is admitted), which
  is what startupapicheck checks.

The API server calls the webhook through its Service (``cert-manager-webhook``
in ``cert-manager``), as in any cluster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightkube import Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from akv_devcluster import binaries as bins
from akv_devcluster import goimages
from akv_devcluster.certmanager import certificate_body, chart_dir
from akv_devcluster.cluster import DevCluster, DevClusterError
from akv_devcluster.helm import run as helm_run
from akv_devcluster.workloads import WorkloadError, wait_ready

NAMESPACE = "cert-manager"
RELEASE = "cert-manager"
DEPLOYMENTS = ("cert-manager", "cert-manager-webhook", "cert-manager-cainjector")
IMAGES = (
    goimages.CERT_MANAGER_CONTROLLER,
    goimages.CERT_MANAGER_WEBHOOK,
    goimages.CERT_MANAGER_CAINJECTOR,
)
FIELD_MANAGER = "akv-devcluster"


class CertManagerChartError(DevClusterError):
    """cert-manager could not be installed or did not become ready; one-line message."""


def _image(image: goimages.GoImage) -> dict[str, str]:
    return {"repository": image.repository, "tag": image.tag, "pullPolicy": "Never"}


def chart_values() -> dict[str, Any]:
    """The values: local images, no CRDs (already installed), no startupapicheck."""
    return {
        "crds": {"enabled": False},
        "image": _image(goimages.CERT_MANAGER_CONTROLLER),
        "webhook": {"image": _image(goimages.CERT_MANAGER_WEBHOOK)},
        "cainjector": {"image": _image(goimages.CERT_MANAGER_CAINJECTOR)},
        "startupapicheck": {"enabled": False},
    }


def helm_binary(*, build: bool) -> Path:
    if build:
        return bins.ensure_binary(bins.HELM)
    if bins._is_fresh(bins.HELM):
        return bins.binary_path(bins.HELM)
    raise CertManagerChartError("helm is not built yet; run `make binaries`")


def run_helm(helm: Path, cluster: DevCluster, args: list[str], values: dict[str, Any]) -> str:
    """Run helm against the cluster with values; its stdout, or one-line error."""
    return helm_run(helm, cluster.kubeconfig_path, args, values, error=CertManagerChartError)


def adopt_existing(helm: Path, cluster: DevCluster) -> list[str]:
    """Mark objects of the chart that exist without Helm's ownership as the release's.

    ``certmanager.start_cert_manager`` (the controller as a host process)
    applies the chart's ServiceAccount and RBAC itself; Helm refuses to install
    over objects it does not own, and adopts those carrying its release
    labels. Returns the adopted objects as kind/name.
    """
    rendered = run_helm(
        helm,
        cluster,
        ["template", RELEASE, str(chart_dir()), "--namespace", NAMESPACE],
        chart_values(),
    )
    ownership = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": NAMESPACE,
            },
        }
    }
    adopted: list[str] = []
    client = Client(
        config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager=FIELD_MANAGER
    )
    try:
        for obj in codecs.load_all_yaml(rendered):
            if obj is None or obj.metadata is None or obj.metadata.name is None:
                continue
            kind: Any = type(obj)
            # The chart names the namespace of every namespaced object it renders.
            namespace = obj.metadata.namespace
            try:
                found = client.get(kind, obj.metadata.name, namespace=namespace)
            except ApiError as exc:
                if exc.status.code == 404:
                    continue
                raise
            annotations = (found.metadata.annotations if found.metadata else None) or {}
            if annotations.get("meta.helm.sh/release-name") == RELEASE:
                continue
            client.patch(
                kind, obj.metadata.name, ownership, namespace=namespace, patch_type=PatchType.MERGE
            )
            adopted.append(f"{obj.kind}/{obj.metadata.name}")
    except ApiError as exc:
        raise CertManagerChartError(f"adopting existing objects: {exc.status.message}") from exc
    finally:
        client.close()
    return adopted


def webhook_admits(client: Client, namespace: str = "default") -> bool:
    """True once the API server gets an answer from cert-manager's webhook: a
    valid Certificate is admitted in a dry run (nothing is stored)."""
    body = certificate_body(namespace, "cert-manager-webhook-probe", {"name": "probe"})
    try:
        client.create(body, dry_run=True)
    except ApiError:
        return False
    return True


def install_cert_manager(
    cluster: DevCluster, *, build: bool = False, timeout: float = 180.0
) -> None:
    """Install (or upgrade) cert-manager with its chart on the cluster's node.

    Returns once the controller, webhook and cainjector Deployments are Ready
    and the API server reaches the webhook through its Service; raises
    CertManagerChartError with the reason otherwise.
    """
    if cluster.node_network is None:
        raise CertManagerChartError(
            f"the dev cluster in {cluster.directory} has no node (start it with `up --node`)"
        )
    try:
        goimages.load_images(cluster, list(IMAGES), build=build)
    except Exception as exc:  # BinariesError, NodeError, ImageError: all one-line
        raise CertManagerChartError(f"cert-manager images: {exc}") from exc
    helm = helm_binary(build=build)
    adopt_existing(helm, cluster)
    run_helm(
        helm,
        cluster,
        [
            "upgrade",
            "--install",
            RELEASE,
            str(chart_dir()),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
        ],
        chart_values(),
    )
    client = Client(
        config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager=FIELD_MANAGER
    )
    try:
        deadline = time.monotonic() + timeout
        for name in DEPLOYMENTS:
            try:
                wait_ready(client, NAMESPACE, name, timeout=max(deadline - time.monotonic(), 1))
            except WorkloadError as exc:
                raise CertManagerChartError(str(exc)) from exc
        # The cainjector must first copy the webhook's CA into the webhook
        # configurations; until then the API server cannot verify the webhook.
        while not webhook_admits(client):
            if time.monotonic() > deadline:
                raise CertManagerChartError(
                    f"cert-manager's webhook did not answer the API server within {timeout:.0f}s"
                )
            time.sleep(1)
    finally:
        client.close()


def uninstall_cert_manager(cluster: DevCluster, *, build: bool = False) -> None:
    run_helm(
        helm_binary(build=build),
        cluster,
        ["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"],
        {},
    )
