"""Key Vault failures, classified by what the caller should do about them.

The meaning of an HTTP status (or of a failure without one) is decided here and
nowhere else: callers branch on :class:`ErrorKind` and ``retryable``, never on
``status``, so the controller and the CLI cannot disagree about what a 403 or a
404 from the vault means. ``status`` stays on the error for messages, and
``metric_label`` names the outcome for per-status counters.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import json
import re
import time
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from .auth import AssertionProviderError

# KeyVaultError.code when an AssertionProvider could not give a token to exchange.
SERVICE_ACCOUNT_TOKEN_FAILED = "ServiceAccountTokenFailed"  # noqa: S105 -- a code, not a password


class ErrorKind(enum.Enum):
    """What a failed call means for the caller.

    THROTTLED: the vault (or Entra ID) answered 429; back off (``retry_after`` if known).
    TRANSIENT: 5xx, 408, a 409 conflict with a concurrent operation, timeouts,
        network failures, Entra ID busy or unreachable; retry later.
    NOT_FOUND: the vault answered 404 (no such key, secret or version).
    FORBIDDEN: the vault answered 401 or 403 (authentication refused, the identity
        lacks the permission, the key is disabled or refuses the operation, the
        firewall), or Entra ID refused the credential (see :class:`Cause`).
    PERMANENT: any other failure that repeating cannot fix (bad parameters, a key
        type or algorithm that does not fit, a configuration error).

    Only THROTTLED and TRANSIENT are retryable. A TRANSIENT failure may also be
    ``unreachable`` (see :attr:`KeyVaultError.unreachable`).
    """

    THROTTLED = "throttled"
    TRANSIENT = "transient"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    PERMANENT = "permanent"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)


class Cause(enum.Enum):
    """What a failure is about, where that says more than its kind: the controller
    names a more specific Ready reason for it and the CLI a more specific hint.

    CREDENTIAL_REFUSED (FORBIDDEN): Entra ID refused the credential itself (the
        AADSTS codes of a wrong secret, an unknown application or tenant, a
        federated credential that does not match, an invalid scope); only an
        administrator can fix it.
    DISABLED (FORBIDDEN): the vault refuses the operation because the key, secret
        or certificate is disabled, or the key is outside its nbf/exp (403
        ``KeyDisabled``, ``SecretDisabled``, ``KeyExpired``).
    NETWORK_RULES (FORBIDDEN): the vault's firewall refuses the caller's address
        (403 ``ForbiddenByFirewall``), or its public access is off
        (``ForbiddenByConnection``).
    API_VERSION (PERMANENT): the vault does not support the requested api-version
        (400 ``BadParameter`` naming the version).
    SOFT_DELETED (PERMANENT): the name is held by a soft-deleted object (409
        ``Conflict``): it must be recovered or purged before the name is reused.
    """

    CREDENTIAL_REFUSED = "credential_refused"
    DISABLED = "disabled"
    NETWORK_RULES = "network_rules"
    API_VERSION = "api_version"
    SOFT_DELETED = "soft_deleted"


class KeyVaultError(Exception):
    """A failed Key Vault (or token) call. Carries no tokens, secrets or key material."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        operation: str | None = None,
        inner_code: str | None = None,
        cause: Cause | None = None,
        missing_permission: str | None = None,
        unreachable: bool = False,
    ) -> None:
        self.kind = kind
        # The vault could not be reached or did not answer (TRANSIENT only): nothing was
        # done (connection refused, DNS, TLS connect, the 502/503/504 Key Vault answers
        # before doing anything) or the outcome is unknown (connection reset, no answer
        # in time). A caller with another vault to go to (a CA pool's other members)
        # goes there at once rather than retrying this one; an unknown outcome is safe
        # to redo elsewhere only for a call that may be repeated (a sign).
        self.unreachable = unreachable and kind is ErrorKind.TRANSIENT
        self.cause = cause
        # The permission a 403 says the identity lacks, when the vault names it: the
        # Azure RBAC data action ("Microsoft.KeyVault/vaults/keys/sign/action") or the
        # access-policy permission ("keys sign").
        self.missing_permission = missing_permission
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.operation = operation
        self.inner_code = inner_code
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        code = f"{self.code}" if self.code else self.kind.value
        inner = f"/{self.inner_code}" if self.inner_code else ""
        after = f" (retry after {self.retry_after:g} s)" if self.retry_after is not None else ""
        return f"{where}{status}{code}{inner}: {self.message}{after}"

    def __repr__(self) -> str:
        return (
            f"KeyVaultError(kind={self.kind.name}, status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retry_after={self.retry_after!r}, cause={self.cause!r})"
        )

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (THROTTLED, TRANSIENT)."""
        return self.kind.retryable

    @property
    def metric_label(self) -> str:
        """The outcome as a metric label: the HTTP status when the vault answered
        (``"404"``, ``"429"``), else the cause (``"credential_refused"``: Entra ID
        refused the credential) or the kind (``"transient"``, ``"permanent"``)."""
        if self.status is not None:
            return str(self.status)
        return self.cause.value if self.cause is not None else self.kind.value


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_body(response: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, inner code) from a Key Vault or Entra error body."""
    try:
        body = json.loads(response.text())
    except (ValueError, TypeError, AttributeError):
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    if isinstance(error, dict):
        inner = error.get("innererror") or error.get("innerError")
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        return error.get("code"), error.get("message"), inner_code
    if isinstance(error, str):  # Entra ID token endpoint
        return error, body.get("error_description"), None
    return None, None, None


