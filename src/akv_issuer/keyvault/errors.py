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

    THROTTLED: the vault answered 429; back off (``retry_after`` if known).
    TRANSIENT: 5xx, 408, timeouts, network and token-endpoint failures; retry later.
    NOT_FOUND: the vault answered 404 (no such key, secret or version).
    FORBIDDEN: the vault answered 401 or 403 (authentication refused, the identity
        lacks the permission, or the key is disabled or refuses the operation).
    PERMANENT: any other failure that repeating cannot fix (bad parameters, a key
        type or algorithm that does not fit, a configuration error).

    Only THROTTLED and TRANSIENT are retryable.
    """

    THROTTLED = "throttled"
    TRANSIENT = "transient"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    PERMANENT = "permanent"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)


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
    ) -> None:
        self.kind = kind
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
            f"message={self.message!r}, retry_after={self.retry_after!r})"
        )

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (THROTTLED, TRANSIENT)."""
        return self.kind.retryable

    @property
    def metric_label(self) -> str:
        """The outcome as a metric label: the HTTP status when the vault answered
        (``"404"``, ``"429"``), else the kind (``"transient"``, ``"permanent"``)."""
        return str(self.status) if self.status is not None else self.kind.value


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


# How azure-identity words a token endpoint's refusal inside a chained
# credential's message: "<Credential>: Microsoft Entra ID error '(<code>) <description>'".
_CHAINED_ENTRA_ERROR = re.compile(
    r"Microsoft Entra ID error '\((?P<code>[\w-]+)\) (?P<desc>[^\n]*)"
)


def _entra_refusal_in_chain(text: str) -> tuple[str, str] | None:
    """(OAuth error code, first line of Entra's description) from a chain's message."""
    match = _CHAINED_ENTRA_ERROR.search(text)
    if match is None:
        return None
    description = match.group("desc").rstrip()
    description = description.removesuffix("'").strip()
    return match.group("code"), description[:500]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:500]


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


def classify(exc: BaseException, *, operation: str, vault_url: str) -> KeyVaultError:
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
            ErrorKind.TRANSIENT, "no answer in time", code="Timeout", operation=operation
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
            # The token endpoint refused or failed: credentials may refresh or Entra may recover.
            return KeyVaultError(
                ErrorKind.TRANSIENT,
                f"token request failed: {message}",
                code=code or "TokenAcquisitionFailed",
                operation=operation,
                retry_after=retry_after,
            )
        kind = _kind_of_status(status)
        return KeyVaultError(
            kind,
            message,
            status=status,
            code=code,
            retry_after=retry_after,
            operation=operation,
            inner_code=inner,
        )
    if isinstance(exc, ClientAuthenticationError):
        refusal = _entra_refusal_in_chain(str(exc.message or exc))
        if refusal is not None:
            # A credential chain (DefaultAzureCredential, the ambient chain) keeps
            # Entra's answer only as text: the same error as a direct refusal.
            code, description = refusal
            return KeyVaultError(
                ErrorKind.TRANSIENT,
                f"token request failed: {description}",
                code=code,
                operation=operation,
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
        )
    return KeyVaultError(
        ErrorKind.PERMANENT,
        _first_line(str(exc)) or type(exc).__name__,
        code=type(exc).__name__,
        operation=operation,
    )
