"""Why an issuer cannot sign: :class:`CheckFailed` and the Ready reason of each failure.

The issuer check and signing meet the same Key Vault errors and CA faults; the
mapping to an issuer's Ready reason is written once, here.
"""

from __future__ import annotations

from akv_issuer.controller.api import IssuerReason
from akv_issuer.keyvault import SERVICE_ACCOUNT_TOKEN_FAILED, Cause, ErrorKind, KeyVaultError
from akv_issuer.pki import CAError, CAErrorKind


class CheckFailed(Exception):
    """The issuer cannot sign. ``retryable``: check again soon with backoff;
    else only a spec change (or the periodic re-check) can help."""

    def __init__(
        self,
        reason: IssuerReason,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


def keyvault_failure(err: KeyVaultError, what: str, not_found: IssuerReason) -> CheckFailed:
    """Map a Key Vault error met while reading ``what`` to an issuer reason.

    The keyvault layer has already said what the error means (its kind); this
    only names the Ready reason for it. ``not_found`` is the reason of a missing
    object, which depends on what was read (the key or the CA secret).
    """
    detail = f"{what}: {err.message}" if err.message else what
    if err.code:
        detail += f" ({err.code})"
    if err.code == SERVICE_ACCOUNT_TOKEN_FAILED:
        # auth.serviceAccountRef: no ServiceAccount token to exchange.
        return CheckFailed(IssuerReason.SERVICE_ACCOUNT_TOKEN_FAILED, err.message)
    match err.cause:
        case Cause.CREDENTIAL_REFUSED:
            # Entra ID refused the credential itself (the AADSTS line): no federated
            # credential for this subject/audience, unknown client or tenant, wrong
            # secret. No outage: re-checked slowly until an administrator fixes it.
            return CheckFailed(IssuerReason.FORBIDDEN, detail, retry_after=ADMIN_FIX_RECHECK)
        case Cause.NETWORK_RULES:
            return CheckFailed(
                IssuerReason.KEY_VAULT_NETWORK_DENIED,
                f"{what}: the vault's network rules (firewall) refuse this controller's "
                f"address: {err.message}",
                retry_after=ADMIN_FIX_RECHECK,
            )
        case Cause.DISABLED:
            if not_found == IssuerReason.KEY_NOT_FOUND:
                return CheckFailed(IssuerReason.KEY_DISABLED, f"{what} is disabled: {err.message}")
            return CheckFailed(
                IssuerReason.CA_SECRET_DISABLED, f"{what} is disabled: {err.message}"
            )
        case Cause.API_VERSION:
            return CheckFailed(
                IssuerReason.KEY_VAULT_API_VERSION_UNSUPPORTED,
                f"the vault refuses the Key Vault API version the controller uses: "
                f"{err.message} (set AKV_KEYVAULT_API_VERSION to a version the vault supports)",
                retryable=False,
            )
        case _:
            pass
    match err.kind:
        case ErrorKind.THROTTLED:
            return CheckFailed(IssuerReason.THROTTLED, detail, retry_after=err.retry_after)
        case ErrorKind.TRANSIENT:
            return CheckFailed(
                IssuerReason.KEY_VAULT_UNREACHABLE, detail, retry_after=err.retry_after
            )
        # A refused permission is fixed by an administrator's role assignment
        # (which itself takes minutes to apply): re-checked slowly like a
        # refused credential, not every few seconds against the vault's budget.
        case ErrorKind.FORBIDDEN if err.missing_permission:
            return CheckFailed(
                IssuerReason.FORBIDDEN,
                forbidden_message(err, what),
                retry_after=ADMIN_FIX_RECHECK,
            )
        case ErrorKind.FORBIDDEN:
            return CheckFailed(IssuerReason.FORBIDDEN, detail, retry_after=ADMIN_FIX_RECHECK)
        case ErrorKind.NOT_FOUND:
            return CheckFailed(not_found, detail)
        case ErrorKind.PERMANENT:
            return CheckFailed(
                IssuerReason.KEY_NOT_USABLE
                if not_found == IssuerReason.KEY_NOT_FOUND
                else IssuerReason.CA_INVALID,
                detail,
            )


def forbidden_message(err: KeyVaultError, what: str) -> str:
    """The message of a 403 naming the permission the identity lacks (the Azure RBAC
    data action, or the access-policy permission), and what to do about it."""
    permission = err.missing_permission or "?"
    code = "/".join(c for c in (err.code, err.inner_code) if c)
    if permission.lower().startswith("microsoft."):
        grant = (
            f"the data action {permission}: assign a role that grants it, scoped to this "
            f"object (docs/azure-roles.md)"
        )
    else:
        grant = f"the access-policy permission {permission!r}: add it to the vault's access policy"
    return f"{what}: Key Vault refused ({code}): the identity lacks {grant}"


# Seconds before re-checking an issuer that only an administrator can fix (a
# credential Entra ID refuses, a missing permission, a vault firewall): no faster than this, so a
# broken identity does not ask Entra ID every few seconds; the reconciler's
# backoff (at most 5 minutes) still applies above it.
ADMIN_FIX_RECHECK = 120.0

_CA_REASONS = {
    CAErrorKind.INVALID: IssuerReason.CA_INVALID,
    CAErrorKind.NOT_A_CA: IssuerReason.CA_INVALID,
    CAErrorKind.MISMATCH: IssuerReason.CA_KEY_MISMATCH,
    CAErrorKind.EXPIRED: IssuerReason.CA_EXPIRED,
    CAErrorKind.NOT_YET_VALID: IssuerReason.CA_NOT_YET_VALID,
}


def ca_failure(err: CAError, what: str) -> CheckFailed:
    """Map a CA certificate that fails its checks to the issuer's Ready reason."""
    return CheckFailed(_CA_REASONS[err.kind], f"{what}: {err.reason}")
