"""The typed spec of an Issuer / ClusterIssuer and its parser.

The API server validates what the CRD schema can express, but objects stored
before a CRD upgrade, and specs handed to us by tools, were never validated
against it; and some rules (duration ranges, at most one auth method) the
schema cannot express. So the controller reads ``spec`` only through
:func:`parse_issuer_spec`, which checks every field against ``SPEC_FIELDS``
and turns anything unusable into a :class:`SpecError` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from akv_issuer.controller.api.durations import format_go_duration, parse_go_duration
from akv_issuer.controller.api.schema import DURATION_HINT, SPEC_FIELDS, FieldDef

# Backdating is for clock skew between us and relying parties; more than a day
# would let a client mint certificates that look older than they are.
MAX_BACKDATE: Final = timedelta(hours=24)


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
    have issued (see :mod:`akv_issuer.controller.ca_lifecycle.trust_bundle`).
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


_PY_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "object": (Mapping,),
}


class _SpecReader:
    """Reads ``spec`` only through SPEC_FIELDS, checking what the schema checks.

    The API server validates too, but objects stored before a CRD upgrade, and
    specs handed to us by tools, were never validated against this schema.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise SpecError("", f"must be an object, got {type(spec).__name__}")
        self._spec = spec

    def get(self, path: str) -> Any:
        definition = SPEC_FIELDS[path]  # KeyError: the parser reads an undeclared field
        value = self._lookup(path)
        if value is None:
            if definition.required and self._parent_present(path):
                raise SpecError(path, "is required")
            return definition.default
        self._check(path, definition, value)
        return value

    def _parent_present(self, path: str) -> bool:
        parent, _, _ = path.rpartition(".")
        return not parent or self._lookup(parent) is not None

    def _lookup(self, path: str) -> Any:
        node: Any = self._spec
        walked: list[str] = []
        for part in path.split("."):
            if node is None:
                return None
            if not isinstance(node, Mapping):
                raise SpecError(".".join(walked), f"must be an object, got {_json_type(node)}")
            node = node.get(part)
            walked.append(part)
        return node

    def _check(self, path: str, definition: FieldDef, value: Any) -> None:
        if definition.type.startswith("array["):
            if not isinstance(value, list | tuple):
                raise SpecError(path, f"must be a list, got {_json_type(value)}")
            if definition.max_items is not None and len(value) > definition.max_items:
                raise SpecError(path, f"has {len(value)} entries, at most {definition.max_items}")
            item_type = definition.type[len("array[") : -1]
            for index, item in enumerate(value):
                self._check_scalar(f"{path}[{index}]", definition, item_type, item)
            return
        self._check_scalar(path, definition, definition.type, value)

    @staticmethod
    def _check_scalar(path: str, definition: FieldDef, type_: str, value: Any) -> None:
        expected = _PY_TYPES[type_]
        # bool is an int in Python; the schema keeps them apart.
        if not isinstance(value, expected) or (type_ == "integer" and isinstance(value, bool)):
            raise SpecError(path, f"must be a {type_}, got {_json_type(value)}")
        if definition.minimum is not None and isinstance(value, int) and value < definition.minimum:
            raise SpecError(path, f"must be >= {definition.minimum}, got {value}")
        if not isinstance(value, str):
            return
        if definition.max_length is not None and len(value) > definition.max_length:
            raise SpecError(path, f"is longer than {definition.max_length} characters")
        if definition.enum is not None and value not in definition.enum:
            raise SpecError(path, f"{value!r} is not one of {', '.join(definition.enum)}")
        if definition.pattern is not None and re.fullmatch(definition.pattern, value) is None:
            hint = definition.hint or f"must match {definition.pattern}"
            raise SpecError(path, f"{value!r}: {hint}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _duration(reader: _SpecReader, path: str) -> timedelta | None:
    raw = reader.get(path)
    if raw is None:
        return None
    try:
        return parse_go_duration(raw)
    except ValueError as err:
        raise SpecError(path, f"{err}; {DURATION_HINT}") from None


def _optional_str(reader: _SpecReader, path: str) -> str | None:
    value = reader.get(path)
    # The Go version required keyVersion, so old manifests may carry "".
    return value or None


def parse_issuer_spec(spec: Mapping[str, Any]) -> IssuerSpec:
    """Validate ``spec`` of an Issuer / ClusterIssuer and apply defaults.

    Raises ``SpecError`` naming the field for anything unusable, including what
    the schema cannot express (duration ranges, at most one auth method).
    """
    reader = _SpecReader(spec)
    key_name: str = reader.get("keyName")
    policy = PolicySpec(
        max_duration=_duration(reader, "policy.maxDuration"),
        allow_ca=reader.get("policy.allowCA"),
        max_path_length=reader.get("policy.maxPathLength"),
        backdate=_duration(reader, "policy.backdate") or timedelta(0),
    )
    if policy.max_duration is not None and policy.max_duration <= timedelta(0):
        raise SpecError("policy.maxDuration", "must be longer than 0s")
    if policy.backdate > MAX_BACKDATE:
        raise SpecError(
            "policy.backdate",
            f"{format_go_duration(policy.backdate)} is more than the allowed "
            f"{format_go_duration(MAX_BACKDATE)}",
        )
    ca_renewal = CARenewalSpec(
        automatic=reader.get("caRenewal.automatic"),
        renew_before=_duration(reader, "caRenewal.renewBefore"),
        lifetime=_duration(reader, "caRenewal.lifetime"),
    )
    for path, value in (
        ("caRenewal.renewBefore", ca_renewal.renew_before),
        ("caRenewal.lifetime", ca_renewal.lifetime),
    ):
        if value is not None and value <= timedelta(0):
            raise SpecError(path, "must be longer than 0s")
    if (
        ca_renewal.renew_before is not None
        and ca_renewal.lifetime is not None
        and ca_renewal.renew_before >= ca_renewal.lifetime
    ):
        raise SpecError(
            "caRenewal.renewBefore",
            "must be shorter than caRenewal.lifetime, or every check would renew again",
        )
    return IssuerSpec(
        key_vault_base_url=str(reader.get("keyVaultBaseURL")).rstrip("/"),
        key_name=key_name,
        key_version=_optional_str(reader, "keyVersion"),
        ca_secret_name=_optional_str(reader, "caSecretName") or key_name,
        ca_secret_version=_optional_str(reader, "caSecretVersion"),
        signature_algorithm=reader.get("signatureAlgorithm"),
        auth=_parse_auth(reader),
        policy=policy,
        crl_distribution_points=tuple(reader.get("crlDistributionPoints") or ()),
        ocsp_servers=tuple(reader.get("ocspServers") or ()),
        issuing_certificate_urls=tuple(reader.get("issuingCertificateURLs") or ()),
        ca_renewal=ca_renewal,
        reissue=ReissueSpec(
            on_ca_change=reader.get("reissue.onCAChange"),
            per_minute=reader.get("reissue.perMinute"),
        ),
        trust_bundle=_parse_trust_bundle(reader),
        crl=_parse_crl(reader),
        ca_source_explicit=_parse_ca_source(reader, ca_renewal),
        authority_host=_optional_str(reader, "auth.authorityHost"),
    )


def _parse_ca_source(reader: _SpecReader, ca_renewal: CARenewalSpec) -> CASource | None:
    """``spec.caSource``: exactly one source; not with caSecretName/caSecretVersion (two
    answers to one question), nor with automatic renewal (which writes the CA secret in
    the key's vault, a place caSource says the CA is not kept)."""
    if reader.get("caSource") is None:
        return None
    chosen = [
        name
        for name in ("keyVaultSecret", "keyVaultCertificate", "secret")
        if reader.get(f"caSource.{name}") is not None
    ]
    if len(chosen) != 1:
        raise SpecError(
            "caSource", "set exactly one of keyVaultSecret, keyVaultCertificate, secret"
        )
    for legacy in ("caSecretName", "caSecretVersion"):
        if reader.get(legacy):
            raise SpecError(legacy, "must not be set together with caSource; use caSource alone")
    if ca_renewal.automatic:
        raise SpecError(
            "caRenewal.automatic",
            "cannot renew a CA read from caSource (it would be written to the key's vault); "
            "renew it where caSource points and leave automatic false",
        )
    source: CASource
    if chosen == ["keyVaultSecret"]:
        source = KeyVaultSecretCA(
            vault_base_url=str(reader.get("caSource.keyVaultSecret.vaultBaseURL")).rstrip("/"),
            name=reader.get("caSource.keyVaultSecret.name"),
            version=_optional_str(reader, "caSource.keyVaultSecret.version"),
        )
    elif chosen == ["keyVaultCertificate"]:
        vault = _optional_str(reader, "caSource.keyVaultCertificate.vaultBaseURL")
        source = KeyVaultCertificateCA(
            vault_base_url=vault.rstrip("/") if vault else None,
            name=reader.get("caSource.keyVaultCertificate.name"),
            version=_optional_str(reader, "caSource.keyVaultCertificate.version"),
        )
    else:
        source = KubernetesSecretCA(
            name=reader.get("caSource.secret.name"), key=reader.get("caSource.secret.key")
        )
    return source


def _parse_crl(reader: _SpecReader) -> CRLSpec:
    if reader.get("crl") is None:
        return CRLSpec()
    validity = _duration(reader, "crl.validity") or timedelta(hours=24)
    renew_before = _duration(reader, "crl.renewBefore")
    if validity < timedelta(minutes=1):
        raise SpecError("crl.validity", "must be at least 1m")
    if renew_before is not None and not timedelta(0) < renew_before < validity:
        raise SpecError(
            "crl.renewBefore",
            "must be longer than 0s and shorter than crl.validity, or every CRL would "
            "be due for re-signing at once",
        )
    return CRLSpec(
        enabled=reader.get("crl.enabled"),
        validity=validity,
        renew_before=renew_before,
        url=_optional_str(reader, "crl.url"),
    )


def _parse_trust_bundle(reader: _SpecReader) -> TrustBundleSpec | None:
    if reader.get("trustBundle") is None:
        return None
    overlap = _duration(reader, "trustBundle.overlap")
    if overlap is not None and overlap < timedelta(0):
        raise SpecError("trustBundle.overlap", "must not be negative")
    return TrustBundleSpec(
        config_map_name=reader.get("trustBundle.configMapName"),
        secret_name=_optional_str(reader, "trustBundle.secretName"),
        key=reader.get("trustBundle.key"),
        overlap=overlap,
    )


def _parse_auth(reader: _SpecReader) -> AuthSpec:
    reader.get("auth")
    workload = reader.get("auth.workloadIdentity")
    client_secret = reader.get("auth.clientSecret")
    if workload is not None and client_secret is not None:
        raise SpecError("auth", "set at most one of workloadIdentity and clientSecret")
    service_account = _parse_service_account(reader)
    if service_account is not None:
        if workload is not None or client_secret is not None:
            raise SpecError(
                "auth", "set at most one of workloadIdentity, clientSecret and serviceAccountRef"
            )
        return service_account
    if workload is not None:
        return WorkloadIdentityAuth(
            client_id=reader.get("auth.workloadIdentity.clientID"),
            tenant_id=reader.get("auth.workloadIdentity.tenantID"),
        )
    if client_secret is not None:
        reader.get("auth.clientSecret.secretRef")
        return ClientSecretAuth(
            tenant_id=reader.get("auth.clientSecret.tenantID"),
            client_id=reader.get("auth.clientSecret.clientID"),
            secret_ref=SecretKeyRef(
                name=reader.get("auth.clientSecret.secretRef.name"),
                key=reader.get("auth.clientSecret.secretRef.key"),
            ),
        )
    return AmbientAuth()


def _parse_service_account(reader: _SpecReader) -> ServiceAccountAuth | None:
    if reader.get("auth.serviceAccountRef") is None:
        return None
    audiences = tuple(reader.get("auth.serviceAccountRef.audiences") or ())
    return ServiceAccountAuth(
        name=reader.get("auth.serviceAccountRef.name"),
        client_id=reader.get("auth.serviceAccountRef.clientID"),
        tenant_id=reader.get("auth.serviceAccountRef.tenantID"),
        audiences=audiences or (ENTRA_TOKEN_EXCHANGE_AUDIENCE,),
    )
