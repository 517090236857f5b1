"""The AKS path on a real node: cert-manager from its own chart, Azure Workload Identity.

Everything runs as Pods on the session's node, installed the way users do:

- cert-manager's controller, webhook and cainjector from cert-manager's Helm
  chart (the pinned module's deploy/charts), images of the binaries built from
  Go modules; the API server calls the webhook through its Service, so an
  invalid Certificate is refused with the webhook's own message;
- the Azure Workload Identity webhook from its module's chart;
- our chart with AKS-style values (workloadIdentity.clientID, the pod label),
  no client secret anywhere: the webhook injects AZURE_CLIENT_ID,
  AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST and the
  projected token; the emulator, playing Entra ID, trusts the cluster's
  service-account issuer by discovery and exchanges that token, so an Issuer
  becomes Ready and cert-manager (in Pods) turns a Certificate into a Secret
  whose chain verifies. Without the federated credential the Issuer is
  Forbidden with Entra's AADSTS70021.

The host-process cert-manager of the other node tests is stopped first (two
controllers would both issue) and restarted afterwards; this module uninstalls
what it installed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import Namespace, Pod, Secret

from akv_devcluster import DevCluster, goimages
from akv_devcluster import binaries as bins
from akv_devcluster.certmanager import (
    Certificate,
    certificate_body,
    running_cert_manager,
    start_cert_manager,
    stop_cert_manager,
)
from akv_devcluster.certmanager_chart import (
    NAMESPACE as CERT_MANAGER_NAMESPACE,
)
from akv_devcluster.certmanager_chart import (
    install_cert_manager,
    uninstall_cert_manager,
)
from akv_devcluster.workloadidentity import (
    INJECTED_ENV,
    TOKEN_AUDIENCE,
    TOKEN_VOLUME,
    install_workload_identity,
    service_account_issuer,
)
from akv_devcluster.workloadidentity import NAMESPACE as WI_NAMESPACE
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import API_VERSION, GROUP, Issuer
from support.node_install import (
    CA_MOUNT,
    CHART,
    NodeCA,
    chart_selector,
    controller_pods,
    emulator_ca_configmap,
    helm,
    openssl_verify,
    request_certificate,
    restricted_namespace,
    tool,
    wait_certificate_secret,
    wait_until,
)

SERVICE_ACCOUNT = "akv-issuer-wi"


@dataclass
class Stack:
    kube: Client
    cluster: DevCluster
    emulator: EmulatorProcess
    image: str
    ca: NodeCA
    issuer: str  # the cluster's service-account issuer URL
    workdir: Path


@pytest.fixture(scope="module")
def stack(
    node_cluster: DevCluster,
    node_kube: Client,
    node_emulator: EmulatorProcess,
    controller_image: str,
    node_ca: NodeCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    # Two cert-manager controllers would both issue: the other node tests' host
    # process pauses while this module's Pods run, and comes back afterwards.
    host_process = running_cert_manager(node_cluster) is not None
    stop_cert_manager(node_cluster)
    env = node_emulator.env
    try:
        install_cert_manager(node_cluster, timeout=240)
        install_workload_identity(
            node_cluster, tenant_id=env.tenant_id, authority_host=env.authority_host, timeout=180
        )
        issuer = service_account_issuer(node_cluster)
        # Entra ID's way: only the issuer URL; the emulator reads the discovery
        # document and JWKS from the API server (anonymous, TLS verified).
        node_emulator.admin.trust_issuer_by_discovery(
            issuer,
            discovery_url=node_cluster.server_url,
            ca_pem=node_cluster.ca_file.read_text(),
        )
        yield Stack(
            node_kube, node_cluster, node_emulator, controller_image, node_ca, issuer,
            tmp_path_factory.mktemp("wi"),
        )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            uninstall_cert_manager(node_cluster)
        for name in ("azure-wi-webhook-mutating-webhook-configuration",):
            with contextlib.suppress(ApiError):
                node_kube.delete(MutatingWebhookConfiguration, name)
        with contextlib.suppress(ApiError):
            node_kube.delete(Namespace, WI_NAMESPACE)
        if host_process:
            start_cert_manager(node_cluster, build=False)


def _images(kube: Client, namespace: str) -> set[str]:
    return {c.image for p in kube.list(Pod, namespace=namespace) for c in p.spec.containers}


def test_cert_manager_runs_from_its_chart_and_its_webhook_validates(stack: Stack) -> None:
    assert _images(stack.kube, CERT_MANAGER_NAMESPACE) == {
        goimages.CERT_MANAGER_CONTROLLER.ref,
        goimages.CERT_MANAGER_WEBHOOK.ref,
        goimages.CERT_MANAGER_CAINJECTOR.ref,
    }
    short_rsa = {"algorithm": "RSA", "size": 100}
    bad = certificate_body("default", "bad", {"name": "any"}, duration="10m", privateKey=short_rsa)
    with pytest.raises(ApiError) as err:
        stack.kube.create(bad)
    message = err.value.status.message or ""
    assert 'admission webhook "webhook.cert-manager.io" denied the request' in message
    assert "spec.privateKey.size: Invalid value: 100: must be between 2048 and 8192" in message
    assert "certificate duration must be greater than 1h0m0s" in message


def _install_controller(stack: Stack, release: str, namespace: str, client_id: str) -> Pod:
    """Our chart, AKS-style: only the client ID; no secret, no authority, no tenant."""
    emulator_ca_configmap(stack.kube, namespace, stack.emulator)
    values: dict[str, Any] = {
        "image": dict(
            zip(("repository", "tag"), stack.image.rsplit(":", 1), strict=True), pullPolicy="Never"
        ),
        "serviceAccount": {"name": SERVICE_ACCOUNT},
        "workloadIdentity": {"enabled": True, "clientID": client_id},
        "controller": {"tlsCAFile": f"{CA_MOUNT}/ca.crt", "verifyChallengeResource": False},
        "extraVolumes": [{"name": "emulator-ca", "configMap": {"name": "akv-emulator-ca"}}],
        "extraVolumeMounts": [{"name": "emulator-ca", "mountPath": CA_MOUNT, "readOnly": True}],
    }
    helm(
        tool(bins.HELM), stack.cluster.kubeconfig_path,
        "install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
        values=values,
    )  # fmt: skip
    pods = controller_pods(stack.kube, namespace, chart_selector(release))
    assert len(pods) == 1
    return pods[0]


def _uninstall(stack: Stack, release: str, namespace: str) -> None:
    helm(tool(bins.HELM), stack.cluster.kubeconfig_path, "uninstall", release, "-n", namespace)
    stack.kube.delete(Namespace, namespace)


def _ambient_issuer(stack: Stack, namespace: str, name: str) -> None:
    """An Issuer with no spec.auth: the controller's own (injected) identity."""
    stack.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={"keyVaultBaseURL": stack.emulator.env.vault_url, "keyName": stack.ca.key_name},
        )
    )


