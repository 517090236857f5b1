"""What the chart and kustomize tests on the node share: values, issuers, checks.

The controller runs as the chart's Pods on the node and reaches the emulator
at the host end of the node's link (its TLS certificate covers that IP); it
trusts the emulator's CA through ``controller.tlsCAFile`` and a ConfigMap
volume, and authenticates with a service principal secret (Entra ID played by
the same emulator, ``AZURE_AUTHORITY_HOST``). cert-manager's controller is a
host process and approves the requests (our chart's approver RBAC names its
ServiceAccount).
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod, Secret

from akv_devcluster import binaries as bins
from akv_devcluster.certmanager import Certificate, certificate_body
from akv_devcluster.helm import run as helm_run
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import API_VERSION, GROUP, Issuer

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "charts" / "azure-keyvault-issuer"
CA_MOUNT = "/etc/akv-emulator"
CA_CONFIGMAP = "akv-emulator-ca"
SP_SECRET = "keyvault-client-secret"
WAIT = 120.0


@dataclass(frozen=True)
class NodeCA:
    """A CA key in the emulator and its root certificate (PEM file)."""

    key_name: str
    pem_file: Path


def tool(binary: bins.GoBinary) -> str:
    path = bins.binary_path(binary)
    if not path.is_file():
        raise AssertionError(f"{binary.name} is not built at {path}; run `make binaries`")
    return str(path)


def chart_selector(release: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "azure-keyvault-issuer",
        "app.kubernetes.io/instance": release,
    }


def wait_until(check: Callable[[], Any], what: str, limit: float = WAIT) -> Any:
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        try:
            last = check()
        except ApiError as exc:
            last = exc.status.message
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what} (last: {last})")
        time.sleep(0.5)


def restricted_namespace(kube: Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.create(
        Namespace(
            metadata=ObjectMeta(
                name=name, labels={"pod-security.kubernetes.io/enforce": "restricted"}
            )
        )
    )
    return name


def emulator_ca_configmap(kube: Client, namespace: str, emulator: EmulatorProcess) -> None:
    kube.create(
        ConfigMap(
            metadata=ObjectMeta(name=CA_CONFIGMAP, namespace=namespace),
            data={"ca.crt": Path(emulator.env.ca_file).read_text()},
        )
    )


def chart_values(image: str, emulator: EmulatorProcess, **overrides: Any) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": 2,
        "controller": {
            "tlsCAFile": f"{CA_MOUNT}/ca.crt",
            # The emulator's challenge names its own address, not a vault domain.
            "verifyChallengeResource": False,
        },
        "extraEnv": [{"name": "AZURE_AUTHORITY_HOST", "value": emulator.env.authority_host}],
        "extraVolumes": [{"name": "emulator-ca", "configMap": {"name": CA_CONFIGMAP}}],
        "extraVolumeMounts": [{"name": "emulator-ca", "mountPath": CA_MOUNT, "readOnly": True}],
        # Quicker failover for the leader test than the 15 s default.
        "leaderElection": {"leaseDuration": "8s", "renewDeadline": "6s", "retryPeriod": "1s"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def helm(helm_bin: str, kubeconfig: Path, *args: str, values: dict[str, Any] | None = None) -> str:
    return helm_run(Path(helm_bin), kubeconfig, args, values, error=AssertionError)


def sp_issuer(
    kube: Client, namespace: str, emulator: EmulatorProcess, key_name: str, name: str
) -> dict[str, str]:
    """A Secret with the service principal's secret and an Issuer using it."""
    values = emulator.env.values
    try:
        kube.create(
            Secret(
                metadata=ObjectMeta(name=SP_SECRET, namespace=namespace),
                stringData={"clientSecret": values["AKV_EMULATOR_SP_CLIENT_SECRET"]},
            )
        )
    except ApiError as exc:
        if exc.status.code != 409:
            raise
    kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={
                "keyVaultBaseURL": emulator.env.vault_url,
                "keyName": key_name,
                "auth": {
                    "clientSecret": {
                        "tenantID": emulator.env.tenant_id,
                        "clientID": values["AKV_EMULATOR_SP_CLIENT_ID"],
                        "secretRef": {"name": SP_SECRET, "key": "clientSecret"},
                    }
                },
            },
        )
    )

    def ready() -> bool:
        issuer = kube.get(Issuer, name, namespace=namespace)
        conditions = (dict(issuer).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, f"Issuer {namespace}/{name} Ready")
    return {"group": GROUP, "kind": "Issuer", "name": name}


def request_certificate(
    kube: Client, namespace: str, issuer_ref: dict[str, str], name: str
) -> None:
    kube.create(certificate_body(namespace, name, issuer_ref))


def wait_certificate_secret(kube: Client, namespace: str, name: str) -> Secret:
    def ready() -> bool:
        cert = kube.get(Certificate, name, namespace=namespace)
        conditions = (dict(cert).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, f"Certificate {namespace}/{name} Ready")
    return kube.get(Secret, name, namespace=namespace)


def openssl_verify(secret: Secret, ca_pem: Path, workdir: Path) -> str:
    """openssl verify of the Secret's tls.crt against our CA and its ca.crt; the output."""
    data = secret.data or {}
    leaf = workdir / f"{secret.metadata.name}.crt"
    ca = workdir / f"{secret.metadata.name}-ca.crt"
    leaf.write_bytes(base64.b64decode(data["tls.crt"]))
    ca.write_bytes(base64.b64decode(data["ca.crt"]))
    assert ca.read_bytes().strip() == ca_pem.read_bytes().strip(), "ca.crt is not our CA"
    proc = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(ca),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def lease_holder(kube: Client, namespace: str, name: str = "azure-keyvault-issuer-leader") -> str:
    lease = kube.get(Lease, name, namespace=namespace)
    return (lease.spec.holderIdentity if lease.spec else None) or ""


def controller_pods(kube: Client, namespace: str, selector: dict[str, str]) -> list[Pod]:
    return [
        p
        for p in kube.list(Pod, namespace=namespace, labels=selector)
        if p.metadata.deletionTimestamp is None
    ]
