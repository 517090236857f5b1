"""The typed spec of an Issuer / ClusterIssuer, with defaults applied
(:class:`IssuerSpec` and its parts), and :class:`SpecError`.

The controller gets it only from :func:`.spec_parser.parse_issuer_spec`, which
checks every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Final

from akv_issuer.controller.api.label_selector import LabelRequirement


class SpecError(ValueError):
    """The spec cannot be used. The issuer goes ``Ready=False/InvalidSpec``.

    ``field`` is the offending path below ``spec`` ("" for the whole spec),
    ``reason`` a one-line human-readable message.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        where = f"spec.{field}" if field else "spec"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class AmbientAuth:
    """The controller's own identity (workload identity of its ServiceAccount on AKS,
    or whatever DefaultAzureCredential finds)."""


@dataclass(frozen=True)
class WorkloadIdentityAuth:
    """Federate the controller's ServiceAccount token with another managed identity
    or app registration. ``tenant_id`` None: the tenant from AZURE_TENANT_ID."""

    client_id: str
    tenant_id: str | None = None


@dataclass(frozen=True)
class SecretKeyRef:
    """A key in a Secret. The namespace is implied (see ``ClientSecretAuth``)."""

    name: str
    key: str


@dataclass(frozen=True)
class ClientSecretAuth:
    """App registration with a client secret held in a Kubernetes Secret: read from
    the Issuer's namespace, or for a ClusterIssuer from the cluster resource
    namespace."""

    tenant_id: str
    client_id: str
    secret_ref: SecretKeyRef


# The audience Entra ID expects in a federated token (the default of every
# federated identity credential).
ENTRA_TOKEN_EXCHANGE_AUDIENCE: Final = "api://AzureADTokenExchange"  # noqa: S105 -- an audience


@dataclass(frozen=True)
class ServiceAccountAuth:
    """Exchange a token of a ServiceAccount for an Entra ID identity.

    The ServiceAccount is looked up by ``name`` in the Issuer's own namespace
    (a ClusterIssuer's: the cluster resource namespace); the spec never names a
    namespace, so a tenant can only use identities that trust a ServiceAccount
    of its own namespace (subject ``system:serviceaccount:<ns>:<name>``).
    ``tenant_id`` None: the tenant from AZURE_TENANT_ID.
    """

    name: str
    client_id: str
    tenant_id: str | None = None
    audiences: tuple[str, ...] = (ENTRA_TOKEN_EXCHANGE_AUDIENCE,)


AuthSpec = AmbientAuth | WorkloadIdentityAuth | ClientSecretAuth | ServiceAccountAuth


@dataclass(frozen=True)
class PolicySpec:
    """What the issuer will sign. ``max_duration`` None: no cap besides the CA's
    own NotAfter; ``max_path_length`` None: no pathLenConstraint is imposed
    beyond the CA's."""

    max_duration: timedelta | None = None
    allow_ca: bool = False
    max_path_length: int | None = None
    backdate: timedelta = timedelta(0)


@dataclass(frozen=True)
class CARenewalSpec:
    """Renewal of the CA certificate before it expires.

    ``automatic``: a self-signed root is renewed by the controller itself (same
    key version, same subject), which needs permission to set the CA secret.
    ``renew_before`` None: a third of the CA certificate's lifetime, as
    cert-manager renews certificates. ``lifetime`` None: the current CA
    certificate's lifetime.
    """

    automatic: bool = False
    renew_before: timedelta | None = None
    lifetime: timedelta | None = None


@dataclass(frozen=True)
class ReissueSpec:
    """Re-issue, through cert-manager, the Certificates still holding a
    certificate of a previous CA once the CA changes, at most ``per_minute``."""

    on_ca_change: bool = False
    per_minute: int = 10


@dataclass(frozen=True)
class TrustBundleSpec:
    """Where the issuer publishes the CAs relying parties must trust.

    The namespace is implied, never written: the Issuer's own, or for a
    ClusterIssuer the cluster resource namespace (as for ``ClientSecretAuth``).
    ``overlap`` None: how long a previous CA is kept follows from what it may
    have issued (see :mod:`akv_issuer.controller.ca_lifecycle.trust.plan`).
    """

    config_map_name: str
    secret_name: str | None = None
    key: str = "ca.crt"
    overlap: timedelta | None = None


