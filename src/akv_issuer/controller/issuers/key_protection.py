"""The issuer check's step "the key stays in the HSM" (issue 24, docs/api.md "Key protection").

By default an issuer refuses a key that can leave Key Vault: one that is exportable
or has a release policy (secure key release hands the private key to whoever
satisfies the policy), with the Ready reason ``KeyExportable``. In a Managed HSM the
key version's attestation is fetched at every check and checked
(:func:`akv_issuer.keyvault.check_attestation`: this key version, its public key,
not exportable, no release policy); one that cannot be fetched or does not show
that is ``KeyAttestationFailed``, except that a passing outage (throttling, 5xx, a
network error) or a refused permission is reported as for any Key Vault call
(``Throttled``, ``KeyVaultUnreachable``, ``Forbidden`` naming the data action).

Why attestation blocks: on a Managed HSM the attestation is the proof this step
exists for, and its checks cost one call to a service that does not throttle per
operation. ``spec.allowExportableKey: true`` lets an issuer sign with such a key
anyway; the check then records what it found (the Ready message, status
``keyAttestation`` with result ``Failed``, the audit records) instead of refusing.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from akv_issuer.controller.api import IssuerReason, IssuerSpec
from akv_issuer.controller.core import (
    ADMIN_FIX_RECHECK,
    CheckFailed,
    KeyProtection,
    keyvault_failure,
)
from akv_issuer.keyvault import (
    AttestationError,
    AuthConfig,
    ErrorKind,
    KeyAttestation,
    KeyInfo,
    KeyVaultError,
    check_attestation,
    is_managed_hsm,
)


class AttestationReads(Protocol):
    """``KeyVaultAccess`` (the CLI) or the controller's gateway (counted)."""

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> KeyAttestation: ...


OPT_OUT = "set spec.allowExportableKey: true to sign with it anyway"


async def check_key_protection(
    keyvault: AttestationReads,
    spec: IssuerSpec,
    auth: AuthConfig,
    key: KeyInfo,
    now: dt.datetime,
) -> KeyProtection:
    """What the key version that signs shows about leaving Key Vault; raises
    :class:`CheckFailed` for what the issuer refuses (see the module's docstring)."""
    what = f"key {spec.key_name!r} version {key.version}"
    leaves = [
        text
        for flag, text in (
            (key.exportable, "is exportable"),
            (key.has_release_policy, "has a release policy"),
        )
        if flag
    ]
    if leaves and not spec.allow_exportable_key:
        raise CheckFailed(
            IssuerReason.KEY_EXPORTABLE,
            f"{what} {' and '.join(leaves)}: secure key release can take the private key "
            f"out of Key Vault; use a key created without exportable and release policy "
            f"(akv-issuer ca rotate --new-key-name, docs/rotation.md), or {OPT_OUT}",
            retry_after=ADMIN_FIX_RECHECK,
        )
    protection = KeyProtection(
        exportable=key.exportable, has_release_policy=key.has_release_policy, checked_at=now
    )
    if not is_managed_hsm(spec.key_vault_base_url):
        return protection
    try:
        attested = await keyvault.get_key_attestation(
            spec.key_vault_base_url, key.name, key.version, auth
        )
        summary = check_attestation(attested, kid=key.kid, public_key=key.public_key)
    except KeyVaultError as err:
        reason = f"its attestation could not be fetched: {err}"
        if spec.allow_exportable_key:
            return _with_error(protection, reason)
        if err.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMANENT) and err.cause is None:
            # Not served for this key (a vault, an HSM platform without attestation).
            raise CheckFailed(
                IssuerReason.KEY_ATTESTATION_FAILED,
                f"{what}: {reason}; nothing shows the key cannot leave the HSM; {OPT_OUT}",
                retry_after=ADMIN_FIX_RECHECK,
            ) from None
        raise keyvault_failure(
            err, f"attestation of {what}", IssuerReason.KEY_ATTESTATION_FAILED
        ) from None
    except AttestationError as err:
        if spec.allow_exportable_key:
            return _with_error(protection, err.reason)
        raise CheckFailed(
            IssuerReason.KEY_ATTESTATION_FAILED,
            f"{what}: {err.reason}; {OPT_OUT}",
            retry_after=ADMIN_FIX_RECHECK,
        ) from None
    return KeyProtection(
        exportable=key.exportable,
        has_release_policy=key.has_release_policy,
        attestation=summary,
        checked_at=now,
    )


def _with_error(protection: KeyProtection, error: str) -> KeyProtection:
    return KeyProtection(
        exportable=protection.exportable,
        has_release_policy=protection.has_release_policy,
        attestation_error=error,
        checked_at=protection.checked_at,
    )