# OAuth errors of a token endpoint that is busy or failing, not refusing (RFC 6749 5.2,
# Entra ID's error codes page): retried like a network failure.
_ENTRA_BUSY = frozenset({"temporarily_unavailable", "server_error"})
# "Microsoft Entra ID error '(invalid_client) AADSTS7000215: ..." as azure-identity
# words a token endpoint refusal when the response itself is not kept (credential chains).
_ENTRA_MESSAGE = re.compile(r"\((?P<error>[a-z_]+)\) (?P<line>AADSTS\d+:[^\r\n]*)")
# azure-identity refusing, before any request, a tenant other than the credential's own
# (the vault's challenge names the vault's tenant).
_OTHER_TENANT = re.compile(r"not configured to acquire tokens for tenant (?P<tenant>[^\s.]+)")
# Key Vault's 400 BadParameter for an api-version it does not serve: "The specified
# version (7.4) is not recognized. Consider using the latest supported version (7.1)."
# (or one naming the api-version parameter).
_API_VERSION = re.compile(r"specified version \(.*\) is not recognized|api-version")
# 403 inner codes (Key Vault's common error codes page, and what the vault answers for
# disabled objects): what the caller must change is not the identity's permissions.
# KeyExpired / KeyNotYetValid: outside the key's exp / nbf (the emulator's names; the
# message is what a user reads either way).
_DISABLED_INNER = frozenset(
    {"KeyDisabled", "SecretDisabled", "CertificateDisabled", "KeyExpired", "KeyNotYetValid"}
)
# ForbiddenByConnection: public network access disabled, no approved private endpoint.
_FIREWALL_INNER = frozenset({"ForbiddenByFirewall", "ForbiddenByConnection"})
# A missing permission, as the vault names it in a 403's message. Azure RBAC:
# "Caller is not authorized to perform action on resource.\r\n...Action:
# 'Microsoft.KeyVault/vaults/keys/sign/action'\r\nResource: '...'"; access policies:
# "The user, group or application '...' does not have keys sign permission on key vault".
_RBAC_ACTION = re.compile(r"Action: '(?P<permission>Microsoft\.KeyVault/[^']+)'", re.IGNORECASE)
_POLICY_PERMISSION = re.compile(r"does not have (?P<permission>[\w ]+?) permission on key vault")


