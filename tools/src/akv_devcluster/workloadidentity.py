"""The Azure Workload Identity mutating webhook on the dev cluster's node (the AKS path).

On AKS the webhook injects, into every Pod labelled
``azure.workload.identity/use: "true"``, the variables ``AZURE_CLIENT_ID``
(from its ServiceAccount's ``azure.workload.identity/client-id``
annotation), ``AZURE_TENANT_ID``, ``AZURE_AUTHORITY_HOST``,
``AZURE_FEDERATED_TOKEN_FILE`` and a projected ServiceAccount token with the
audience ``api://AzureADTokenExchange``; the Azure SDK in the Pod exchanges
that token with Entra ID, which trusts the cluster's OIDC issuer.

``install_workload_identity(cluster, tenant_id=..., authority_host=...)`` does
the same here: the webhook built from its Go module (``hack/azure-workload-identity``,
image from ``goimages``), deployed from the chart inside that module
(``manifest_staging/charts/workload-identity-webhook``, rendered by ``helm
template``, never copied). The authority host the webhook injects comes from
its Azure environment; to point it at the emulator instead of
login.microsoftonline.com the webhook runs with ``AZURE_ENVIRONMENT=AzureStackCloud``
and ``AZURE_ENVIRONMENT_FILEPATH`` naming an environment file (a ConfigMap)
whose ``activeDirectoryEndpoint`` is the emulator: upstream's own mechanism for
clouds it does not know. The emulator (Entra ID) trusts the cluster's
service-account issuer (``service_account_issuer``) by discovery
(``AdminClient.trust_issuer_by_discovery``), as a federated credential on Azure
does with an AKS cluster's OIDC issuer URL.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import (
    ConfigMapVolumeSource,
    Container,
    EnvVar,
    PodSpec,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod

from akv_devcluster import binaries as bins
from akv_devcluster import goimages
from akv_devcluster.certmanager_chart import helm_binary
from akv_devcluster.cluster import DevCluster, DevClusterError
from akv_devcluster.helm import template as helm_template
from akv_devcluster.workloads import WorkloadError, wait_ready

NAMESPACE = "azure-workload-identity-system"
RELEASE = "workload-identity-webhook"
DEPLOYMENT = "azure-wi-webhook-controller-manager"
ENVIRONMENT_CONFIGMAP = "azure-wi-webhook-environment"
ENVIRONMENT_MOUNT = "/etc/azure-environment"
FIELD_MANAGER = "akv-devcluster"
# What the webhook injects into a labelled Pod's containers.
INJECTED_ENV = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)
TOKEN_VOLUME = "azure-identity-token"  # noqa: S105 - a volume name
TOKEN_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience


class WorkloadIdentityError(DevClusterError):
    """The webhook could not be installed or does not answer; one-line message."""


def chart_dir() -> Path:
    """The webhook's chart inside the pinned module (downloaded by the wrapper
    module, whose go.sum pins its hash: the checksum database has no entry)."""
    out = bins._run_go(
        ["mod", "download", "-json", bins.WORKLOAD_IDENTITY_MODULE],
        bins.WORKLOAD_IDENTITY_WEBHOOK.source_dir,
        what=f"go mod download {bins.WORKLOAD_IDENTITY_MODULE}",
    )
    info = json.loads(out)
    chart = Path(info["Dir"]) / "manifest_staging" / "charts" / "workload-identity-webhook"
    if not (chart / "Chart.yaml").is_file():
        raise WorkloadIdentityError(f"the workload identity chart is not at {chart}")
    return chart


def chart_values(tenant_id: str) -> list[str]:
    image = goimages.WORKLOAD_IDENTITY_WEBHOOK
    return [
        f"image.repository={image.repository}",
        f"image.release={image.tag}",
        "image.pullPolicy=Never",
        f"azureTenantID={tenant_id}",
        "azureEnvironment=AzureStackCloud",
        "replicaCount=1",
        "priorityClassName=",
        # The chart's 30Mi limit is upstream's image; leave room on a busy node.
        "resources.limits.memory=128Mi",
    ]


def render(helm: Path, tenant_id: str) -> list[Any]:
    return helm_template(
        helm,
        RELEASE,
        chart_dir(),
        NAMESPACE,
        sets=chart_values(tenant_id),
        error=WorkloadIdentityError,
    )


def point_at_authority(objects: list[Any]) -> None:
    """Give the webhook's container the environment file (AzureStackCloud)."""
    for obj in objects:
        if obj.kind == "Deployment" and obj.metadata.name == DEPLOYMENT:
            spec = obj.spec.template.spec
            spec.volumes = [
                *(spec.volumes or []),
                Volume(
                    name="azure-environment",
                    configMap=ConfigMapVolumeSource(name=ENVIRONMENT_CONFIGMAP),
                ),
            ]
            for container in spec.containers:
                container.env = [
                    *(container.env or []),
                    EnvVar(
                        name="AZURE_ENVIRONMENT_FILEPATH",
                        value=f"{ENVIRONMENT_MOUNT}/environment.json",
                    ),
                ]
                container.volumeMounts = [
                    *(container.volumeMounts or []),
                    VolumeMount(
                        name="azure-environment", mountPath=ENVIRONMENT_MOUNT, readOnly=True
                    ),
                ]
            return
    raise WorkloadIdentityError(f"the chart rendered no Deployment {DEPLOYMENT}")


