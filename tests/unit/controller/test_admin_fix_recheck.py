"""Which Key Vault failures an issuer re-checks slowly (docs/api.md: "rechecked no
sooner than every 2 minutes"): the ones only an administrator fixes. A refused
credential, a missing permission (Azure RBAC or an access policy) and a vault
firewall would not change in seconds, and re-checking them every few seconds
spends the vault's request budget that every issuer on it shares; an outage or
throttling is retried on the reconciler's backoff or Key Vault's Retry-After.
"""

from __future__ import annotations

import pytest

from akv_issuer.controller.api import IssuerReason
from akv_issuer.controller.core import ADMIN_FIX_RECHECK, keyvault_failure
from akv_issuer.keyvault import Cause, ErrorKind, KeyVaultError


def failure(err: KeyVaultError) -> tuple[IssuerReason, float | None]:
    failed = keyvault_failure(err, "key 'ca'", IssuerReason.KEY_NOT_FOUND)
    return failed.reason, failed.retry_after


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (
            KeyVaultError(
                ErrorKind.FORBIDDEN, "AADSTS7000215: bad secret", cause=Cause.CREDENTIAL_REFUSED
            ),
            IssuerReason.FORBIDDEN,
        ),
        (
            KeyVaultError(
                ErrorKind.FORBIDDEN,
                "Caller is not authorized",
                status=403,
                code="Forbidden",
                inner_code="ForbiddenByRbac",
                missing_permission="Microsoft.KeyVault/vaults/keys/sign/action",
            ),
            IssuerReason.FORBIDDEN,
        ),
        (
            KeyVaultError(ErrorKind.FORBIDDEN, "no sign permission", status=403, code="Forbidden"),
            IssuerReason.FORBIDDEN,
        ),
        (
            KeyVaultError(
                ErrorKind.FORBIDDEN,
                "Client address is not authorized",
                status=403,
                code="Forbidden",
                inner_code="ForbiddenByFirewall",
                cause=Cause.NETWORK_RULES,
            ),
            IssuerReason.KEY_VAULT_NETWORK_DENIED,
        ),
    ],
    ids=["credential-refused", "missing-data-action", "forbidden", "firewall"],
)
def test_what_an_administrator_fixes_is_rechecked_no_sooner_than_two_minutes(
    err: KeyVaultError, reason: IssuerReason
) -> None:
    assert ADMIN_FIX_RECHECK == 120.0
    assert failure(err) == (reason, ADMIN_FIX_RECHECK)


def test_an_outage_or_throttling_is_retried_on_backoff_or_retry_after() -> None:
    throttled = KeyVaultError(ErrorKind.THROTTLED, "Too many requests", status=429, retry_after=7.0)
    down = KeyVaultError(ErrorKind.TRANSIENT, "connection refused")
    assert failure(throttled) == (IssuerReason.THROTTLED, 7.0)
    assert failure(down) == (IssuerReason.KEY_VAULT_UNREACHABLE, None)