def missing_permission(status: int | None, message: str) -> str | None:
    """The permission a 403 from the vault says the identity lacks, if it names one."""
    if status != 403:
        return None
    found = _RBAC_ACTION.search(message) or _POLICY_PERMISSION.search(message)
    return found["permission"] if found else None


def _entra_body(response: Any) -> tuple[str | None, str | None, list[int]]:
    """(OAuth error, first line of error_description, error_codes) of an Entra answer."""
    try:
        body = json.loads(response.text())
    except (ValueError, TypeError, AttributeError):
        return None, None, []
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None, None, []
    codes = [c for c in body.get("error_codes") or [] if isinstance(c, int)]
    line = _first_line(str(body.get("error_description") or ""))
    if codes and line and not line.startswith("AADSTS"):
        line = f"AADSTS{codes[0]}: {line}"
    return body["error"], line or None, codes


def _token_failure(
    error: str | None,
    line: str | None,
    status: int | None,
    retry_after: float | None,
    operation: str,
) -> KeyVaultError:
    """A token endpoint's answer: busy (429, 5xx, temporarily_unavailable) is retried;
    any other OAuth error is Entra ID refusing the credential, which only an
    administrator can fix (the AADSTS line says what: a wrong secret, an unknown
    application or tenant, no matching federated credential, an invalid scope)."""
    if status == 429:
        return KeyVaultError(
            ErrorKind.THROTTLED,
            f"Entra ID is throttling token requests: {line or error or 'HTTP 429'}",
            code=error or "TokenRequestThrottled",
            retry_after=retry_after,
            operation=operation,
        )
    if error is None or error in _ENTRA_BUSY or (status is not None and status >= 500):
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            f"token request failed: {line or error or f'HTTP {status}'}",
            code=error or "TokenAcquisitionFailed",
            retry_after=retry_after,
            operation=operation,
        )
    return KeyVaultError(
        ErrorKind.FORBIDDEN,
        f"Entra ID refused the credential: {line or error}",
        code=error,
        operation=operation,
        cause=Cause.CREDENTIAL_REFUSED,
    )


def _vault_cause(
    status: int | None, code: str | None, message: str, inner: str | None
) -> Cause | None:
    if status == 403 and inner in _DISABLED_INNER:
        return Cause.DISABLED
    if status == 403 and inner in _FIREWALL_INNER:
        return Cause.NETWORK_RULES
    lowered = message.lower()
    if status == 400 and code == "BadParameter" and _API_VERSION.search(lowered):
        return Cause.API_VERSION
    if status == 409 and (
        inner == "ObjectIsDeletedButRecoverable" or "deleted but recoverable" in lowered
    ):
        return Cause.SOFT_DELETED
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:500]


# What a gateway or front end answers for a vault it could not reach or that is down
# (Bad Gateway, Service Unavailable, Gateway Timeout): Key Vault did nothing.
_UNAVAILABLE = frozenset({502, 503, 504})


def _kind_of_status(status: int | None) -> ErrorKind:
    """The kind of an HTTP error answered by the vault itself."""
    if status == 429:
        return ErrorKind.THROTTLED
    if status is not None and (status >= 500 or status == 408):
        return ErrorKind.TRANSIENT
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (401, 403):
        return ErrorKind.FORBIDDEN
    return ErrorKind.PERMANENT