@dataclass(frozen=True)
class CRLSpec:
    """The issuer's own CRL (see docs/revocation.md).

    ``validity``: nextUpdate - thisUpdate of every CRL signed. ``renew_before``:
    how long before nextUpdate a new CRL is signed even with nothing new to
    revoke (None: a third of ``validity``), so relying parties that cache the
    CRL until nextUpdate always find a fresher one, and a Key Vault outage of
    up to that long goes unnoticed by them. ``url``: where relying parties
    reach this issuer's CRL; put into ``crlDistributionPoints`` of every new
    certificate while CRLs are enabled.
    """

    enabled: bool = False
    validity: timedelta = timedelta(hours=24)
    renew_before: timedelta | None = None
    url: str | None = None

    @property
    def overlap(self) -> timedelta:
        return self.renew_before if self.renew_before is not None else self.validity / 3


# --- CA certificate source (issue 14: Managed HSM, certificate objects) -------------


@dataclass(frozen=True)
class KeyVaultSecretCA:
    """The CA PEM (chain) in a Key Vault secret, possibly in another vault than the key's
    (a Managed HSM holds no secrets). The default source is this with the key's vault
    and ``caSecretName``."""

    vault_base_url: str
    name: str
    version: str | None = None


@dataclass(frozen=True)
class KeyVaultCertificateCA:
    """A Key Vault certificate object, read through the Certificates API: its public
    certificate only (``cer``), never its secret, so no chain. ``vault_base_url`` None:
    the key's vault."""

    vault_base_url: str | None
    name: str
    version: str | None = None


@dataclass(frozen=True)
class KubernetesSecretCA:
    """A PEM CA (chain) under ``key`` of a Kubernetes Secret in the Issuer's namespace,
    or for a ClusterIssuer in the cluster resource namespace (never one in the spec)."""

    name: str
    key: str = "ca.crt"


CASource = KeyVaultSecretCA | KeyVaultCertificateCA | KubernetesSecretCA


# --- issue 26: CA pools ---------------------------------------------------------------


def member_crl_url(url: str, member: str) -> str:
    """Where a pool member's CRL is reached, from ``crl.url`` (the issuer's own key's):
    ``.../crl/clusterissuer/pool.crl`` -> ``.../crl/clusterissuer/pool/members/<member>.crl``,
    the path the controller serves it at."""
    base = url[: -len(".crl")] if url.endswith(".crl") else url.rstrip("/")
    return f"{base}/members/{member}.crl"


POOL_PRIMARY_NAME: Final = "primary"
ON_INVALID_MEMBER_FAIL: Final = "Fail"
ON_INVALID_MEMBER_EXCLUDE: Final = "Exclude"


@dataclass(frozen=True)
class PoolMemberSpec:
    """One more member of a CA pool (``spec.pool.members[]``): a Key Vault key, in a vault
    of its own, with its CA certificate (an intermediate under the pool's root).

    ``ca_secret_name`` defaults to ``key_name`` in the member's vault, as for the issuer's
    own key; ``ca_source_explicit`` is the member's ``caSource``."""

    name: str
    key_vault_base_url: str
    key_name: str
    key_version: str | None = None
    ca_secret_name: str = ""
    ca_secret_version: str | None = None
    ca_source_explicit: CASource | None = None


@dataclass(frozen=True)
class PoolSpec:
    """``spec.pool``: the issuer's own key (``keyVaultBaseURL``/``keyName``, the member named
    ``primary_name``) and ``members``, every one an intermediate under one root.

    ``on_invalid_member``: ``Fail`` (default) -- a member that is wrong (its CA under
    another root, another key's CA, a key twice, any CA or key fault) makes the issuer not
    Ready; ``Exclude`` -- that member is set aside (status says why) and the others sign.
    ``retry_after``: how long a member whose vault failed (unreachable, throttled,
    forbidden) stays out before one request probes it again (doubling while it fails)."""

    members: tuple[PoolMemberSpec, ...]
    primary_name: str = POOL_PRIMARY_NAME
    on_invalid_member: str = ON_INVALID_MEMBER_FAIL
    retry_after: timedelta = timedelta(seconds=30)

    @property
    def exclude_invalid(self) -> bool:
        return self.on_invalid_member == ON_INVALID_MEMBER_EXCLUDE


