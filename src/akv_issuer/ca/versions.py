"""Key-version discovery: which key version a CA certificate holds, and which
version of a CA secret holds the certificate of a key version.

A CA key in Key Vault gets new versions (``ca rotate``, ``az keyvault key
rotate``, a rotation policy), and its CA certificate is stored as a new version
of the CA secret, in that order and not at once. In between, and afterwards
for an older key version, the two must be matched up by public key:

- the issuer check (``keyVersion`` unset) and ``ca rotate`` start from the
  CA secret's latest version and look for the key version its certificate
  holds: the latest, else the newest older one (:func:`key_version_of_ca`,
  :func:`current_ca`);
- ``ca crl --key-version`` and ``sign --key-version`` start from a key
  version and look for the secret version holding its certificate
  (:func:`ca_of_key_version`).

Key Vault lists at most the 25 newest versions (the keyvault layer's limit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from akv_issuer.ca.errors import (
    CASecretNotFound,
    KeyVersionUnreadable,
    NoKeyVersionForCA,
    NoSecretVersionForKey,
    SecretVersionsUnlisted,
)
from akv_issuer.ca.vault import CAVault
from akv_issuer.keyvault import ErrorKind, KeyInfo, KeyVaultError, KeyVersion
from akv_issuer.pki import CAChain, CAError, PKIError, load_ca_chain, load_certificates


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_for(
    certificates: Iterable[x509.Certificate], public_key: PublicKeyTypes
) -> x509.Certificate | None:
    """The first of ``certificates`` whose public key is ``public_key``."""
    wanted = _spki(public_key)
    return next((c for c in certificates if _spki(c.public_key()) == wanted), None)


def holds_key(pem: str | bytes, public_key: PublicKeyTypes) -> bool | None:
    """Whether a certificate in ``pem`` holds ``public_key``; None when ``pem``
    holds no readable certificate."""
    try:
        certificates = load_certificates(pem)
    except PKIError:
        return None
    return certificate_for(certificates, public_key) is not None


async def _list_key_versions(vault: CAVault, key_name: str) -> tuple[KeyVersion, ...]:
    try:
        return await vault.list_key_versions(key_name)
    except KeyVaultError as err:
        raise KeyVersionUnreadable(key_name, None, err) from err


async def _older_versions(
    vault: CAVault,
    key_name: str,
    versions: tuple[KeyVersion, ...],
    latest: KeyInfo,
    *,
    enabled_only: bool,
) -> AsyncIterator[KeyInfo]:
    """The listed versions other than ``latest``, newest first, read one by one."""
    for listed in versions:
        if listed.version == latest.version or (enabled_only and not listed.enabled):
            continue
        try:
            yield await vault.get_key(key_name, listed.version)
        except KeyVaultError as err:
            raise KeyVersionUnreadable(key_name, listed.version, err) from err


async def key_version_of_ca(
    vault: CAVault, key_name: str, ca_pem: str, latest: KeyInfo, now: dt.datetime
) -> tuple[KeyInfo, CAChain] | None:
    """For a CA (chain) ``ca_pem`` that holds no certificate for the key's
    ``latest`` version: the newest enabled older version whose public key a
    certificate in it holds and that passes the CA checks at ``now``, with that
    chain; None when there is none. The issuer check signs with it meanwhile.

    Raises :class:`KeyVersionUnreadable` when Key Vault fails to list or read."""
    versions = await _list_key_versions(vault, key_name)
    async for info in _older_versions(vault, key_name, versions, latest, enabled_only=True):
        try:
            return info, load_ca_chain(ca_pem, info.public_key, now)
        except CAError:
            continue
    return None


@dataclass(frozen=True)
class CurrentCA:
    """The CA certificate in the latest version of a CA secret and the key
    version it holds."""

    cert: x509.Certificate
    key: KeyInfo
    """The key version the certificate holds."""
    latest: KeyInfo
    """The key's newest version (the same, unless one is pending)."""
    secret_version: str

    @property
    def pending(self) -> bool:
        """The newest key version has no CA certificate (a policy rotation, a failed run)."""
        return self.key.version != self.latest.version


async def current_ca(vault: CAVault, key_name: str, secret_name: str) -> CurrentCA:
    """The certificate in the secret's latest version that holds a version of
    the key: the latest version, else the newest older one (enabled or not: the
    certificate is described and renewed, not signed with).

    Raises :class:`CASecretNotFound`, :class:`NoKeyVersionForCA`,
    :class:`KeyVersionUnreadable` while scanning older versions, a
    :class:`akv_issuer.pki.CAError` when the secret holds no certificate, and a
    ``KeyVaultError`` reading the key or the secret."""
    latest = await vault.get_key(key_name)
    try:
        secret = await vault.get_secret(secret_name)
    except KeyVaultError as err:
        if err.kind is ErrorKind.NOT_FOUND:
            raise CASecretNotFound(secret_name) from None
        raise
    certificates = load_certificates(secret.value)
    found = certificate_for(certificates, latest.public_key)
    if found is not None:
        return CurrentCA(found, latest, latest, secret.version)
    versions = await _list_key_versions(vault, key_name)
    async for key in _older_versions(vault, key_name, versions, latest, enabled_only=False):
        found = certificate_for(certificates, key.public_key)
        if found is not None:
            return CurrentCA(found, key, latest, secret.version)
    raise NoKeyVersionForCA(secret_name, key_name, len(versions))


async def ca_of_key_version(
    vault: CAVault,
    secret_name: str,
    key: KeyInfo,
    now: dt.datetime,
    *,
    secret_version: str | None = None,
) -> tuple[CAChain, str]:
    """The CA chain of ``key`` (one version) in secret ``secret_name``, and the
    secret version it came from: ``secret_version`` if given, else the newest
    version holding a certificate for the key. After a rotation the newest
    secret version holds the new key version's CA, and an older key version's
    CA is in an older secret version.

    Raises :class:`SecretVersionsUnlisted`, :class:`NoSecretVersionForKey`, the
    CA checks' :class:`akv_issuer.pki.CAError` for the version chosen, and a
    ``KeyVaultError`` reading a secret."""
    secret = await vault.get_secret(secret_name, secret_version)
    if secret_version is not None or holds_key(secret.value, key.public_key) is not False:
        # The named version, one holding the key, or one unreadable
        # (load_ca_chain says what is wrong with it).
        return load_ca_chain(secret.value, key.public_key, now), secret.version
    try:
        versions = await vault.list_secret_versions(secret_name)
    except KeyVaultError as err:
        raise SecretVersionsUnlisted(secret_name, key, err) from None
    for listed in versions:
        if listed.version == secret.version or not listed.enabled:
            continue
        older = await vault.get_secret(secret_name, listed.version)
        if holds_key(older.value, key.public_key):
            return load_ca_chain(older.value, key.public_key, now), older.version
    raise NoSecretVersionForKey(secret_name, key, len(versions))
