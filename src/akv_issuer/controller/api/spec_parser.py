"""Reading an Issuer / ClusterIssuer ``spec`` into the typed spec (:mod:`.spec`).

The API server validates what the CRD schema can express, but objects stored
before a CRD upgrade, and specs handed to us by tools, were never validated
against it; and some rules (duration ranges, at most one auth method) the
schema cannot express. So the controller reads ``spec`` only through
:func:`parse_issuer_spec`, which checks every field against ``SPEC_FIELDS``
and turns anything unusable into a :class:`SpecError` naming the field.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, Final

from akv_issuer.controller.api.durations import format_go_duration, parse_go_duration
from akv_issuer.controller.api.label_selector import OPERATORS_WITH_VALUES, LabelRequirement
from akv_issuer.controller.api.schema import DURATION_HINT, SPEC_FIELDS, FieldDef
from akv_issuer.controller.api.spec import (
    ENTRA_TOKEN_EXCHANGE_AUDIENCE,
    POD_DNS_PLACEHOLDERS,
    POD_MAX_LIFETIME,
    POD_MIN_LIFETIME,
    AmbientAuth,
    AuthSpec,
    CARenewalSpec,
    CASource,
    ClientSecretAuth,
    ClusterTrustBundlesSpec,
    CRLSpec,
    IssuerSpec,
    KeyVaultCertificateCA,
    KeyVaultSecretCA,
    KubernetesSecretCA,
    PodCertificatesSpec,
    PolicySpec,
    PoolMemberSpec,
    PoolSpec,
    ReissueSpec,
    SecretKeyRef,
    ServiceAccountAuth,
    SpecError,
    TrustBundleSpec,
    WorkloadIdentityAuth,
)

# Backdating is for clock skew between us and relying parties; more than a day
# would let a client mint certificates that look older than they are.
MAX_BACKDATE: Final = timedelta(hours=24)


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

    def __init__(self, spec: Mapping[str, Any], *, schema_prefix: str = "") -> None:
        """``schema_prefix``: where ``spec`` sits in the schema (``pool.members.`` for a
        pool member, whose fields are declared under that prefix)."""
        if not isinstance(spec, Mapping):
            raise SpecError("", f"must be an object, got {type(spec).__name__}")
        self._spec = spec
        self._prefix = schema_prefix

    def get(self, path: str) -> Any:
        # KeyError: the parser reads an undeclared field
        definition = SPEC_FIELDS[self._prefix + path]
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
            article = "an" if type_[0] in "aeiou" else "a"
            raise SpecError(path, f"must be {article} {type_}, got {_json_type(value)}")
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
    parsed = IssuerSpec(
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
        allow_exportable_key=bool(reader.get("allowExportableKey")),
        pool=_parse_pool(reader, ca_renewal),
        cluster_trust_bundles=_parse_cluster_trust_bundles(reader),
        pod_certificates=_parse_pod_certificates(reader),
    )
    if parsed.pool is not None:
        _pool_restrictions(parsed)
    return parsed


def _pool_restrictions(spec: IssuerSpec) -> None:
    """What a pool cannot do yet: re-issuing on a CA change (which would take the other
    members' certificates for a previous CA's) is for single-key issuers only
    (docs/api.md, CA pools)."""
    if spec.reissue.on_ca_change:
        raise SpecError(
            "reissue.onCAChange",
            "is not supported with spec.pool yet (the members' CAs are all current)",
        )


@contextlib.contextmanager
def _below(where: str) -> Iterator[None]:
    """SpecErrors raised inside name their field below ``where``."""
    try:
        yield
    except SpecError as err:
        raise SpecError(f"{where}.{err.field}" if err.field else where, err.reason) from None


def _parse_pool(reader: _SpecReader, ca_renewal: CARenewalSpec) -> PoolSpec | None:
    """``spec.pool``: members with unique names (the issuer's own key is the member
    ``primaryName``); not with automatic CA renewal (which renews one CA certificate,
    not a pool's intermediates)."""
    if reader.get("pool") is None:
        return None
    raw_members = reader.get("pool.members")
    if not raw_members:
        raise SpecError("pool.members", "lists no member; remove spec.pool for a single key")
    if ca_renewal.automatic:
        raise SpecError(
            "caRenewal.automatic",
            "cannot renew the CA certificates of a pool; renew each member's intermediate "
            "(akv-issuer ca pool-member) and leave automatic false",
        )
    retry_after = _duration(reader, "pool.retryAfter") or timedelta(seconds=30)
    if retry_after < timedelta(seconds=1):
        raise SpecError("pool.retryAfter", "must be at least 1s")
    primary: str = reader.get("pool.primaryName")
    members: list[PoolMemberSpec] = []
    for index, raw in enumerate(raw_members):
        with _below(f"pool.members[{index}]"):
            members.append(_parse_member(_SpecReader(raw, schema_prefix="pool.members.")))
    # Two members naming one key are found by the issuer check, which sets the second
    # aside under pool.onInvalidMember=Exclude (a wrong member, not a wrong spec).
    seen: set[str] = {primary}
    for index, member in enumerate(members):
        if member.name in seen:
            raise SpecError(
                f"pool.members[{index}].name",
                f"{member.name!r}: another member has this name already"
                + (" (the issuer's own key, pool.primaryName)" if member.name == primary else ""),
            )
        seen.add(member.name)
    return PoolSpec(
        members=tuple(members),
        primary_name=primary,
        on_invalid_member=reader.get("pool.onInvalidMember"),
        retry_after=retry_after,
    )


def _parse_member(reader: _SpecReader) -> PoolMemberSpec:
    key_name: str = reader.get("keyName")
    return PoolMemberSpec(
        name=reader.get("name"),
        key_vault_base_url=str(reader.get("keyVaultBaseURL")).rstrip("/"),
        key_name=key_name,
        key_version=_optional_str(reader, "keyVersion"),
        ca_secret_name=_optional_str(reader, "caSecretName") or key_name,
        ca_secret_version=_optional_str(reader, "caSecretVersion"),
        ca_source_explicit=_parse_ca_source(reader, CARenewalSpec()),
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


# --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---------------------------

# Label keys and values as the API server checks them (apimachinery's
# IsQualifiedName and IsValidLabelValue).
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
MAX_BUNDLE_LABELS: Final = 20
# The controller's own labels on a bundle: a user label must not change what
# the controller selects its bundles by, nor what it says about them.
RESERVED_LABEL_PREFIXES: Final = ("azure-keyvault-issuer.gonicus.de/", "app.kubernetes.io/")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key the API server accepts (None: it is)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or re.fullmatch(_LABEL_PREFIX, prefix) is None):
        return "the prefix before '/' must be a DNS subdomain (lowercase, at most 253 characters)"
    if re.fullmatch(_LABEL_NAME, name) is None:
        return (
            "the name must be at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


def _parse_cluster_trust_bundles(reader: _SpecReader) -> ClusterTrustBundlesSpec | None:
    """``spec.clusterTrustBundles``: present (even ``{}``) is the opt-in."""
    if reader.get("clusterTrustBundles") is None:
        return None
    raw = reader.get("clusterTrustBundles.labels") or {}
    if len(raw) > MAX_BUNDLE_LABELS:
        raise SpecError(
            "clusterTrustBundles.labels", f"has {len(raw)} labels, at most {MAX_BUNDLE_LABELS}"
        )
    labels: list[tuple[str, str]] = []
    for key, value in raw.items():
        path = f"clusterTrustBundles.labels[{key!r}]"
        problem = label_key_problem(str(key))
        if problem is not None:
            raise SpecError(path, f"not a label key: {problem}")
        if str(key).startswith(RESERVED_LABEL_PREFIXES):
            raise SpecError(
                path,
                "the prefixes azure-keyvault-issuer.gonicus.de/ and app.kubernetes.io/ are "
                "the controller's own labels",
            )
        if not isinstance(value, str):
            raise SpecError(path, f"must be a string, got {_json_type(value)}")
        if re.fullmatch(_LABEL_VALUE, value) is None:
            raise SpecError(
                path,
                f"{value!r} is not a label value: at most 63 letters, digits, '-', '_' or '.', "
                "beginning and ending with a letter or digit",
            )
        labels.append((str(key), value))
    overlap = _duration(reader, "clusterTrustBundles.overlap")
    if overlap is not None and overlap < timedelta(0):
        raise SpecError("clusterTrustBundles.overlap", "must not be negative")
    return ClusterTrustBundlesSpec(labels=tuple(sorted(labels)), overlap=overlap)


# --- spec.podCertificates (issue 25) ------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\([A-Z_]+\)")


_SELECTOR: Final = "podCertificates.namespaceSelector"


def _parse_label_requirement(raw: Any) -> LabelRequirement:
    """One ``matchExpressions`` entry, checked as the API server checks a
    LabelSelector (apimachinery's ValidateLabelSelectorRequirement): a label
    key, and values for In and NotIn only."""
    entry = _SpecReader(raw, schema_prefix=f"{_SELECTOR}.matchExpressions.")
    key = entry.get("key")
    problem = label_key_problem(key)
    if problem is not None:
        raise SpecError("key", f"{key!r} is not a label key: {problem}")
    operator = entry.get("operator")
    values = tuple(entry.get("values") or ())
    if operator in OPERATORS_WITH_VALUES and not values:
        raise SpecError("values", f"must list at least one value for operator {operator}")
    if operator not in OPERATORS_WITH_VALUES and values:
        raise SpecError("values", f"must be empty for operator {operator} (it takes no values)")
    return LabelRequirement(key=key, operator=operator, values=tuple(dict.fromkeys(values)))


def _parse_pod_certificates(reader: _SpecReader) -> PodCertificatesSpec | None:
    """``spec.podCertificates``: who may get a certificate for a Pod, and which."""
    if reader.get("podCertificates") is None:
        return None
    namespace_labels: tuple[tuple[str, str], ...] | None = None
    namespace_expressions: tuple[LabelRequirement, ...] = ()
    if reader.get(_SELECTOR) is not None:
        labels = reader.get(f"{_SELECTOR}.matchLabels") or {}
        for key, value in labels.items():
            path = f"{_SELECTOR}.matchLabels.{key}"
            if not isinstance(key, str) or label_key_problem(key) is not None:
                raise SpecError(path, "is not a Kubernetes label name")
            if not isinstance(value, str) or re.fullmatch(_LABEL_VALUE, value) is None:
                raise SpecError(path, "must be a Kubernetes label value (a string)")
        namespace_labels = tuple(sorted(labels.items()))
        expressions = reader.get(f"{_SELECTOR}.matchExpressions") or ()
        requirements: list[LabelRequirement] = []
        for index, raw in enumerate(expressions):
            with _below(f"{_SELECTOR}.matchExpressions[{index}]"):
                requirements.append(_parse_label_requirement(raw))
        namespace_expressions = tuple(requirements)
    accounts = reader.get("podCertificates.serviceAccounts")
    dns_names = tuple(reader.get("podCertificates.dnsNames") or ())
    for index, template in enumerate(dns_names):
        _check_dns_template(f"podCertificates.dnsNames[{index}]", template)
    trust_domain = _optional_str(reader, "podCertificates.spiffeTrustDomain")
    if trust_domain is None and not dns_names:
        raise SpecError(
            "podCertificates",
            "set spiffeTrustDomain, dnsNames or both: a Pod's certificate needs an identity",
        )
    key_types = tuple(dict.fromkeys(reader.get("podCertificates.keyTypes") or ()))
    usages = tuple(dict.fromkeys(reader.get("podCertificates.usages") or ()))
    if reader.get("podCertificates.keyTypes") is not None and not key_types:
        raise SpecError("podCertificates.keyTypes", "must name at least one key type")
    lifetime = _duration(reader, "podCertificates.maxLifetime") or timedelta(hours=24)
    if not POD_MIN_LIFETIME <= lifetime <= POD_MAX_LIFETIME:
        raise SpecError(
            "podCertificates.maxLifetime",
            f"{format_go_duration(lifetime)} is outside what the PodCertificateRequest API "
            f"allows ({format_go_duration(POD_MIN_LIFETIME)} to "
            f"{format_go_duration(POD_MAX_LIFETIME)})",
        )
    refresh = reader.get("podCertificates.refreshBeforePercentage")
    if refresh is not None and (
        isinstance(refresh, bool) or not isinstance(refresh, int) or not 1 <= refresh <= 99
    ):
        raise SpecError(
            "podCertificates.refreshBeforePercentage",
            f"must be a whole number from 1 to 99 (percent of the lifetime left), got {refresh!r}",
        )
    defaults = PodCertificatesSpec()
    return PodCertificatesSpec(
        namespace_labels=namespace_labels,
        namespace_expressions=namespace_expressions,
        service_accounts=tuple(accounts) if accounts is not None else None,
        spiffe_trust_domain=trust_domain,
        dns_names=dns_names,
        key_types=key_types or defaults.key_types,
        usages=usages or defaults.usages,
        max_lifetime=lifetime,
        refresh_before_percentage=refresh,
    )


def _check_dns_template(path: str, template: str) -> None:
    """A DNS name once its placeholders are filled with DNS labels."""
    for placeholder in _PLACEHOLDER.findall(template):
        if placeholder not in POD_DNS_PLACEHOLDERS:
            raise SpecError(
                path,
                f"{template!r}: unknown placeholder {placeholder}; use "
                f"{', '.join(POD_DNS_PLACEHOLDERS)}",
            )
    sample = _PLACEHOLDER.sub("x", template)
    labels = sample.split(".")
    if sample.startswith("*") or any(
        not label or len(label) > 63 or label.startswith("-") or label.endswith("-")
        for label in labels
    ):
        raise SpecError(
            path,
            f"{template!r} is not a DNS name (empty label, or a label starting or ending in '-')",
        )
