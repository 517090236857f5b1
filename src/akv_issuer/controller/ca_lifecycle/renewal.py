"""Renewing the CA certificate before it expires (issue: the CA's whole life).

A CA held in Key Vault lives for years, its certificate for less. Once the
certificate is inside its renewal window (``spec.caRenewal.renewBefore``, by
default the last third of its lifetime, as cert-manager renews certificates):

- a self-signed root whose issuer has ``caRenewal.automatic: true`` is renewed
  by the controller: a new certificate for the *same* key version, with the
  same subject and path length, signed through Key Vault like ``ca create``
  does, stored as a new version of the CA secret, and used at once. Relying
  parties that trust the root by its key and subject (the usual case) keep
  trusting what it signs; the old and the new certificate are both valid
  during the overlap. Storing needs the ``secrets/set`` permission, which is
  why this is opt-in per issuer;
- an intermediate cannot renew itself (its parent must sign), and a root
  without ``automatic`` is the operator's to renew: both are reported (the
  ``CARenewalDue`` condition, a Warning event naming the commands to run, the
  ``akv_issuer_ca_renewal_due`` metric) while signing goes on with the still
  valid certificate.

A renewal that fails (say, the identity may not set secrets) is reported the
same way and tried again at the next check; it never makes the issuer un-Ready
while the current certificate is valid.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from akv_issuer.ca import CAVault, RootTemplate, recertify_root
from akv_issuer.controller.api import IssuerSpec, format_time
from akv_issuer.controller.core import (
    DUE_INTERMEDIATE,
    DUE_MANUAL,
    RENEWAL_FAILED,
    RENEWED,
    KeyVaultGateway,
    Renewal,
    keyvault_failure_text,
)
from akv_issuer.keyvault import AuthConfig, KeyInfo, KeyVaultError
from akv_issuer.pki import CAChain, PKIError, SignatureAlgorithm, is_self_signed


def renewal_due_at(ca: x509.Certificate, renew_before: dt.timedelta | None) -> dt.datetime:
    """When renewal of ``ca`` is due: ``renew_before`` ahead of its NotAfter, by
    default a third of its lifetime ahead."""
    not_after = ca.not_valid_after_utc
    lifetime = not_after - ca.not_valid_before_utc
    return not_after - (renew_before if renew_before is not None else lifetime / 3)


class Renewer:
    """The CA renewal ``ca_lifecycle.setup`` plugs into the issuer check
    (``core.CARenewal``): :func:`renew_if_due` through this process's Key Vault
    gateway (counted, the renewal's sign in a sign slot and fenced)."""

    def __init__(self, keyvault: KeyVaultGateway) -> None:
        self._kv = keyvault

    async def __call__(
        self,
        spec: IssuerSpec,
        auth: AuthConfig,
        key: KeyInfo,
        algorithm: SignatureAlgorithm,
        ca: CAChain,
        now: dt.datetime,
        /,
    ) -> tuple[CAChain, Renewal | None]:
        return await renew_if_due(self._kv, spec, auth, key, algorithm, ca, now)


async def renew_if_due(
    keyvault: KeyVaultGateway,
    spec: IssuerSpec,
    auth: AuthConfig,
    key: KeyInfo,
    algorithm: SignatureAlgorithm,
    ca: CAChain,
    now: dt.datetime,
) -> tuple[CAChain, Renewal | None]:
    """The CA chain to sign with, and what renewal did (None: not due).

    ``NotLeading`` from the gateway's fence propagates: the check is abandoned,
    not reported as a failed renewal; the new leader renews."""
    due_at = renewal_due_at(ca.ca, spec.ca_renewal.renew_before)
    if now < due_at:
        return ca, None
    expires = format_time(ca.not_after)
    if len(ca.certificates) != 1 or not is_self_signed(ca.ca):
        return ca, Renewal(
            DUE_INTERMEDIATE,
            f"the intermediate CA certificate expires at {expires}: create a CSR with "
            f"`akv-issuer ca csr --vault-url {spec.key_vault_base_url} --key-name "
            f"{spec.key_name} --common-name ...`, have its parent sign it and store the chain "
            f"with `akv-issuer ca import ... --chain <file>`",
        )
    if not spec.ca_renewal.automatic:
        create = (
            f"`akv-issuer ca create --vault-url {spec.key_vault_base_url} --key-name "
            f"{spec.key_name}"
        )
        if spec.ca_source_explicit is not None:
            # caSource rules automatic renewal out (see api.spec_parser): say where to store it.
            how = f"{create} --out ca.pem ...` (same key) and store it in {spec.ca_description}"
        else:
            how = (
                f"{create} --upload-secret {spec.ca_secret_name} ...` (same key), or set "
                "spec.caRenewal.automatic: true"
            )
        return ca, Renewal(
            DUE_MANUAL, f"the root CA certificate expires at {expires}: renew it with {how}"
        )
    if spec.ca_secret_version:
        return ca, Renewal(
            RENEWAL_FAILED,
            f"the root CA certificate expires at {expires}, but caSecretVersion is pinned, so "
            "a renewed certificate stored as a new secret version would not be used",
        )
    try:
        renewed = await _renew_root(keyvault, spec, auth, key, algorithm, ca, now)
    except KeyVaultError as err:
        return ca, Renewal(
            RENEWAL_FAILED,
            f"renewing the root CA certificate (expires at {expires}) failed: "
            f"{keyvault_failure_text(err)}; retried at the next check",
        )
    except PKIError as err:
        return ca, Renewal(RENEWAL_FAILED, f"renewing the root CA certificate failed: {err.reason}")
    new, version = renewed
    return new, Renewal(
        RENEWED,
        f"renewed the root CA certificate (serial {new.ca.serial_number:x}, valid until "
        f"{format_time(new.not_after)}), stored as version {version} of secret "
        f"{spec.ca_secret_name}; the previous one expires at {expires}",
    )


async def _renew_root(
    keyvault: KeyVaultGateway,
    spec: IssuerSpec,
    auth: AuthConfig,
    key: KeyInfo,
    algorithm: SignatureAlgorithm,
    ca: CAChain,
    now: dt.datetime,
) -> tuple[CAChain, str]:
    """The same key version's root again (:func:`akv_issuer.ca.recertify_root`),
    as ``ca rotate`` makes one for a new version."""
    template = RootTemplate.renewing(ca.ca, lifetime=spec.ca_renewal.lifetime)
    # Through the gateway: every call counted, and the sign in a sign slot and
    # fenced like every other sign, so two replicas never both renew.
    vault = CAVault(keyvault, spec.key_vault_base_url, auth)
    renewed = await recertify_root(
        vault,
        spec.ca_secret_name,
        key,
        template,
        algorithm,
        vault.signer(key),
        now,
        tags={"renewed-by": "azure-keyvault-issuer"},
    )
    return renewed.chain, renewed.secret_version
