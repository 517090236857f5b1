"""Names of the issuer's API: group, kinds, plurals, signer names, reasons.

Kept apart from the parsing and status code because every other module (the
reconcilers, the CLI, the tests, the deploy checks) needs these strings and
nothing else: they are the vocabulary users see in manifests, RBAC rules,
``kubectl get`` columns and alerts, so renaming one is an API change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from akv_issuer.runtime.kubeapi import ApiResource

GROUP: Final = "azure-keyvault-issuer.gonicus.de"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ISSUER_KIND: Final = "Issuer"
CLUSTER_ISSUER_KIND: Final = "ClusterIssuer"
ISSUER_PLURAL: Final = "issuers"
CLUSTER_ISSUER_PLURAL: Final = "clusterissuers"
ISSUER_KINDS: Final = frozenset({ISSUER_KIND, CLUSTER_ISSUER_KIND})

CERT_MANAGER_GROUP: Final = "cert-manager.io"
CERT_MANAGER_VERSION: Final = "v1"
CERTIFICATE_REQUEST_KIND: Final = "CertificateRequest"
CERTIFICATE_REQUEST_PLURAL: Final = "certificaterequests"

# lightkube classes. Generic resources behave like dicts (``obj["spec"]``);
# each has a ``.Status`` subresource class for status patches.
Issuer = create_namespaced_resource(GROUP, VERSION, ISSUER_KIND, ISSUER_PLURAL)
ClusterIssuer = create_global_resource(GROUP, VERSION, CLUSTER_ISSUER_KIND, CLUSTER_ISSUER_PLURAL)
# lightkube-models only covers Kubernetes' own APIs, not cert-manager's.
CertificateRequest = create_namespaced_resource(
    CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, CERTIFICATE_REQUEST_KIND, CERTIFICATE_REQUEST_PLURAL
)
# Read (and their status patched) only to re-issue after a CA change (spec.reissue).
Certificate = create_namespaced_resource(
    CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, "Certificate", "certificates"
)


# Kubernetes' own CSRs, as a generic resource so that objects arrive as plain
# dicts like our other resources (the informer and handlers expect those).
KubeCertificateSigningRequest = create_global_resource(
    "certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests"
)

KUBE_CSR_GROUP: Final = "certificates.k8s.io"
KUBE_CSR_PLURAL: Final = "certificatesigningrequests"

# Where the watched kinds live, for the hot path's own requests
# (runtime/kubeapi.py: lists, watches, the request kinds' reads and status writes).
ISSUERS: Final = ApiResource(GROUP, VERSION, ISSUER_PLURAL, namespaced=True)
CLUSTER_ISSUERS: Final = ApiResource(GROUP, VERSION, CLUSTER_ISSUER_PLURAL, namespaced=False)
CERTIFICATE_REQUESTS: Final = ApiResource(
    CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, CERTIFICATE_REQUEST_PLURAL, namespaced=True
)
KUBE_CSRS: Final = ApiResource(KUBE_CSR_GROUP, "v1", KUBE_CSR_PLURAL, namespaced=False)
# PodCertificateRequests (certificates.k8s.io/v1 since Kubernetes 1.37), and the
# Namespaces whose labels spec.podCertificates.namespaceSelector matches.
POD_CERTIFICATE_REQUESTS: Final = ApiResource(
    KUBE_CSR_GROUP, "v1", "podcertificaterequests", namespaced=True
)
NAMESPACES: Final = ApiResource("", "v1", "namespaces", namespaced=False)


def signer_resource_name(kind: str, name: str, namespace: str | None = None) -> str:
    """The ``signers`` resourceName cert-manager's approver checks for one issuer.

    ``issuers.<group>/<namespace>.<name>`` or ``clusterissuers.<group>/<name>``.
    """
    if kind == ISSUER_KIND:
        if not namespace:
            raise ValueError("an Issuer's signer name needs its namespace")
        return f"{ISSUER_PLURAL}.{GROUP}/{namespace}.{name}"
    if kind == CLUSTER_ISSUER_KIND:
        return f"{CLUSTER_ISSUER_PLURAL}.{GROUP}/{name}"
    raise ValueError(f"unknown issuer kind {kind!r}; expected one of {sorted(ISSUER_KINDS)}")


# --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---

# certificates.k8s.io/v1 ClusterTrustBundle (GA in Kubernetes 1.37; older API
# servers do not serve v1), generic so that objects are plain dicts.
ClusterTrustBundle = create_global_resource(
    KUBE_CSR_GROUP, "v1", "ClusterTrustBundle", "clustertrustbundles"
)
# The one bundle an opted-in issuer publishes is named
# ``<signer name with '/' as ':'>:<suffix>``, as the API requires of a bundle
# linked to a signer.
CLUSTER_TRUST_BUNDLE_SUFFIX: Final = "trust-anchors"


def cluster_trust_bundle_name(signer_name: str) -> str:
    """The name of the issuer's signer-linked ClusterTrustBundle: the signer
    name with ``/`` turned into ``:``, then ``:`` and :data:`CLUSTER_TRUST_BUNDLE_SUFFIX`."""
    return f"{signer_name.replace('/', ':')}:{CLUSTER_TRUST_BUNDLE_SUFFIX}"


# Conditions and reasons

CONDITION_READY: Final = "Ready"
# With keyVersion unset: True while the key has a version newer than the one
# signing, for which no CA certificate is stored yet (the issuer stays Ready).
CONDITION_KEY_VERSION_PENDING: Final = "KeyVersionPending"
KEY_VERSION_PENDING_REASON: Final = "NoCAForNewKeyVersion"
KEY_VERSION_CURRENT_REASON: Final = "CAMatchesLatestKeyVersion"
# True while the CA certificate is in its renewal window (spec.caRenewal) and was
# not renewed: an intermediate, automatic renewal off, or a renewal that failed.
CONDITION_CA_RENEWAL_DUE: Final = "CARenewalDue"
# True while Certificates issued by a previous CA are being re-issued (spec.reissue).
CONDITION_REISSUING: Final = "Reissuing"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class IssuerReason(StrEnum):
    """Reasons of an Issuer's / ClusterIssuer's ``Ready`` condition.

    docs/api.md explains each one to users; keep the two in step.
    """

    CHECKED = "Checked"
    """Ready=True: key and CA certificate were read and agree."""
    CHECKING = "Checking"
    """Ready=Unknown: seen, first check not finished yet."""
    KEY_VAULT_UNREACHABLE = "KeyVaultUnreachable"
    """Network error, timeout or 5xx from Key Vault or the token endpoint."""
    THROTTLED = "Throttled"
    """Key Vault answered 429 for longer than the check could wait."""
    FORBIDDEN = "Forbidden"
    """Authentication failed or the identity lacks keys get/sign or secrets get."""
    KEY_NOT_FOUND = "KeyNotFound"
    KEY_DISABLED = "KeyDisabled"
    """The key (version) is disabled, not yet valid (nbf) or expired (exp)."""
    KEY_NOT_USABLE = "KeyNotUsable"
    """Wrong key type, ``sign`` not in key_ops, or algorithm does not fit the key."""
    CA_SECRET_NOT_FOUND = "CASecretNotFound"  # noqa: S105 -- a reason, not a password
    CA_INVALID = "CAInvalid"
    """The secret holds no parsable certificate, or it is not a CA."""
    CA_KEY_MISMATCH = "CAKeyMismatch"
    CA_EXPIRED = "CAExpired"
    CA_NOT_YET_VALID = "CANotYetValid"
    AUTH_SECRET_NOT_FOUND = "AuthSecretNotFound"  # noqa: S105 -- a reason, not a password
    """The clientSecret Secret or its key is missing in the namespace it is read from."""
    AUTH_SECRET_FORBIDDEN = "AuthSecretForbidden"  # noqa: S105 -- a reason, not a password
    """The controller's RBAC does not let it read the clientSecret Secret (403): the
    message names the Secret, its namespace and the chart value that grants it
    (rbac.secretNamespaces, rbac.clusterWideSecrets or
    rbac.clusterResourceNamespaceSecrets). Rechecked no sooner than every 2 minutes."""
    CA_SECRET_FORBIDDEN = "CASecretForbidden"  # noqa: S105 -- a reason, not a password
    """The same for the Kubernetes Secret of caSource.secret."""
    INVALID_SPEC = "InvalidSpec"
    # Tenant identities (auth.serviceAccountRef, --issuer-ambient-credentials).
    SERVICE_ACCOUNT_TOKEN_FAILED = "ServiceAccountTokenFailed"  # noqa: S105 -- a reason
    """auth.serviceAccountRef: no token for the ServiceAccount (it does not exist in the
    issuer's namespace, or the controller may not create tokens for it there)."""
    AMBIENT_CREDENTIALS_NOT_ALLOWED = "AmbientCredentialsNotAllowed"
    """A namespaced Issuer uses the controller's own identity (no auth, or
    auth.workloadIdentity) while --issuer-ambient-credentials is off."""
    # --- issue 14 (CA certificate sources) ---
    CA_CERTIFICATE_NOT_FOUND = "CACertificateNotFound"
    """spec.caSource.keyVaultCertificate names no certificate object (or version)."""
    # --- issue 17 (reading Azure's errors right) ---
    CA_SECRET_DISABLED = "CASecretDisabled"  # noqa: S105 -- a reason, not a password
    """The Key Vault secret holding the CA certificate is disabled (403 SecretDisabled)."""
    KEY_VAULT_NETWORK_DENIED = "KeyVaultNetworkDenied"
    """The vault's network rules (firewall) refuse the controller's address
    (403 ForbiddenByFirewall)."""
    KEY_VAULT_API_VERSION_UNSUPPORTED = "KeyVaultAPIVersionUnsupported"
    """The vault does not support the Key Vault API version the controller uses
    (400 BadParameter; set AKV_KEYVAULT_API_VERSION to one it supports)."""
    # --- issue 22 (no lost errors) ---
    KUBERNETES_API_ERROR = "KubernetesAPIError"
    """The Kubernetes API failed reading the CA or auth Secret (an error other than
    404 or 403; the message carries the API's status). Transient."""
    # --- issue 24 (the key stays in the HSM) ---
    KEY_EXPORTABLE = "KeyExportable"
    """The key is exportable or has a release policy (secure key release), so it can
    leave Key Vault; refused unless spec.allowExportableKey."""
    KEY_ATTESTATION_FAILED = "KeyAttestationFailed"
    """Managed HSM: the key's attestation could not be fetched, or does not show this
    key version, its public key, not exportable and no release policy; refused unless
    spec.allowExportableKey."""


class CertificateRequestCondition(StrEnum):
    READY = "Ready"
    INVALID_REQUEST = "InvalidRequest"
    APPROVED = "Approved"
    DENIED = "Denied"


class CertificateRequestReason(StrEnum):
    """Reasons of a CertificateRequest's ``Ready`` condition (cert-manager's set)."""

    PENDING = "Pending"
    FAILED = "Failed"
    ISSUED = "Issued"
    DENIED = "Denied"


class PendingReason(StrEnum):
    """Why a request stays ``Ready=False/Pending``; used in messages and events."""

    ISSUER_NOT_FOUND = "IssuerNotFound"
    ISSUER_NOT_READY = "IssuerNotReady"
    RETRYABLE_ERROR = "RetryableError"


class CertificateRequestEvent(StrEnum):
    """Event reasons on CertificateRequests (issuer-lib's vocabulary)."""

    ISSUED = "Issued"
    RETRYABLE_ERROR = "RetryableError"
    PERMANENT_ERROR = "PermanentError"
    WAITING_FOR_ISSUER_EXIST = "WaitingForIssuerExist"
    WAITING_FOR_ISSUER_READY = "WaitingForIssuerReady"
