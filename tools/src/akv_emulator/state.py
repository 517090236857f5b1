"""In-memory state of the emulator: keys, secrets, identities, tokens, faults and counters."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .crypto import KeyMaterial, b64url_decode, b64url_encode

DEFAULT_TENANT_ID = "7e3a1f00-0000-4000-8000-00000000e1a0"
WORKLOAD_CLIENT_ID = "7e3a1f00-0000-4000-8000-0000000000a1"
SECRET_CLIENT_ID = "7e3a1f00-0000-4000-8000-0000000000a2"  # noqa: S105 - a client id, not a secret
WORKLOAD_SUBJECT = "system:serviceaccount:azure-keyvault-issuer-system:azure-keyvault-issuer"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"

# Key Vault's access-policy names; the rotation ones are separate permissions there too
# (RBAC: keys/rotate/action, keyrotationpolicies/read, keyrotationpolicies/write).
KEY_PERMISSIONS = frozenset(
    {
        "get",
        "list",
        "create",
        "update",
        "sign",
        "verify",
        "rotate",
        "getrotationpolicy",
        "setrotationpolicy",
        "delete",
        "recover",
        "purge",
    }
)
SECRET_PERMISSIONS = frozenset({"get", "list", "set", "update", "delete", "recover", "purge"})
CERTIFICATE_PERMISSIONS = frozenset({"get", "import"})

# Operations a fault applies to when a rule names none: the vault's data plane, not the
# challenge round trip, the token endpoint, discovery documents or the admin API.
VAULT_OPERATIONS = frozenset(
    {
        "get_key",
        "list_keys",
        "list_key_versions",
        "create_key",
        "update_key",
        "sign",
        "verify",
        "rotate_key",
        "get_key_rotation_policy",
        "update_key_rotation_policy",
        "get_secret",
        "list_secrets",
        "list_secret_versions",
        "set_secret",
        "update_secret",
        "get_certificate",
        "import_certificate",
    }
)
# Soft-delete (softdelete.py): data-plane operations too.
SOFT_DELETE_OPERATIONS = frozenset(
    f"{verb}_{kind}"
    for kind in ("key", "secret")
    for verb in ("delete", "get_deleted", "recover_deleted", "purge_deleted")
) | {"list_deleted_keys", "list_deleted_secrets"}
VAULT_OPERATIONS = VAULT_OPERATIONS | SOFT_DELETE_OPERATIONS
ALL_OPERATIONS = VAULT_OPERATIONS | {"token", "discovery", "challenge", "unauthorized"}

# Key Vault's published service limits per vault and region, transactions per 10 seconds.
AZURE_LIMITS: dict[str, int] = {
    "RSA-2048": 4000,
    "RSA-2048-HSM": 2000,
    "RSA-3072": 1000,
    "RSA-3072-HSM": 500,
    "RSA-4096": 500,
    "RSA-4096-HSM": 250,
    "EC": 4000,
    "EC-HSM": 2000,
    "other": 4000,
}


class AdminInputError(ValueError):
    """Admin API input that cannot be applied; the message says what is wrong."""


def now() -> int:
    return int(time.time())


@dataclass
class KeyVersion:
    name: str
    version: str
    material: KeyMaterial
    key_ops: list[str]
    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    created: int = field(default_factory=now)
    updated: int = field(default_factory=now)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class CertificateVersion:
    """A certificate object's version: the public certificate only. Its key and secret
    are stored as the key and secret of the same name and version, as Key Vault does."""

    name: str
    version: str
    cer: bytes
    content_type: str
    subject: str
    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    created: int = field(default_factory=now)
    updated: int = field(default_factory=now)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str
    content_type: str | None
    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    created: int = field(default_factory=now)
    updated: int = field(default_factory=now)
    tags: dict[str, str] = field(default_factory=dict)


# ISO 8601 durations as Key Vault's rotation policy takes them: P90D, P3M, PT48H, P1Y10D.
_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
)
DAY = 86400


def iso_duration_seconds(text: object) -> int:
    """Seconds of an ISO 8601 duration, a year as 365 days and a month as 30 (as a policy
    trigger needs no calendar precision); ValueError when it is not one."""
    match = _ISO_DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"'{text}' is not an ISO 8601 duration such as P90D, P3M or PT48H.")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return (
        (years * 365 + months * 30 + weeks * 7 + days) * DAY + hours * 3600 + minutes * 60 + seconds
    )


@dataclass
class LifetimeAction:
    action: str  # "Rotate" or "Notify", as Key Vault spells them
    time_after_create: str | None = None
    time_before_expiry: str | None = None

    def describe(self) -> dict[str, Any]:
        trigger = (
            {"timeAfterCreate": self.time_after_create}
            if self.time_after_create is not None
            else {"timeBeforeExpiry": self.time_before_expiry}
        )
        return {"trigger": trigger, "action": {"type": self.action}}


# What Key Vault answers for a key whose policy was never set.
DEFAULT_LIFETIME_ACTIONS = (LifetimeAction("Notify", time_before_expiry="P30D"),)


@dataclass
class RotationPolicy:
    lifetime_actions: list[LifetimeAction]
    expiry_time: str | None = None
    created: int = field(default_factory=now)
    updated: int = field(default_factory=now)


def parse_rotation_policy(data: dict[str, Any], previous: RotationPolicy | None) -> RotationPolicy:
    """A rotation policy from a PUT body, checked as Key Vault checks it (ValueError's
    message is the BadParameter message): at most one Rotate and one Notify action, each
    with exactly one trigger; Rotate at least 7 days after creation or before expiry,
    Notify only before expiry (at least 7 days); expiryTime at least 28 days and required
    by a timeBeforeExpiry trigger. An empty list restores the default actions."""
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueError("The parameter 'attributes' must be an object.")
    expiry = attributes.get("expiryTime")
    if expiry is not None and iso_duration_seconds(expiry) < 28 * DAY:
        raise ValueError(f"expiryTime {expiry} is too short: the minimum is 28 days (P28D).")
    raw_actions = data.get("lifetimeActions")
    if raw_actions is None:
        raw_actions = []
    if not isinstance(raw_actions, list):
        raise ValueError("The parameter 'lifetimeActions' must be a list.")
    actions: list[LifetimeAction] = []
    for raw in raw_actions:
        if not isinstance(raw, dict):
            raise ValueError("Each lifetime action must be an object.")
        kind = str((raw.get("action") or {}).get("type") or "")
        action = {"rotate": "Rotate", "notify": "Notify"}.get(kind.lower())
        if action is None:
            raise ValueError(f"Unknown lifetime action type '{kind}': use Rotate or Notify.")
        if any(a.action == action for a in actions):
            raise ValueError(f"A policy can have only one {action} action.")
        trigger = raw.get("trigger") or {}
        after, before = trigger.get("timeAfterCreate"), trigger.get("timeBeforeExpiry")
        if (after is None) == (before is None):
            raise ValueError(
                f"The {action} action needs exactly one of timeAfterCreate and timeBeforeExpiry."
            )
        if action == "Notify" and after is not None:
            raise ValueError("The Notify action takes only a timeBeforeExpiry trigger.")
        seconds = iso_duration_seconds(str(after if after is not None else before))
        if seconds < 7 * DAY:
            raise ValueError(f"The {action} trigger must be at least 7 days (P7D).")
        if before is not None and expiry is None:
            raise ValueError("A timeBeforeExpiry trigger needs the policy's expiryTime.")
        if before is not None and expiry is not None and seconds >= iso_duration_seconds(expiry):
            raise ValueError("timeBeforeExpiry must be shorter than expiryTime.")
        actions.append(LifetimeAction(action, after, before))
    if not actions:
        actions = list(DEFAULT_LIFETIME_ACTIONS)
    stamp = now()
    created = previous.created if previous is not None else stamp
    return RotationPolicy(actions, expiry, created=created, updated=stamp)


def new_version() -> str:
    return uuid.uuid4().hex


@dataclass
class FederatedCredential:
    issuer: str
    subject: str
    audience: str = FEDERATION_AUDIENCE


@dataclass
class Identity:
    client_id: str
    secret: str | None = None
    federated: list[FederatedCredential] = field(default_factory=list)
    key_permissions: set[str] = field(default_factory=lambda: set(KEY_PERMISSIONS))
    secret_permissions: set[str] = field(default_factory=lambda: set(SECRET_PERMISSIONS))
    certificate_permissions: set[str] = field(default_factory=lambda: set(CERTIFICATE_PERMISSIONS))

    def permissions(self, area: str) -> set[str]:
        if area == "keys":
            return self.key_permissions
        if area == "certificates":
            return self.certificate_permissions
        return self.secret_permissions

    def describe(self) -> dict[str, Any]:
        # The admin view says whether a secret is set, never what it is.
        return {
            "client_id": self.client_id,
            "has_secret": self.secret is not None,
            "federated": [vars(cred) for cred in self.federated],
            "permissions": {
                "keys": sorted(self.key_permissions),
                "secrets": sorted(self.secret_permissions),
                "certificates": sorted(self.certificate_permissions),
            },
        }


@dataclass
class TokenRecord:
    client_id: str
    tenant_id: str
    audience: str
    expires_at: float
    cae: bool = False
    """Asked for by a CAE-capable client (claims ``xms_cc`` with ``CP1``)."""
    revoked_at: float | None = None
    """Set when a CAE token is revoked: the vault answers its claims challenge."""


@dataclass
class FaultRule:
    """Which requests a fault hits: the next N matching ones, and/or a random fraction."""

    next: int = 0
    probability: float = 0.0
    operations: list[str] | None = None

    def matches(self, op: str) -> bool:
        if self.operations is None:
            return op in VAULT_OPERATIONS
        return op in self.operations

    def fire(self, op: str, rng: secrets.SystemRandom) -> bool:
        if not self.matches(op):
            return False
        if self.next > 0:
            self.next -= 1
            return True
        return self.probability > 0 and rng.random() < self.probability

    def describe(self) -> dict[str, Any]:
        return {"next": self.next, "probability": self.probability, "operations": self.operations}


@dataclass
class ThrottleRule(FaultRule):
    retry_after: float | None = None
    preset: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    window_seconds: float = 10.0

    def effective_limits(self) -> dict[str, int]:
        base = dict(AZURE_LIMITS) if self.preset == "azure" else {}
        base.update(self.limits)
        return base

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "retry_after": self.retry_after,
            "preset": self.preset,
            "limits": self.limits,
            "window_seconds": self.window_seconds,
        }


@dataclass
class ErrorRule(FaultRule):
    status: int = 503

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "status": self.status}


@dataclass
class Faults:
    latency_ms: float = 0.0
    latency_operations: list[str] | None = None
    throttle: ThrottleRule = field(default_factory=ThrottleRule)
    errors: ErrorRule = field(default_factory=ErrorRule)
    stall: FaultRule = field(default_factory=FaultRule)

    def describe(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "latency_operations": self.latency_operations,
            "throttle": self.throttle.describe(),
            "errors": self.errors.describe(),
            "stall": self.stall.describe(),
        }

    def latency_applies(self, op: str) -> bool:
        if self.latency_ms <= 0:
            return False
        if self.latency_operations is None:
            return op in VAULT_OPERATIONS
        return op in self.latency_operations


def _number(data: dict[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdminInputError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise AdminInputError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def _operations(data: dict[str, Any], name: str = "operations") -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AdminInputError(f"{name} must be a list of operation names or null")
    unknown = sorted(set(value) - ALL_OPERATIONS)
    if unknown:
        raise AdminInputError(
            f"unknown operation(s) {', '.join(unknown)}; known: {', '.join(sorted(ALL_OPERATIONS))}"
        )
    return list(value)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise AdminInputError(f"{name} must be an object")
    allowed = {
        "throttle": {
            "next",
            "probability",
            "operations",
            "retry_after",
            "preset",
            "limits",
            "window_seconds",
        },
        "errors": {"next", "probability", "operations", "status"},
        "stall": {"next", "probability", "operations"},
    }[name]
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise AdminInputError(f"unknown field(s) in {name}: {', '.join(unknown)}")
    return value


def _rule_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "next": int(_number(data, "next", 0, low=0, high=1e9)),
        "probability": _number(data, "probability", 0.0, low=0.0, high=1.0),
        "operations": _operations(data),
    }


def parse_faults(data: Any) -> Faults:
    """Build a fault configuration from admin JSON, rejecting anything unknown or out of range."""
    if not isinstance(data, dict):
        raise AdminInputError("the fault configuration must be a JSON object")
    unknown = sorted(
        set(data) - {"latency_ms", "latency_operations", "throttle", "errors", "stall"}
    )
    if unknown:
        raise AdminInputError(f"unknown fault field(s): {', '.join(unknown)}")
    throttle = _section(data, "throttle")
    errors = _section(data, "errors")
    stall = _section(data, "stall")
    preset = throttle.get("preset")
    if preset not in (None, "azure"):
        raise AdminInputError(f"unknown throttle preset {preset!r}; the only preset is 'azure'")
    limits = throttle.get("limits") or {}
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in limits.items()
    ):
        raise AdminInputError("throttle.limits must map a limit class to a non-negative integer")
    unknown_classes = sorted(set(limits) - set(AZURE_LIMITS))
    if unknown_classes:
        raise AdminInputError(
            f"unknown limit class(es) {', '.join(unknown_classes)}; "
            f"known: {', '.join(AZURE_LIMITS)}"
        )
    retry_after = throttle.get("retry_after")
    status = int(_number(errors, "status", 503, low=409, high=599))
    if 409 < status < 500:
        raise AdminInputError(
            f"errors.status must be 409 (a concurrent operation) or 500-599, got {status}"
        )
    return Faults(
        latency_ms=_number(data, "latency_ms", 0.0, low=0.0, high=600_000.0),
        latency_operations=_operations(data, "latency_operations"),
        throttle=ThrottleRule(
            **_rule_fields(throttle),
            retry_after=None
            if retry_after is None
            else _number(throttle, "retry_after", 0, low=0, high=3600),
            preset=preset,
            limits=dict(limits),
            window_seconds=_number(throttle, "window_seconds", 10.0, low=0.001, high=3600.0),
        ),
        errors=ErrorRule(**_rule_fields(errors), status=status),
        stall=FaultRule(**_rule_fields(stall)),
    )


class WindowLimiter:
    """Sliding-window request counts per limit class, as Key Vault's throttling works."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = defaultdict(deque)

    def admit(self, limit_class: str, limit: int, window: float) -> float | None:
        """Record a request; return None if admitted, else seconds until the window frees up."""
        stamp = time.monotonic()
        seen = self._seen[limit_class]
        while seen and seen[0] <= stamp - window:
            seen.popleft()
        if len(seen) >= limit:
            return max(0.001, seen[0] + window - stamp) if seen else window
        seen.append(stamp)
        return None

    def clear(self) -> None:
        self._seen.clear()