def environment_file(authority_host: str) -> str:
    return json.dumps(
        {
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": authority_host.rstrip("/") + "/",
        }
    )


def injected(client: Client, namespace: str, service_account: str) -> dict[str, str]:
    """The env the webhook injects into a labelled Pod of service_account (a dry
    run: nothing is stored); empty when the webhook did not mutate it."""
    pod = Pod(
        metadata=ObjectMeta(
            generateName="azure-wi-probe-",
            namespace=namespace,
            labels={"azure.workload.identity/use": "true"},
        ),
        spec=PodSpec(
            serviceAccountName=service_account,
            containers=[Container(name="probe", image=goimages.WORKLOAD_IDENTITY_WEBHOOK.ref)],
        ),
    )
    created = client.create(pod, dry_run=True)
    env = (created.spec.containers[0].env if created.spec else None) or []
    return {e.name: e.value or "" for e in env if e.name in INJECTED_ENV}


def install_workload_identity(
    cluster: DevCluster,
    *,
    tenant_id: str,
    authority_host: str,
    build: bool = False,
    timeout: float = 120.0,
) -> None:
    """Install the webhook on the cluster's node; return once it mutates Pods."""
    if cluster.node_network is None:
        raise WorkloadIdentityError(
            f"the dev cluster in {cluster.directory} has no node (start it with `up --node`)"
        )
    try:
        goimages.load_images(cluster, [goimages.WORKLOAD_IDENTITY_WEBHOOK], build=build)
    except Exception as exc:  # BinariesError, NodeError, ImageError: all one-line
        raise WorkloadIdentityError(f"workload identity image: {exc}") from exc
    objects = render(helm_binary(build=build), tenant_id)
    point_at_authority(objects)
    client = Client(
        config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager=FIELD_MANAGER
    )
    try:
        client.apply(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
        client.apply(
            ConfigMap(
                metadata=ObjectMeta(name=ENVIRONMENT_CONFIGMAP, namespace=NAMESPACE),
                data={"environment.json": environment_file(authority_host)},
            )
        )
        for obj in objects:
            client.apply(obj, force=True)
        wait_ready(client, NAMESPACE, DEPLOYMENT, timeout=timeout)
        # The webhook writes its own serving certificate and CA bundle (its
        # cert rotator); until then the API server cannot call it.
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                if injected(client, NAMESPACE, "default").get("AZURE_TENANT_ID") == tenant_id:
                    return
                last = "the Pod was not mutated"
            except ApiError as exc:
                last = exc.status.message or "API error"
            if time.monotonic() > deadline:
                raise WorkloadIdentityError(
                    f"the workload identity webhook does not mutate Pods after {timeout:.0f}s: "
                    f"{last}"
                )
            time.sleep(1)
    except WorkloadError as exc:
        raise WorkloadIdentityError(str(exc)) from exc
    except ApiError as exc:
        raise WorkloadIdentityError(f"installing the webhook: {exc.status.message}") from exc
    finally:
        client.close()


def service_account_issuer(cluster: DevCluster) -> str:
    """The cluster's service-account issuer URL, from its discovery document."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    with urllib.request.urlopen(  # noqa: S310 - the dev cluster's https URL
        cluster.server_url + "/.well-known/openid-configuration", context=context, timeout=10
    ) as response:
        return str(json.loads(response.read())["issuer"])