# --- signer-linked ClusterTrustBundles (issue 25 point 3) ---------------------------


@dataclass(frozen=True)
class ClusterTrustBundlesSpec:
    """``spec.clusterTrustBundles``: publish the issuer's trust anchors as a
    signer-linked ClusterTrustBundle (``certificates.k8s.io/v1``) for its signer
    name, which Pods mount with a ``clusterTrustBundle`` projected volume.

    ``labels``: set on the bundle besides the controller's own, for Pods'
    ``labelSelector``. ``overlap`` None: a previous CA stays as long as
    ``policy.maxDuration`` says (see
    :mod:`akv_issuer.controller.ca_lifecycle.trust.plan`).
    """

    labels: tuple[tuple[str, str], ...] = ()
    overlap: timedelta | None = None


# --- spec.podCertificates (issue 25: the PodCertificateRequest signer) -------------

# The key types a Pod may ask for (certificates.k8s.io/v1 PodCertificateRequest,
# Kubernetes 1.37), in the API's own words.
POD_KEY_TYPES: Final = ("RSA3072", "RSA4096", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519")
# Certificates for Pods are TLS identities: both ends of mutual TLS.
POD_DEFAULT_USAGES: Final = ("digital signature", "key encipherment", "server auth", "client auth")
# The lifetime bounds of the PodCertificateRequest API (1 h .. 91 days).
POD_MIN_LIFETIME: Final = timedelta(hours=1)
POD_MAX_LIFETIME: Final = timedelta(days=91)
# The placeholders spec.podCertificates.dnsNames may use, and what fills them.
POD_DNS_PLACEHOLDERS: Final = ("$(POD_NAME)", "$(NAMESPACE)", "$(SERVICE_ACCOUNT)")


@dataclass(frozen=True)
class PodCertificatesSpec:
    """``spec.podCertificates``: this issuer signs PodCertificateRequests, for
    the Pods this policy allows, with the identity it writes (nothing approves
    PodCertificateRequests: this policy is the approval).

    ``namespace_labels`` None: Pods of every namespace (a ClusterIssuer; an
    Issuer signs for its own namespace only, whose labels must match too when
    set); else the namespaceSelector's matchLabels, ANDed with its
    matchExpressions (``namespace_expressions``). ``service_accounts`` None:
    any ServiceAccount. ``spiffe_trust_domain``: a URI SAN
    ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``;
    ``dns_names``: DNS SANs from templates with :data:`POD_DNS_PLACEHOLDERS`.
    """

    namespace_labels: tuple[tuple[str, str], ...] | None = None
    namespace_expressions: tuple[LabelRequirement, ...] = ()
    service_accounts: tuple[str, ...] | None = None
    spiffe_trust_domain: str | None = None
    dns_names: tuple[str, ...] = ()
    key_types: tuple[str, ...] = POD_KEY_TYPES
    usages: tuple[str, ...] = POD_DEFAULT_USAGES
    max_lifetime: timedelta = timedelta(hours=24)
    refresh_before_percentage: int | None = None
    """``refreshBeforePercentage``: the kubelet starts refreshing when this
    percentage of the lifetime is left (None: a third), kept inside the API's
    window (NotBefore + 10 min .. NotAfter - 10 min)."""


@dataclass(frozen=True)
class IssuerSpec:
    """``spec`` of an Issuer or ClusterIssuer with defaults applied."""

    key_vault_base_url: str
    """As written, without a trailing slash."""
    key_name: str
    key_version: str | None
    """None: the latest version, resolved at every check."""
    ca_secret_name: str
    """Defaults to ``key_name``, as in the Go version."""
    ca_secret_version: str | None
    signature_algorithm: str | None
    """One of SIGNATURE_ALGORITHMS; None: derived from the key."""
    auth: AuthSpec = field(default_factory=AmbientAuth)
    policy: PolicySpec = field(default_factory=PolicySpec)
    crl_distribution_points: tuple[str, ...] = ()
    ocsp_servers: tuple[str, ...] = ()
    issuing_certificate_urls: tuple[str, ...] = ()
    ca_renewal: CARenewalSpec = field(default_factory=CARenewalSpec)
    reissue: ReissueSpec = field(default_factory=ReissueSpec)
    trust_bundle: TrustBundleSpec | None = None
    """None: publish no trust bundle."""
    crl: CRLSpec = field(default_factory=CRLSpec)
    # --- issue 14 (Managed HSM, sovereign clouds, certificate objects) ---
    ca_source_explicit: CASource | None = None
    """``spec.caSource`` as written; None: the default (see ``ca_source``)."""
    authority_host: str | None = None
    """``spec.auth.authorityHost``: the Entra authority for this issuer's identity;
    None: derived from the vault's cloud (akv_issuer.keyvault.cloud)."""
    # --- issue 24 (the key stays in the HSM) ---
    allow_exportable_key: bool = False
    """``spec.allowExportableKey``: sign with a key that can leave Key Vault (exportable,
    a release policy, or in a Managed HSM an attestation that does not show otherwise)."""
    # --- issue 26 (CA pools) ---
    pool: PoolSpec | None = None
    """``spec.pool``; None: the issuer's key alone (a pool of one)."""

    @property
    def member_name(self) -> str:
        """The name of the issuer's own key as a pool member."""
        return self.pool.primary_name if self.pool is not None else POOL_PRIMARY_NAME

    def member_specs(self) -> tuple[tuple[str, IssuerSpec], ...]:
        """Every pool member as the spec of an issuer of that key alone (its name first):
        the issuer's own key, then ``pool.members`` in order. Without a pool: the issuer's
        own key. Each member's spec is read and checked as a single-key issuer's is."""
        own = replace(self, pool=None)
        if self.pool is None:
            return ((POOL_PRIMARY_NAME, own),)
        specs: list[tuple[str, IssuerSpec]] = [(self.pool.primary_name, own)]
        for member in self.pool.members:
            crl = self.crl
            if crl.url:
                crl = replace(crl, url=member_crl_url(crl.url, member.name))
            specs.append(
                (
                    member.name,
                    replace(
                        own,
                        crl=crl,
                        key_vault_base_url=member.key_vault_base_url,
                        key_name=member.key_name,
                        key_version=member.key_version,
                        ca_secret_name=member.ca_secret_name or member.key_name,
                        ca_secret_version=member.ca_secret_version,
                        ca_source_explicit=member.ca_source_explicit,
                    ),
                )
            )
        return tuple(specs)

    # --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---
    cluster_trust_bundles: ClusterTrustBundlesSpec | None = None
    """``spec.clusterTrustBundles``; None: publish no ClusterTrustBundle."""

    # --- issue 25 (PodCertificateRequests) ---
    pod_certificates: PodCertificatesSpec | None = None
    """``spec.podCertificates``; None: the issuer signs no PodCertificateRequest."""

    @property
    def ca_source(self) -> CASource:
        """Where the CA certificate is read from: ``caSource``, else the secret
        ``caSecretName`` in the key's vault (the Go version's behaviour)."""
        if self.ca_source_explicit is not None:
            return self.ca_source_explicit
        return KeyVaultSecretCA(
            self.key_vault_base_url, self.ca_secret_name, self.ca_secret_version
        )

    @property
    def ca_description(self) -> str:
        """Where the CA certificate comes from, for condition messages."""
        source = self.ca_source
        if isinstance(source, KubernetesSecretCA):
            return f"CA Secret {source.name!r} (key {source.key!r})"
        where = (
            f" in {source.vault_base_url}"
            if source.vault_base_url and source.vault_base_url != self.key_vault_base_url
            else ""
        )
        if isinstance(source, KeyVaultCertificateCA):
            return f"CA certificate object {source.name!r}{where}"
        return f"CA secret {source.name!r}{where}"

    @property
    def crl_urls(self) -> tuple[str, ...]:
        """crlDistributionPoints of new certificates: the listed ones, then
        ``crl.url`` while CRLs are enabled (once)."""
        points = self.crl_distribution_points
        url = self.crl.url
        if self.crl.enabled and url and url not in points:
            return (*points, url)
        return points