class Counters:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = defaultdict(Counter)
        # Calls being served right now and the most seen at once, per
        # operation: lets a test check a client's concurrency bound.
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()

    def enter(self, op: str) -> None:
        self.in_flight[op] += 1
        self.peak_in_flight[op] = max(self.peak_in_flight[op], self.in_flight[op])

    def leave(self, op: str) -> None:
        self.in_flight[op] -= 1

    def describe(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "responses": {op: dict(statuses) for op, statuses in self.responses.items()},
            "peak_in_flight": dict(self.peak_in_flight),
        }

    def clear(self) -> None:
        self.requests.clear()
        self.responses.clear()
        # Calls still running keep counting, so a peak starts at what is in flight.
        self.peak_in_flight = Counter({op: n for op, n in self.in_flight.items() if n})


# --- a minimal JWT issuer/verifier for federated (workload identity) assertions ---------------


def _json_b64(data: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(data, separators=(",", ":")).encode())


class AssertionRejected(ValueError):
    """A client assertion was rejected; the message is Entra-like and safe to return."""


class FederationIssuer:
    """Signs service-account-like JWTs, standing in for the cluster's OIDC issuer."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = uuid.uuid4().hex[:16]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def mint(
        self, subject: str, *, audience: str = FEDERATION_AUDIENCE, lifetime: int = 86400
    ) -> str:
        issued = now()
        header = {"alg": "ES256", "typ": "JWT", "kid": self.key_id}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": [audience],
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
        }
        signing_input = f"{_json_b64(header)}.{_json_b64(claims)}".encode()
        digest = hashes.Hash(hashes.SHA256())
        digest.update(signing_input)
        signature = KeyMaterial("EC", self._key).sign("ES256", digest.finalize())
        return f"{signing_input.decode()}.{b64url_encode(signature)}"


def verify_jwt(token: str, keys: list[PublicKeyTypes]) -> dict[str, Any]:
    """Check a compact JWS (RS256/PS256/ES256/ES384) against any of keys; return its claims."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(b64url_decode(head_b64))
        claims = json.loads(b64url_decode(body_b64))
        signature = b64url_decode(sig_b64)
    except (ValueError, TypeError) as exc:
        raise AssertionRejected("AADSTS50027: JWT token is invalid or malformed.") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AssertionRejected("AADSTS50027: JWT token is invalid or malformed.")
    alg = header.get("alg")
    signing_input = f"{head_b64}.{body_b64}".encode()
    for key in keys:
        try:
            if alg in ("RS256", "PS256") and isinstance(key, rsa.RSAPublicKey):
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg == "RS256"
                    else padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256.digest_size)
                )
                key.verify(signature, signing_input, pad, hashes.SHA256())
                return claims
            if alg in ("ES256", "ES384") and isinstance(key, ec.EllipticCurvePublicKey):
                half = len(signature) // 2
                der = encode_dss_signature(
                    int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
                )
                algorithm = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
                key.verify(der, signing_input, ec.ECDSA(algorithm))
                return claims
        except Exception:  # noqa: S112 - try the next trusted key
            continue
    raise AssertionRejected(
        "AADSTS700211: No matching federated identity record found for presented assertion."
    )


def load_public_key(pem: str) -> PublicKeyTypes:
    try:
        return serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise AdminInputError("public_key_pem is not a PEM public key") from exc


def new_secret() -> str:
    return secrets.token_urlsafe(24)
