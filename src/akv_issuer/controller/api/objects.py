"""The Kubernetes objects the controller reads and writes, as typed dicts.

Objects arrive as plain JSON dicts (``runtime/kubeapi.py``, the informers);
these ``TypedDict`` s name the fields the controller touches, with their JSON
types, so a misspelt field or a wrong type is a type error instead of an
``Any``. Every field is optional (``total=False``): the API server may leave
any of them out, and readers keep their defaults (``obj.get("spec") or {}``).
Fields the controller never reads are left out; they are still in the dict.

:func:`typed` is the one place a dict from the API becomes one of these (a
cast: the API server's schema validation is what guarantees the types).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, TypeVar, cast

T = TypeVar("T")


def typed(obj: Mapping[str, Any], kind: type[T]) -> T:
    """``obj``, a dict as the API server sent it, read as ``kind`` (a TypedDict below)."""
    return cast(T, obj)


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]


class HasMetadata(TypedDict, total=False):
    """Any object, as far as its metadata goes (every object below is one)."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


class ConditionFields(TypedDict, total=False):
    """One entry of ``status.conditions`` (``metav1.Condition`` and the CSR's)."""

    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    lastUpdateTime: str  # Kubernetes CSRs
    observedGeneration: int


# -- cert-manager CertificateRequests -----------------------------------------------


class IssuerRef(TypedDict, total=False):
    name: str
    kind: str
    group: str


class CertificateRequestSpec(TypedDict, total=False):
    request: str  # base64 of the PEM CSR
    issuerRef: IssuerRef
    duration: str  # a Go duration
    usages: list[str]
    isCA: bool
    # Set by cert-manager's webhook from the creating user's identity.
    username: str
    uid: str
    groups: list[str]


class CertificateRequestStatus(TypedDict, total=False):
    conditions: list[ConditionFields]
    certificate: str  # base64 of the PEM chain
    ca: str
    failureTime: str


class CertificateRequestObject(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: CertificateRequestSpec
    status: CertificateRequestStatus


# -- Kubernetes CertificateSigningRequests (certificates.k8s.io/v1) --------------------


class KubeCSRSpec(TypedDict, total=False):
    request: str  # base64 of the PEM CSR
    signerName: str
    expirationSeconds: int
    usages: list[str]
    # Set by the API server from the creating user's identity.
    username: str
    uid: str
    groups: list[str]


class KubeCSRStatus(TypedDict, total=False):
    conditions: list[ConditionFields]
    certificate: str  # base64 of the PEM chain


class KubeCSRObject(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: KubeCSRSpec
    status: KubeCSRStatus


# -- our Issuers and ClusterIssuers ----------------------------------------------------


class IssuerStatus(TypedDict, total=False):
    """``status`` as :func:`~.status.build_issuer_status` writes it (STATUS_FIELDS)."""

    conditions: list[ConditionFields]
    caCertificate: str  # base64 of the PEM
    keyID: str
    keyVersion: str
    signatureAlgorithm: str
    caNotAfter: str
    lastCheckTime: str
    keyAttestation: dict[str, Any]  # Managed HSM: the attestation as checked
    members: list[dict[str, Any]]  # spec.pool: each member's state (STATUS_FIELDS "members.*")


class IssuerObject(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    # Read only through parse_issuer_spec, which checks every field against
    # the CRD's schema (SPEC_FIELDS) and names a bad one.
    spec: dict[str, Any]
    status: IssuerStatus


# -- Kubernetes PodCertificateRequests (certificates.k8s.io/v1, Kubernetes 1.37) ----------


class PodCertificateRequestSpec(TypedDict, total=False):
    signerName: str
    podName: str
    podUID: str
    serviceAccountName: str
    serviceAccountUID: str
    nodeName: str
    nodeUID: str
    maxExpirationSeconds: int
    stubPKCS10Request: str  # base64 of the DER PKCS#10 the kubelet made
    unverifiedUserAnnotations: dict[str, str]


class PodCertificateRequestStatus(TypedDict, total=False):
    conditions: list[ConditionFields]
    certificateChain: str  # PEM: the leaf, then intermediates
    notBefore: str
    beginRefreshAt: str
    notAfter: str


class PodCertificateRequestObject(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodCertificateRequestSpec
    status: PodCertificateRequestStatus