def _ready(stack: Stack, namespace: str, name: str) -> dict[str, Any]:
    issuer = stack.kube.get(Issuer, name, namespace=namespace)
    conditions = (dict(issuer).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def test_controller_pod_gets_its_key_vault_token_through_the_federated_token(
    stack: Stack,
) -> None:
    client_id = str(uuid.uuid4())
    release = "akv-wi"
    namespace = restricted_namespace(stack.kube, release)
    # A federated credential naming the cluster's issuer and the chart's
    # ServiceAccount; the identity has no secret at all.
    identity = stack.emulator.admin.set_identity(
        client_id,
        federated_subject=f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
        federated_issuer=stack.issuer,
    )
    assert identity["has_secret"] is False
    try:
        pod = _install_controller(stack, release, namespace, client_id)
        container = pod.spec.containers[0]
        env = {e.name: e.value for e in container.env or [] if e.name in INJECTED_ENV}
        assert env == {
            "AZURE_CLIENT_ID": client_id,
            "AZURE_TENANT_ID": stack.emulator.env.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": f"/var/run/secrets/azure/tokens/{TOKEN_VOLUME}",
            "AZURE_AUTHORITY_HOST": stack.emulator.env.authority_host.rstrip("/") + "/",
        }
        assert not [e for e in container.env or [] if "SECRET" in e.name]
        projected = [v for v in pod.spec.volumes or [] if v.name == TOKEN_VOLUME]
        assert len(projected) == 1
        token = projected[0].projected.sources[0].serviceAccountToken
        assert token.audience == TOKEN_AUDIENCE
        assert token.path == TOKEN_VOLUME
        # No Secret in the namespace but Helm's release record: the chart was
        # given no client secret.
        secrets = [
            s.metadata.name
            for s in stack.kube.list(Secret, namespace=namespace)
            if s.type != "helm.sh/release.v1"
        ]
        assert secrets == []

        tokens_before = stack.emulator.admin.counters().get("token", 0)
        _ambient_issuer(stack, namespace, "wi-issuer")
        wait_until(
            lambda: _ready(stack, namespace, "wi-issuer").get("status") == "True",
            f"Issuer {namespace}/wi-issuer Ready",
            limit=180,
        )
        assert stack.emulator.admin.counters().get("token", 0) > tokens_before

        # cert-manager (its Pods) approves and stores; our Pod signs with Key Vault.
        issuer_ref = {"group": GROUP, "kind": "Issuer", "name": "wi-issuer"}
        request_certificate(stack.kube, namespace, issuer_ref, "wi-cert")
        secret = wait_certificate_secret(stack.kube, namespace, "wi-cert")
        assert "OK" in openssl_verify(secret, stack.ca.pem_file, stack.workdir)
        cert = stack.kube.get(Certificate, "wi-cert", namespace=namespace)
        assert dict(cert)["status"]["conditions"][0]["reason"] == "Ready"
    finally:
        with contextlib.suppress(Exception):
            _uninstall(stack, release, namespace)


def test_without_the_federated_credential_the_issuer_is_forbidden(stack: Stack) -> None:
    client_id = str(uuid.uuid4())
    release = "akv-wi-nofed"
    # The identity exists but trusts no token of this cluster.
    stack.emulator.admin.set_identity(client_id)
    namespace = restricted_namespace(stack.kube, release)
    try:
        _install_controller(stack, release, namespace, client_id)
        _ambient_issuer(stack, namespace, "wi-issuer")
        seen: dict[str, Any] = {}

        def forbidden() -> bool:
            seen.clear()
            seen.update(_ready(stack, namespace, "wi-issuer"))
            return seen.get("reason") == "Forbidden"

        try:
            wait_until(forbidden, f"Issuer {namespace}/wi-issuer Forbidden", limit=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; Ready condition: {seen}") from None
        found = seen
        assert found["status"] == "False"
        assert "AADSTS70021" in found["message"]
        assert f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}" in found["message"]
    finally:
        with contextlib.suppress(Exception):
            _uninstall(stack, release, namespace)
