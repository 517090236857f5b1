"""The issuer's Kubernetes API, one concept per module.

- :mod:`.names`: group, kinds, plurals, lightkube resource classes, signer
  names, condition types and reasons;
- :mod:`.conditions`: the one :class:`Condition` view, :func:`find_condition`,
  :func:`make_condition` and the ``metav1.Time`` helpers
  :func:`format_time` / :func:`parse_time`;
- :mod:`.durations`: Go durations (``2160h``);
- :mod:`.schema`: the CRD schema restated (``SPEC_FIELDS``, ``STATUS_FIELDS``);
- :mod:`.spec`: the typed spec;
- :mod:`.spec_parser`: :func:`parse_issuer_spec`, every field checked;
- :mod:`.status`: :func:`build_issuer_status`, :func:`first_certificate`.

Everything public is re-exported here, so callers import from
``akv_issuer.controller.api`` and need not know the split.
"""

from akv_issuer.controller.api.conditions import (
    Condition,
    conditions_of,
    find_condition,
    format_time,
    make_condition,
    parse_time,
)
from akv_issuer.controller.api.durations import format_go_duration, parse_go_duration
from akv_issuer.controller.api.names import (
    API_VERSION,
    CERT_MANAGER_GROUP,
    CERT_MANAGER_VERSION,
    CERTIFICATE_REQUEST_KIND,
    CERTIFICATE_REQUEST_PLURAL,
    CLUSTER_ISSUER_KIND,
    CLUSTER_ISSUER_PLURAL,
    CONDITION_CA_RENEWAL_DUE,
    CONDITION_KEY_VERSION_PENDING,
    CONDITION_READY,
    CONDITION_REISSUING,
    GROUP,
    ISSUER_KIND,
    ISSUER_KINDS,
    ISSUER_PLURAL,
    KEY_VERSION_CURRENT_REASON,
    KEY_VERSION_PENDING_REASON,
    VERSION,
    Certificate,
    CertificateRequest,
    CertificateRequestCondition,
    CertificateRequestEvent,
    CertificateRequestReason,
    ClusterIssuer,
    ConditionStatus,
    Issuer,
    IssuerReason,
    KubeCertificateSigningRequest,
    PendingReason,
    signer_resource_name,
)
from akv_issuer.controller.api.schema import (
    SIGNATURE_ALGORITHMS,
    SPEC_FIELDS,
    STATUS_FIELDS,
    FieldDef,
)
from akv_issuer.controller.api.spec import (  # auth.serviceAccountRef
    ENTRA_TOKEN_EXCHANGE_AUDIENCE,
    AmbientAuth,
    AuthSpec,
    CARenewalSpec,
    CASource,
    ClientSecretAuth,
    CRLSpec,
    IssuerSpec,
    KeyVaultCertificateCA,
    KeyVaultSecretCA,
    KubernetesSecretCA,
    PolicySpec,
    ReissueSpec,
    SecretKeyRef,
    ServiceAccountAuth,
    SpecError,
    TrustBundleSpec,
    WorkloadIdentityAuth,
)
from akv_issuer.controller.api.spec_parser import MAX_BACKDATE, parse_issuer_spec
from akv_issuer.controller.api.status import build_issuer_status, first_certificate

__all__ = [
    "API_VERSION",
    "CERTIFICATE_REQUEST_KIND",
    "CERTIFICATE_REQUEST_PLURAL",
    "CERT_MANAGER_GROUP",
    "CERT_MANAGER_VERSION",
    "CLUSTER_ISSUER_KIND",
    "CLUSTER_ISSUER_PLURAL",
    "CONDITION_CA_RENEWAL_DUE",
    "CONDITION_KEY_VERSION_PENDING",
    "CONDITION_READY",
    "CONDITION_REISSUING",
    "ENTRA_TOKEN_EXCHANGE_AUDIENCE",
    "GROUP",
    "ISSUER_KIND",
    "ISSUER_KINDS",
    "ISSUER_PLURAL",
    "KEY_VERSION_CURRENT_REASON",
    "KEY_VERSION_PENDING_REASON",
    "MAX_BACKDATE",
    "SIGNATURE_ALGORITHMS",
    "SPEC_FIELDS",
    "STATUS_FIELDS",
    "VERSION",
    "AmbientAuth",
    "AuthSpec",
    "CARenewalSpec",
    "CASource",
    "CRLSpec",
    "Certificate",
    "CertificateRequest",
    "CertificateRequestCondition",
    "CertificateRequestEvent",
    "CertificateRequestReason",
    "ClientSecretAuth",
    "ClusterIssuer",
    "Condition",
    "ConditionStatus",
    "FieldDef",
    "Issuer",
    "IssuerReason",
    "IssuerSpec",
    "KeyVaultCertificateCA",
    "KeyVaultSecretCA",
    "KubeCertificateSigningRequest",
    "KubernetesSecretCA",
    "PendingReason",
    "PolicySpec",
    "ReissueSpec",
    "SecretKeyRef",
    "ServiceAccountAuth",
    "SpecError",
    "TrustBundleSpec",
    "WorkloadIdentityAuth",
    "build_issuer_status",
    "conditions_of",
    "find_condition",
    "first_certificate",
    "format_go_duration",
    "format_time",
    "make_condition",
    "parse_go_duration",
    "parse_issuer_spec",
    "parse_time",
    "signer_resource_name",
]
