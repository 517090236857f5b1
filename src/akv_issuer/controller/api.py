"""The issuer's Kubernetes API: constants, resource classes and the typed spec.

The CRD YAML under ``config/crd/bases/`` is the source of truth for the wire
format. ``SPEC_FIELDS`` and ``STATUS_FIELDS`` below restate the parts of it this
module reads or writes, and ``tests/unit/api`` checks that the two agree, so a
field cannot be added to one side only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from lightkube.generic_resource import create_global_resource, create_namespaced_resource

__all__ = [
    "API_VERSION",
    "CERTIFICATE_REQUEST_KIND",
    "CERTIFICATE_REQUEST_PLURAL",
    "CERT_MANAGER_GROUP",
    "CERT_MANAGER_VERSION",
    "CLUSTER_ISSUER_KIND",
    "CLUSTER_ISSUER_PLURAL",
    "CONDITION_READY",
    "GROUP",
    "ISSUER_KIND",
    "ISSUER_KINDS",
    "ISSUER_PLURAL",
    "KIND_TO_PLURAL",
    "MAX_BACKDATE",
    "SIGNATURE_ALGORITHMS",
    "SPEC_FIELDS",
    "STATUS_FIELDS",
    "VERSION",
    "AmbientAuth",
    "AuthSpec",
    "CertificateRequest",
    "CertificateRequestCondition",
    "CertificateRequestEvent",
    "CertificateRequestReason",
    "ClientSecretAuth",
    "ClusterIssuer",
    "ConditionStatus",
    "FieldDef",
    "Issuer",
    "IssuerReason",
    "IssuerSpec",
    "PendingReason",
    "PolicySpec",
    "SecretKeyRef",
    "SpecError",
    "WorkloadIdentityAuth",
    "build_issuer_status",
    "ca_certificate_from_status",
    "find_condition",
    "format_go_duration",
    "format_time",
    "is_issuer_ready",
    "make_condition",
    "parse_go_duration",
    "parse_issuer_spec",
    "parse_time",
    "set_condition",
    "signer_resource_name",
]

# --------------------------------------------------------------------------
# Names

GROUP: Final = "azure-keyvault-issuer.gonicus.de"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ISSUER_KIND: Final = "Issuer"
CLUSTER_ISSUER_KIND: Final = "ClusterIssuer"
ISSUER_PLURAL: Final = "issuers"
CLUSTER_ISSUER_PLURAL: Final = "clusterissuers"
ISSUER_KINDS: Final = frozenset({ISSUER_KIND, CLUSTER_ISSUER_KIND})
KIND_TO_PLURAL: Final[Mapping[str, str]] = {
    ISSUER_KIND: ISSUER_PLURAL,
    CLUSTER_ISSUER_KIND: CLUSTER_ISSUER_PLURAL,
}

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


# Kubernetes' own CSRs, as a generic resource so that objects arrive as plain
# dicts like our other resources (the informer and handlers expect those).
KubeCertificateSigningRequest = create_global_resource(
    "certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests"
)


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


# --------------------------------------------------------------------------
# Conditions and reasons

CONDITION_READY: Final = "Ready"


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
    INVALID_SPEC = "InvalidSpec"


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


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """Parse a Kubernetes timestamp (``2024-01-02T03:04:05Z``, fractions allowed)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return moment.astimezone(UTC)


