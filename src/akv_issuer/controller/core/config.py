"""Settings of one controller process (filled from flags by the CLI)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from akv_issuer.keyvault import BudgetConfig

# The name this controller reports in Kubernetes events and writes status under.
COMPONENT = "azure-keyvault-issuer"
FIELD_MANAGER = COMPONENT
DEFAULT_NAMESPACE = "azure-keyvault-issuer-system"
LEADER_ELECTION_ID = "azure-keyvault-issuer-leader"
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace() -> str:
    """POD_NAMESPACE, else the in-cluster namespace file, else the kustomize default."""
    env = os.environ.get("POD_NAMESPACE", "").strip()
    if env:
        return env
    try:
        text = _SA_NAMESPACE_FILE.read_text().strip()
    except OSError:
        text = ""
    return text or DEFAULT_NAMESPACE


def default_identity() -> str:
    # Pod name (the hostname) plus a random suffix: a restarted pod with the
    # same name must not believe it still holds the lease of its predecessor.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ControllerConfig:
    cluster_resource_namespace: str = field(default_factory=default_namespace)
    kubeconfig: str | None = None
    concurrency: int = 4
    issuer_concurrency: int = 2
    retry_budget: dt.timedelta = dt.timedelta(hours=1)
    issuer_recheck_interval: dt.timedelta = dt.timedelta(minutes=5)
    ca_expiry_warning: dt.timedelta = dt.timedelta(days=30)
    field_manager: str = FIELD_MANAGER
    leader_elect: bool = False
    leader_election_namespace: str = field(default_factory=default_namespace)
    leader_election_id: str = LEADER_ELECTION_ID
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = field(default_factory=default_identity)
    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    crl_bind_address: str = ":8082"
    keyvault_timeout: float = 30.0
    # Each vault's throttling budget (keyvault.budget): on by default, 4,000 units
    # per 10 s unless overridden per vault (--keyvault-budget-units).
    keyvault_budget: BudgetConfig = field(default_factory=BudgetConfig)
    tls_ca_file: str | None = None
    # False only for a local Key Vault emulator (--no-verify-challenge-resource).
    verify_challenge_resource: bool = True
    kubernetes_csrs: bool = True
    # Publish signer-linked ClusterTrustBundles for issuers with
    # spec.clusterTrustBundles (--cluster-trust-bundles; needs Kubernetes 1.37).
    cluster_trust_bundles: bool = False
    # Sign PodCertificateRequests (Kubernetes >= 1.37) for issuers with
    # spec.podCertificates (--pod-certificates; off by default: a signer that
    # nothing approves is switched on deliberately, with its RBAC).
    pod_certificates: bool = False
    # May namespaced Issuers use the controller's own identity (auth unset) and
    # auth.workloadIdentity (--issuer-ambient-credentials)? ClusterIssuers always may.
    issuer_ambient_credentials: bool = True
    shutdown_timeout: float = 30.0
    # Objects per list page. The API server's cost per page is ~10 ms besides
    # its cost per object: 100,000 finished requests listed in pages of 250 /
    # 500 / 1,000 / 2,000 cost it 12.7 / 10.7 / 9.0 / 8.4 s of CPU. 1,000 keeps
    # two pages of the controller's memory (~5 MB each, one handled, one on its
    # way) under the 2,000's peak (VmHWM 104-109 against 122-132 MiB).
    list_chunk_size: int = 1000

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.retry_budget <= dt.timedelta(0):
            raise ValueError("retry budget must be positive")
        if self.issuer_recheck_interval <= dt.timedelta(0):
            raise ValueError("issuer re-check interval must be positive")