def classify(exc: Exception, *, operation: str, vault_url: str) -> KeyVaultError:
    """Map an SDK, transport or timeout exception to a KeyVaultError."""
    if isinstance(exc, KeyVaultError):
        return exc
    if isinstance(exc, AssertionProviderError):
        # No token to exchange (auth.serviceAccountRef): the message says why.
        return KeyVaultError(
            ErrorKind.TRANSIENT if exc.retryable else ErrorKind.FORBIDDEN,
            exc.message,
            code=SERVICE_ACCOUNT_TOKEN_FAILED,
            operation=operation,
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            "no answer in time",
            code="Timeout",
            operation=operation,
            unreachable=True,
        )
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        response = exc.response
        status = exc.status_code
        code, message, inner = _error_body(response)
        request_url = str(getattr(getattr(response, "request", None), "url", "") or "")
        # The token endpoint may share the vault's host (an emulator, a proxy): compare paths too.
        from_vault = request_url.lower().startswith(
            (
                f"{vault_url.lower()}/keys",
                f"{vault_url.lower()}/secrets",
                f"{vault_url.lower()}/certificates",
            )
        )
        message = message or _first_line(exc.message or "") or f"HTTP {status}"
        retry_after = parse_retry_after(getattr(response, "headers", {}).get("Retry-After"))
        if isinstance(exc, ClientAuthenticationError) and not from_vault:
            error, line, _ = _entra_body(response)
            return _token_failure(error, line, status, retry_after, operation)
        cause = _vault_cause(status, code, message, inner)
        kind = _kind_of_status(status)
        permission = missing_permission(status, message) if cause is None else None
        if permission is not None:
            # Azure RBAC's refusal runs over several CRLF-separated lines (caller,
            # action, resource, assignment...): one line, naming what is missing.
            message = f"{_first_line(message)} (missing permission: {permission})"
        if cause is Cause.SOFT_DELETED or cause is Cause.API_VERSION:
            kind = ErrorKind.PERMANENT
        elif status == 409:
            # Key Vault's common error codes: a 409 ConflictError is "multiple operations
            # on the same item"; the documented remedy is to retry.
            kind = ErrorKind.TRANSIENT
        return KeyVaultError(
            kind,
            message,
            status=status,
            code=code,
            retry_after=retry_after,
            operation=operation,
            inner_code=inner,
            cause=cause,
            missing_permission=permission,
            unreachable=status in _UNAVAILABLE,
        )
    if isinstance(exc, ClientAuthenticationError):
        text = str(exc.message or exc)
        found = _ENTRA_MESSAGE.search(text)
        if found is not None:
            # A credential chain keeps the refusal's text, not the response.
            # azure-identity quotes the description: '(<error>) <description>'.
            line = found["line"].rstrip().removesuffix("'")
            return _token_failure(found["error"], line, None, None, operation)
        other_tenant = _OTHER_TENANT.search(text)
        if other_tenant is not None:
            # The vault's challenge names its tenant; azure-identity asks no token for a
            # tenant other than the identity's own (a wrong tenant ID in the configuration).
            return KeyVaultError(
                ErrorKind.FORBIDDEN,
                f"the vault belongs to tenant {other_tenant['tenant']}, not to the tenant "
                f"configured for the identity: set the identity's tenant ID to the vault's",
                code="TenantMismatch",
                operation=operation,
                cause=Cause.CREDENTIAL_REFUSED,
            )
        # No HTTP response: the credential could not even ask (no config, no reachable endpoint).
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            f"could not get a token: {_first_line(str(exc.message or exc))}",
            code="CredentialUnavailable",
            operation=operation,
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            _first_line(str(exc.message or exc)) or type(exc).__name__,
            code="ConnectionError",
            operation=operation,
            unreachable=True,
        )
    if isinstance(exc, ValueError) and "challenge" in str(exc).lower():
        return KeyVaultError(
            ErrorKind.PERMANENT,
            _first_line(str(exc)),
            code="ChallengeResourceMismatch",
            operation=operation,
        )
    if isinstance(exc, AzureError | OSError):
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            _first_line(str(exc)) or type(exc).__name__,
            code=type(exc).__name__,
            operation=operation,
            # A socket's failure (refused, reset, DNS, TLS); not an SDK error of its own.
            unreachable=isinstance(exc, OSError),
        )
    return KeyVaultError(
        ErrorKind.PERMANENT,
        _first_line(str(exc)) or type(exc).__name__,
        code=type(exc).__name__,
        operation=operation,
    )