def make_condition(
    type_: str,
    status: ConditionStatus | str,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """One entry of ``status.conditions`` in the CRD's shape."""
    condition: dict[str, Any] = {
        "type": type_,
        "status": str(ConditionStatus(status)),
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    return condition


def find_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None, new: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Replace the condition of ``new["type"]``, keeping the others in order.

    ``lastTransitionTime`` only moves when the status changes, so users can
    see how long an issuer has been (not) Ready.
    """
    result: list[dict[str, Any]] = []
    replaced = False
    for old in conditions or ():
        if old.get("type") != new["type"]:
            result.append(dict(old))
            continue
        merged = dict(new)
        if old.get("status") == new["status"] and old.get("lastTransitionTime"):
            merged["lastTransitionTime"] = old["lastTransitionTime"]
        if not replaced:
            result.append(merged)
            replaced = True
    if not replaced:
        result.append(dict(new))
    return result


def is_issuer_ready(issuer: Mapping[str, Any]) -> bool:
    """True when the issuer's Ready condition is True *for its current spec*.

    A Ready condition whose observedGeneration is older than
    ``metadata.generation`` describes a spec that no longer exists.
    """
    status = issuer.get("status") or {}
    ready = find_condition(status.get("conditions"), CONDITION_READY)
    if ready is None or ready.get("status") != ConditionStatus.TRUE:
        return False
    metadata = issuer.get("metadata") or {}
    generation = metadata.get("generation")
    observed = ready.get("observedGeneration")
    if generation is None:
        return True
    return observed is not None and int(observed) >= int(generation)


# --------------------------------------------------------------------------
# Go durations (cert-manager and the Go version write durations like 2160h)

_NS_PER_UNIT: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, what Go prints
    "\u03bcs": 1_000,  # Greek mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_GO_DURATION_NS: Final = 2**63 - 1


def parse_go_duration(value: str) -> timedelta:
    """Parse Go's ``time.ParseDuration`` syntax (``2160h``, ``1h30m``, ``1.5s``).

    Days are deliberately not a unit (Go has none). Precision below a
    microsecond is truncated, as timedelta cannot hold it.
    Raises ValueError with a message naming the bad input.
    """
    text = value
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        raise ValueError(f"invalid duration {value!r}: empty")
    total_ns = 0
    pos = 0
    while pos < len(text):
        match = _GO_DURATION_PART.match(text, pos)
        if match is None or not (match.group(1) or match.group(2)):
            raise ValueError(
                f"invalid duration {value!r}: expected a number followed by a unit "
                "(h, m, s, ms, us, ns), e.g. 2160h or 1h30m"
            )
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        scale = _NS_PER_UNIT[unit]
        total_ns += int(whole or "0") * scale
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        if total_ns > _MAX_GO_DURATION_NS:
            raise ValueError(f"invalid duration {value!r}: longer than about 292 years")
        pos = match.end()
    return timedelta(microseconds=sign * total_ns // 1000)


def format_go_duration(value: timedelta) -> str:
    """Format like Go's ``Duration.String()``: ``2160h0m0s``, ``1m30s``, ``1.5ms``."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000:
        return f"{sign}{micros}\u00b5s"
    if micros < 1_000_000:
        return f"{sign}{_decimal(micros, 1_000)}ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _decimal(rest, 1_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _decimal(amount: int, per_unit: int) -> str:
    whole, fraction = divmod(amount, per_unit)
    if not fraction:
        return str(whole)
    digits = len(str(per_unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


# --------------------------------------------------------------------------
# Schema restatement (checked against config/crd/bases by the unit tests)

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

_DURATION_HINT = "use Go duration syntax such as 2160h, 90m or 1h30m (units h, m, s, ms, us, ns)"


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


SPEC_FIELDS: Final[Mapping[str, FieldDef]] = {
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
    "policy": FieldDef("object"),
    "policy.maxDuration": FieldDef("string", pattern=_GO_DURATION, hint=_DURATION_HINT),
    "policy.allowCA": FieldDef("boolean", default=False),
    "policy.maxPathLength": FieldDef("integer", minimum=0),
    "policy.backdate": FieldDef("string", pattern=_GO_DURATION, default="0s", hint=_DURATION_HINT),
    "crlDistributionPoints": FieldDef(
        "array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10
    ),
    "ocspServers": FieldDef("array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10),
    "issuingCertificateURLs": FieldDef(
        "array[string]", pattern=_EXTENSION_URL, max_length=2048, max_items=10
    ),
}
"""Every field under ``spec`` (dotted path) the CRD defines and the parser reads."""

STATUS_FIELDS: Final[Mapping[str, FieldDef]] = {
    "caCertificate": FieldDef("string"),  # format: byte (base64 of the PEM)
    "keyID": FieldDef("string"),
    "keyVersion": FieldDef("string"),
    "signatureAlgorithm": FieldDef("string"),
    "caNotAfter": FieldDef("string"),  # format: date-time
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

# Backdating is for clock skew between us and relying parties; more than a day
# would let a client mint certificates that look older than they are.
MAX_BACKDATE: Final = timedelta(hours=24)


# --------------------------------------------------------------------------
# Typed spec


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


AuthSpec = AmbientAuth | WorkloadIdentityAuth | ClientSecretAuth


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
        raise SpecError(path, f"{err}; {_DURATION_HINT}") from None


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
    )


def _parse_auth(reader: _SpecReader) -> AuthSpec:
    reader.get("auth")
    workload = reader.get("auth.workloadIdentity")
    client_secret = reader.get("auth.clientSecret")
    if workload is not None and client_secret is not None:
        raise SpecError("auth", "set at most one of workloadIdentity and clientSecret")
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


# --------------------------------------------------------------------------
# Status


def build_issuer_status(
    *,
    conditions: Sequence[Mapping[str, Any]],
    ca_certificate_pem: bytes | None = None,
    key_id: str | None = None,
    key_version: str | None = None,
    signature_algorithm: str | None = None,
    ca_not_after: datetime | None = None,
    last_check_time: datetime | None = None,
) -> dict[str, Any]:
    """The ``status`` object of an Issuer / ClusterIssuer, in the CRD's shape.

    Fields left None are omitted, so a server-side apply with this body drops
    values that no longer hold (e.g. the CA after the secret vanished).
    """
    status: dict[str, Any] = {"conditions": [dict(c) for c in conditions]}
    if ca_certificate_pem is not None:
        # format: byte -- the Go version stored []byte, i.e. base64 of the PEM.
        status["caCertificate"] = base64.b64encode(ca_certificate_pem).decode("ascii")
    if key_id is not None:
        status["keyID"] = key_id
    if key_version is not None:
        status["keyVersion"] = key_version
    if signature_algorithm is not None:
        status["signatureAlgorithm"] = signature_algorithm
    if ca_not_after is not None:
        status["caNotAfter"] = format_time(ca_not_after)
    if last_check_time is not None:
        status["lastCheckTime"] = format_time(last_check_time)
    return status


def ca_certificate_from_status(status: Mapping[str, Any] | None) -> bytes | None:
    """The CA PEM stored in ``status.caCertificate`` (None when absent)."""
    encoded = (status or {}).get("caCertificate")
    if not encoded:
        return None
    return base64.b64decode(encoded, validate=True)
