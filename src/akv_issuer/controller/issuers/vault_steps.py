"""The Key Vault side of the issuer check, step by step and without Kubernetes.

The controller's check (:mod:`.check`) runs these steps in order and stops at the
first that fails; ``akv-issuer check`` (:mod:`akv_issuer.cli.check`) runs the same
steps, as far as each can go, and prints every failure. Each step raises
:class:`~akv_issuer.controller.core.CheckFailed` with the issuer's Ready reason, so
both say the same thing in the same words:

1. :func:`read_key`: the key (version) exists, may be read, is enabled and within
   its validity, allows ``sign``, and fits the signature algorithm (``KeyNotFound``,
   ``Forbidden``, ``KeyDisabled``, ``KeyNotUsable``, ...);
2. :func:`read_vault_ca`: the CA certificate (chain) from a Key Vault secret or
   certificate object (``CASecretNotFound``, ``CACertificateNotFound``,
   ``CAInvalid``, ...); a Kubernetes Secret is the caller's to read;
3. :func:`match_ca`: the CA certificate is a CA, valid now and holds the key
   (version)'s public key; with ``keyVersion`` unset, an older key version the CA
   holds while the newest has no CA yet (``CAKeyMismatch``, ``CAExpired``, ...);
4. then :func:`.signing_key.issuer_algorithm` and
   :func:`.key_protection.check_key_protection` (``KeyExportable``,
   ``KeyAttestationFailed``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_issuer.ca import CAVault, KeyVersionUnreadable, VaultAccess, key_version_of_ca
from akv_issuer.controller.api import (
    IssuerReason,
    IssuerSpec,
    KeyVaultCertificateCA,
    KubernetesSecretCA,
)
from akv_issuer.controller.core import CheckFailed, ca_failure, keyvault_failure
from akv_issuer.controller.issuers.signing_key import check_usable
from akv_issuer.keyvault import (
    AuthConfig,
    CertificateInfo,
    KeyAttestation,
    KeyInfo,
    KeyVaultError,
    is_managed_hsm,
)
from akv_issuer.pki import CAChain, CAError, CAErrorKind, load_ca_chain


class VaultReads(VaultAccess, Protocol):
    """What the steps read: ``akv_issuer.keyvault.KeyVaultAccess`` (the CLI) or the
    controller's Key Vault gateway (``core.KeyVaultGateway``, which counts every call)."""

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo: ...

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> KeyAttestation: ...


async def read_key(
    keyvault: VaultReads,
    spec: IssuerSpec,
    auth: AuthConfig,
    now: dt.datetime,
) -> KeyInfo:
    """Step 1: the key version ``spec`` names (the latest when ``keyVersion`` is
    unset), usable for this issuer."""
    try:
        key_info = await keyvault.get_key(
            spec.key_vault_base_url, spec.key_name, spec.key_version, auth
        )
    except KeyVaultError as err:
        raise keyvault_failure(err, f"key {spec.key_name!r}", IssuerReason.KEY_NOT_FOUND) from None
    check_usable(spec, key_info, now)
    return key_info


async def read_vault_ca(keyvault: VaultReads, spec: IssuerSpec, auth: AuthConfig) -> str:
    """Step 2: the CA certificate (chain) as PEM text from a Key Vault secret or
    certificate object, as ``spec`` says. A Key Vault certificate object is read
    through the Certificates API: its public certificate only (``cer``, no chain),
    never its secret, which may hold the private key. Raises ``ValueError`` for a
    CA kept in a Kubernetes Secret: the caller reads that."""
    source = spec.ca_source
    what = spec.ca_description
    if isinstance(source, KubernetesSecretCA):
        raise ValueError(f"{what} is a Kubernetes Secret, not in Key Vault")
    if isinstance(source, KeyVaultCertificateCA):
        vault = source.vault_base_url or spec.key_vault_base_url
        try:
            cert = await keyvault.get_certificate(vault, source.name, source.version, auth)
        except KeyVaultError as err:
            raise keyvault_failure(err, what, IssuerReason.CA_CERTIFICATE_NOT_FOUND) from None
        try:
            parsed = x509.load_der_x509_certificate(cert.cer)
        except ValueError:
            raise CheckFailed(
                IssuerReason.CA_INVALID, f"{what}: its cer is not a DER certificate"
            ) from None
        return parsed.public_bytes(serialization.Encoding.PEM).decode()
    if spec.ca_source_explicit is None and is_managed_hsm(spec.key_vault_base_url):
        raise CheckFailed(
            IssuerReason.INVALID_SPEC,
            f"the key is in a Managed HSM, which holds keys only: set spec.caSource to "
            f"where the CA certificate is kept (a Key Vault secret or certificate in a "
            f"vault, or a Kubernetes Secret) instead of reading {what}",
            retryable=False,
        )
    try:
        secret = await keyvault.get_secret(source.vault_base_url, source.name, source.version, auth)
    except KeyVaultError as err:
        raise keyvault_failure(err, what, IssuerReason.CA_SECRET_NOT_FOUND) from None
    return secret.value


@dataclass(frozen=True)
class MatchedCA:
    """The CA chain and the key version it holds (the one that signs)."""

    key_info: KeyInfo
    ca: CAChain
    pending_key_version: str | None = None
    """With keyVersion unset: the newest key version, which has no CA certificate yet."""


async def match_ca(
    keyvault: VaultReads,
    spec: IssuerSpec,
    auth: AuthConfig,
    ca_text: str,
    key_info: KeyInfo,
    now: dt.datetime,
) -> MatchedCA:
    """Step 3: the CA certificate of ``ca_text`` for ``key_info``; with
    ``keyVersion`` unset and a newer key version that has no CA certificate yet,
    the newest enabled older version the CA holds (the rule:
    :func:`akv_issuer.ca.key_version_of_ca`), usable for this issuer."""
    what = spec.ca_description
    try:
        return MatchedCA(key_info, load_ca_chain(ca_text, key_info.public_key, now))
    except CAError as err:
        if err.kind is not CAErrorKind.MISMATCH or spec.key_version:
            raise ca_failure(err, what) from None
        mismatch = err
    # keyVersion unset and the latest version is not the CA's: a new version
    # (manual, or Key Vault's rotation policy) whose CA certificate is not stored
    # yet. Keep signing with the version the CA certificate holds rather than
    # stop issuance.
    vault = CAVault(keyvault, spec.key_vault_base_url, auth)
    try:
        older = await key_version_of_ca(vault, spec.key_name, ca_text, key_info, now)
    except KeyVersionUnreadable as unreadable:
        where = (
            f"versions of key {spec.key_name!r}"
            if unreadable.version is None
            else f"key {spec.key_name!r} version {unreadable.version}"
        )
        raise keyvault_failure(unreadable.error, where, IssuerReason.KEY_NOT_FOUND) from None
    if older is None:
        raise ca_failure(mismatch, what) from None
    signing_key, ca = older
    check_usable(spec, signing_key, now)
    return MatchedCA(signing_key, ca, pending_key_version=key_info.version)
