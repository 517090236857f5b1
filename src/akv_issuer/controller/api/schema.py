"""The CRD schema, restated for the code that reads and writes it.

The CRD YAML under ``config/crd/bases/`` is the source of truth for the wire
format. ``SPEC_FIELDS`` and ``STATUS_FIELDS`` restate the parts of it the spec
parser reads and the status builder writes, and ``tests/unit/api`` checks that
the two agree, so a field cannot be added to one side only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from akv_issuer.controller.api.label_selector import OPERATORS
from akv_issuer.controller.api.names import ConditionStatus
from akv_issuer.controller.api.spec import POD_KEY_TYPES

SIGNATURE_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)

_HTTPS_VAULT_URL = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"
_OBJECT_NAME = r"^[0-9a-zA-Z-]{1,127}$"
_OBJECT_VERSION = r"^[0-9a-zA-Z]{0,64}$"
_GO_DURATION = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$"
_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_TENANT = r"^[0-9A-Za-z]([0-9A-Za-z.-]{0,251}[0-9A-Za-z])?$"
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DATA_KEY = r"^[-._a-zA-Z0-9]+$"
_EXTENSION_URL = r"^(https?|ldap)://[^\s]+$"
_HTTP_URL = r"^https?://[^\s]+$"
_AUDIENCE = r"^[^\s]+$"
_MEMBER_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MEMBER_NAME_HINT = "a pool member's name is a DNS label: lower-case letters, digits and '-'"
MAX_POOL_MEMBERS: Final = 16
ON_INVALID_MEMBER: Final = ("Fail", "Exclude")

# spec.podCertificates (issue 25)
_SPIFFE_TRUST_DOMAIN = r"^[a-z0-9._-]+$"
_DNS_TEMPLATE = r"^([a-z0-9.-]|\$\((POD_NAME|NAMESPACE|SERVICE_ACCOUNT)\))+$"
# A label value (apimachinery's IsValidLabelValue; at most 63 characters).
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Usages a Pod's (end-entity) certificate may have: no CA usages.
POD_USAGES: Final = (
    "digital signature",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "content commitment",
    "server auth",
    "client auth",
)

DURATION_HINT = "use Go duration syntax such as 2160h, 90m or 1h30m (units h, m, s, ms, us, ns)"


@dataclass(frozen=True)
class FieldDef:
    """What the CRD schema says about one field, restated for the parser.

    ``type`` is the OpenAPI type; arrays are written ``array[string]``.
    Constraints on array fields apply to their items, except ``max_items``.
    """

    type: str
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    default: Any = None
    hint: str | None = None


_SPEC_FIELDS: Final[Mapping[str, FieldDef]] = {
    "keyVaultBaseURL": FieldDef(
        "string",
        required=True,
        pattern=_HTTPS_VAULT_URL,
        hint="must be the vault's https URL, e.g. https://myvault.vault.azure.net/",
    ),
    "keyName": FieldDef(
        "string",
        required=True,
        pattern=_OBJECT_NAME,
        hint="Key Vault names are 1-127 letters, digits and dashes",
    ),
    "keyVersion": FieldDef(
        "string", pattern=_OBJECT_VERSION, hint="a Key Vault version is letters and digits"
    ),
    "caSecretName": FieldDef(
        "string", pattern=_OBJECT_NAME, hint="Key Vault names are 1-127 letters, digits and dashes"
    ),
    "caSecretVersion": FieldDef(
        "string", pattern=_OBJECT_VERSION, hint="a Key Vault version is letters and digits"
    ),
    "signatureAlgorithm": FieldDef("string", enum=SIGNATURE_ALGORITHMS),
    "auth": FieldDef("object"),
    "auth.workloadIdentity": FieldDef("object"),
    "auth.workloadIdentity.clientID": FieldDef(
        "string", required=True, pattern=_GUID, hint="must be a GUID (the identity's client ID)"
    ),
    "auth.workloadIdentity.tenantID": FieldDef(
        "string", pattern=_TENANT, hint="must be a tenant GUID or domain"
    ),
    "auth.clientSecret": FieldDef("object"),
    "auth.clientSecret.tenantID": FieldDef(
        "string", required=True, pattern=_TENANT, hint="must be a tenant GUID or domain"
    ),
    "auth.clientSecret.clientID": FieldDef(
        "string", required=True, pattern=_GUID, hint="must be a GUID (the application's client ID)"
    ),
    "auth.clientSecret.secretRef": FieldDef("object", required=True),
    "auth.clientSecret.secretRef.name": FieldDef(
        "string",
        required=True,
        pattern=_K8S_NAME,
        max_length=253,
        hint="must be a Kubernetes Secret name",
    ),
    "auth.clientSecret.secretRef.key": FieldDef(
        "string",
        required=True,
        pattern=_DATA_KEY,
        max_length=253,
        hint="must be a key of the Secret's data",
    ),
    # auth.serviceAccountRef: a token of a ServiceAccount in the issuer's own
    # namespace (TokenRequest), exchanged with Entra ID for clientID.
    "auth.serviceAccountRef": FieldDef("object"),
    "auth.serviceAccountRef.name": FieldDef(
        "string",
        required=True,
        pattern=_K8S_NAME,
        max_length=253,
        hint="must be a Kubernetes ServiceAccount name",
    ),
    "auth.serviceAccountRef.clientID": FieldDef(
        "string", required=True, pattern=_GUID, hint="must be a GUID (the identity's client ID)"
    ),
    "auth.serviceAccountRef.tenantID": FieldDef(
        "string", pattern=_TENANT, hint="must be a tenant GUID or domain"
    ),
    "auth.serviceAccountRef.audiences": FieldDef(
        "array[string]",
        pattern=_AUDIENCE,
        max_length=1024,
        max_items=10,
        hint="an audience is a non-empty string without spaces",
    ),
    "policy": FieldDef("object"),
    "policy.maxDuration": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    "policy.allowCA": FieldDef("boolean", default=False),
    "policy.maxPathLength": FieldDef("integer", minimum=0),
    "policy.backdate": FieldDef("string", pattern=_GO_DURATION, default="0s", hint=DURATION_HINT),
    "crlDistributionPoints": FieldDef(
        "array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10
    ),
    "ocspServers": FieldDef("array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10),
    "issuingCertificateURLs": FieldDef(
        "array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10
    ),
    "caRenewal": FieldDef("object"),
    "caRenewal.automatic": FieldDef("boolean", default=False),
    "caRenewal.renewBefore": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    "caRenewal.lifetime": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    "reissue": FieldDef("object"),
    "reissue.onCAChange": FieldDef("boolean", default=False),
    "reissue.perMinute": FieldDef("integer", minimum=1, default=10),
    "trustBundle": FieldDef("object"),
    "trustBundle.configMapName": FieldDef(
        "string",
        required=True,
        pattern=_K8S_NAME,
        max_length=253,
        hint="must be a Kubernetes ConfigMap name",
    ),
    "trustBundle.secretName": FieldDef(
        "string", pattern=_K8S_NAME, max_length=253, hint="must be a Kubernetes Secret name"
    ),
    "trustBundle.key": FieldDef(
        "string",
        pattern=_DATA_KEY,
        max_length=253,
        default="ca.crt",
        hint="must be a ConfigMap data key (letters, digits, '-', '_', '.')",
    ),
    "trustBundle.overlap": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    "crl": FieldDef("object"),
    "crl.enabled": FieldDef("boolean", default=False),
    "crl.validity": FieldDef("string", pattern=_GO_DURATION, default="24h", hint=DURATION_HINT),
    "crl.renewBefore": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    "crl.url": FieldDef(
        "string",
        pattern=_HTTP_URL,
        max_length=2048,
        hint="must be an http(s) URL, e.g. http://akv-crl.example.com/crl/issuer/ns/name.crl",
    ),
    # --- Managed HSM, sovereign clouds, certificate objects (issue 14 points 3-5) ---
    "auth.authorityHost": FieldDef(
        "string",
        pattern=_HTTPS_VAULT_URL,
        hint="must be the Entra ID authority's https URL, e.g. https://login.microsoftonline.us",
    ),
    # --- issue 24 (the key stays in the HSM) ---
    "allowExportableKey": FieldDef("boolean", default=False),
    "caSource": FieldDef("object"),
    "caSource.keyVaultSecret": FieldDef("object"),
    "caSource.keyVaultSecret.vaultBaseURL": FieldDef(
        "string",
        required=True,
        pattern=_HTTPS_VAULT_URL,
        hint="must be the vault's https URL, e.g. https://myvault.vault.azure.net/",
    ),
    "caSource.keyVaultSecret.name": FieldDef(
        "string",
        required=True,
        pattern=_OBJECT_NAME,
        hint="Key Vault names are 1-127 letters, digits and dashes",
    ),
    "caSource.keyVaultSecret.version": FieldDef(
        "string", pattern=_OBJECT_VERSION, hint="a Key Vault version is letters and digits"
    ),
    "caSource.keyVaultCertificate": FieldDef("object"),
    "caSource.keyVaultCertificate.vaultBaseURL": FieldDef(
        "string",
        pattern=_HTTPS_VAULT_URL,
        hint="must be the vault's https URL, e.g. https://myvault.vault.azure.net/",
    ),
    "caSource.keyVaultCertificate.name": FieldDef(
        "string",
        required=True,
        pattern=_OBJECT_NAME,
        hint="Key Vault names are 1-127 letters, digits and dashes",
    ),
    "caSource.keyVaultCertificate.version": FieldDef(
        "string", pattern=_OBJECT_VERSION, hint="a Key Vault version is letters and digits"
    ),
    "caSource.secret": FieldDef("object"),
    "caSource.secret.name": FieldDef(
        "string",
        required=True,
        pattern=_K8S_NAME,
        max_length=253,
        hint="must be a Kubernetes Secret name",
    ),
    "caSource.secret.key": FieldDef(
        "string",
        pattern=_DATA_KEY,
        max_length=253,
        default="ca.crt",
        hint="must be a key of the Secret's data",
    ),
    # --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---
    "clusterTrustBundles": FieldDef("object"),
    # A map of label key -> value; keys and values are checked by the parser
    # (spec_parser._parse_cluster_trust_bundles) as the API server checks labels.
    "clusterTrustBundles.labels": FieldDef("object"),
    "clusterTrustBundles.overlap": FieldDef("string", pattern=_GO_DURATION, hint=DURATION_HINT),
    # --- issue 25 (PodCertificateRequests): spec.podCertificates ---
    **{
        "podCertificates": FieldDef("object"),
        "podCertificates.namespaceSelector": FieldDef("object"),
        "podCertificates.namespaceSelector.matchLabels": FieldDef("object"),
        # A Kubernetes LabelSelector's requirements; a key's syntax, and that In
        # and NotIn need values and Exists and DoesNotExist take none, are the
        # parser's (spec_parser._parse_label_requirement) and a CEL rule's.
        "podCertificates.namespaceSelector.matchExpressions": FieldDef(
            "array[object]", max_items=20
        ),
        "podCertificates.namespaceSelector.matchExpressions.key": FieldDef(
            "string", required=True, max_length=317
        ),
        "podCertificates.namespaceSelector.matchExpressions.operator": FieldDef(
            "string", required=True, enum=OPERATORS
        ),
        "podCertificates.namespaceSelector.matchExpressions.values": FieldDef(
            "array[string]",
            pattern=_LABEL_VALUE,
            max_length=63,
            max_items=100,
            hint="must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or "
            "'.', beginning and ending with a letter or digit",
        ),
        "podCertificates.serviceAccounts": FieldDef(
            "array[string]",
            pattern=_K8S_NAME,
            max_length=253,
            max_items=100,
            hint="must be a Kubernetes ServiceAccount name",
        ),
        "podCertificates.spiffeTrustDomain": FieldDef(
            "string",
            pattern=_SPIFFE_TRUST_DOMAIN,
            max_length=255,
            hint="must be a SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'",
        ),
        "podCertificates.dnsNames": FieldDef(
            "array[string]",
            pattern=_DNS_TEMPLATE,
            max_length=253,
            max_items=10,
            hint="must be a DNS name of lowercase letters, digits, '-' and '.', with the "
            "placeholders $(POD_NAME), $(NAMESPACE), $(SERVICE_ACCOUNT)",
        ),
        "podCertificates.keyTypes": FieldDef("array[string]", enum=POD_KEY_TYPES, max_items=6),
        "podCertificates.usages": FieldDef("array[string]", enum=POD_USAGES, max_items=20),
        "podCertificates.maxLifetime": FieldDef(
            "string", pattern=_GO_DURATION, default="24h", hint=DURATION_HINT
        ),
        # 1 to 99; the parser refuses more (FieldDef has no maximum).
        "podCertificates.refreshBeforePercentage": FieldDef("integer", minimum=1),
    },
}


def _pool_fields() -> dict[str, FieldDef]:
    """``spec.pool`` (issue 26): the pool's own fields, and per member the fields of the
    issuer's own key (its vault, name, version, CA secret, caSource) under
    ``pool.members.``."""
    fields: dict[str, FieldDef] = {
        "pool": FieldDef("object"),
        "pool.primaryName": FieldDef(
            "string", pattern=_MEMBER_NAME, max_length=63, default="primary", hint=MEMBER_NAME_HINT
        ),
        "pool.onInvalidMember": FieldDef("string", enum=ON_INVALID_MEMBER, default="Fail"),
        "pool.retryAfter": FieldDef(
            "string", pattern=_GO_DURATION, default="30s", hint=DURATION_HINT
        ),
        "pool.members": FieldDef("array[object]", required=True, max_items=MAX_POOL_MEMBERS - 1),
        "pool.members.name": FieldDef(
            "string", required=True, pattern=_MEMBER_NAME, max_length=63, hint=MEMBER_NAME_HINT
        ),
    }
    for path in ("keyVaultBaseURL", "keyName", "keyVersion", "caSecretName", "caSecretVersion"):
        fields[f"pool.members.{path}"] = _SPEC_FIELDS[path]
    for path, definition in _SPEC_FIELDS.items():
        if path == "caSource" or path.startswith("caSource."):
            fields[f"pool.members.{path}"] = definition
    return fields


SPEC_FIELDS: Final[Mapping[str, FieldDef]] = {**_SPEC_FIELDS, **_pool_fields()}
"""Every field under ``spec`` (dotted path) the CRD defines and the parser reads."""

STATUS_FIELDS: Final[Mapping[str, FieldDef]] = {
    "caCertificate": FieldDef("string"),  # format: byte (base64 of the PEM)
    "keyID": FieldDef("string"),
    "keyVersion": FieldDef("string"),
    "signatureAlgorithm": FieldDef("string"),
    "caNotAfter": FieldDef("string"),  # format: date-time
    "keyAttestation": FieldDef("object"),
    "keyAttestation.keyID": FieldDef("string"),
    "keyAttestation.result": FieldDef("string", enum=("Checked", "Failed")),
    "keyAttestation.message": FieldDef("string"),
    "keyAttestation.formatVersion": FieldDef("string"),
    "keyAttestation.hsmPlatform": FieldDef("string"),
    "keyAttestation.privateKeyAttestationSHA256": FieldDef("string"),
    "keyAttestation.publicKeyAttestationSHA256": FieldDef("string"),
    "keyAttestation.certificates": FieldDef("integer"),
    "keyAttestation.rootCertificates": FieldDef("array[object]"),
    "keyAttestation.rootCertificates.subject": FieldDef("string"),
    "keyAttestation.rootCertificates.sha256": FieldDef("string"),
    "keyAttestation.checkTime": FieldDef("string"),  # format: date-time
    "members": FieldDef("array[object]"),
    "members.name": FieldDef("string"),
    "members.keyID": FieldDef("string"),
    "members.state": FieldDef("string", enum=("Ready", "Unavailable", "Invalid")),
    "members.reason": FieldDef("string"),
    "members.message": FieldDef("string"),
    "members.caNotAfter": FieldDef("string"),  # format: date-time
    "lastCheckTime": FieldDef("string"),  # format: date-time
    "conditions": FieldDef("array[object]"),
    "conditions.type": FieldDef("string", required=True),
    "conditions.status": FieldDef(
        "string", required=True, enum=tuple(str(s) for s in ConditionStatus)
    ),
    "conditions.reason": FieldDef("string"),
    "conditions.message": FieldDef("string"),
    "conditions.lastTransitionTime": FieldDef("string"),  # format: date-time
    "conditions.observedGeneration": FieldDef("integer"),  # format: int64
}
"""Every field under ``status`` the CRD defines and the controller writes."""
