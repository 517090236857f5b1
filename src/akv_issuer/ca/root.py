"""Root certification: the self-signed root of a Key Vault key, made by
``ca create``, and made again by ``ca rotate`` (for a new key version or key)
and by the controller's automatic renewal (for the same key version).

A root is re-certified with the same subject and path length and a new
validity (by default the old lifetime), so relying parties that trust it by
subject and key keep trusting what it signs; it is signed with the CA's one
signature scheme (:func:`signature_algorithm`: RSASSA-PSS stays PSS). The new
certificate is checked like any CA before it is stored, as a new version of the
CA secret.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from akv_issuer.ca.errors import KeyNotUsable, NotACACertificate, NotARoot
from akv_issuer.ca.vault import CAVault
from akv_issuer.keyvault import KeyInfo
from akv_issuer.pki import (
    CAChain,
    CAError,
    PKIError,
    RemoteSigner,
    SignatureAlgorithm,
    build_root_ca,
    ca_signature_algorithm,
    check_algorithm,
    is_self_signed,
    load_ca_chain,
    sign_certificate,
)


@dataclass(frozen=True)
class RootTemplate:
    """What a root certificate is made from besides its key."""

    subject: x509.Name
    lifetime: dt.timedelta
    path_length: int | None = None

    @classmethod
    def renewing(
        cls, old: x509.Certificate, *, lifetime: dt.timedelta | None = None
    ) -> RootTemplate:
        """The template of ``old``'s successor: its subject and path length,
        ``lifetime`` or else ``old``'s."""
        try:
            constraints = old.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            path_length = None
        else:
            path_length = constraints.path_length
        return cls(
            subject=old.subject,
            lifetime=lifetime or (old.not_valid_after_utc - old.not_valid_before_utc),
            path_length=path_length,
        )


def signature_algorithm(
    public_key: CertificateIssuerPublicKeyTypes,
    explicit: SignatureAlgorithm | None = None,
    *,
    ca_cert: x509.Certificate | None = None,
    pss: bool = False,
) -> SignatureAlgorithm:
    """The algorithm a CA key signs with: ``explicit`` when configured (checked
    against the key), else the CA's one scheme for the key
    (:func:`akv_issuer.pki.ca_signature_algorithm`: PSS when ``pss`` or when
    ``ca_cert`` is PSS-signed). Raises :class:`akv_issuer.pki.AlgorithmError`."""
    if explicit is not None:
        check_algorithm(public_key, explicit)
        return explicit
    algorithm = ca_signature_algorithm(ca_cert, public_key, pss=pss)
    check_algorithm(public_key, algorithm)
    return algorithm


def check_signing_key(key: KeyInfo) -> None:
    """Raise :class:`KeyNotUsable` unless the key version may sign."""
    if not key.enabled:
        raise KeyNotUsable(f"key {key.kid} is disabled")
    if "sign" not in key.key_ops:
        raise KeyNotUsable(f"key {key.kid} does not permit the sign operation")


def check_root(cert: x509.Certificate) -> None:
    """Raise unless ``cert`` is a self-signed CA certificate, the only kind a
    key can re-certify itself: :class:`NotACACertificate`, :class:`NotARoot`
    (an intermediate, which its parent must sign)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise NotACACertificate(cert.subject.rfc4514_string())
    if not is_self_signed(cert):
        raise NotARoot(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())


async def certify_root(
    template: RootTemplate,
    public_key: CertificateIssuerPublicKeyTypes,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
    now: dt.datetime,
) -> x509.Certificate:
    """A new self-signed root for ``public_key`` (new serial, valid from
    ``now``), signed through ``signer``, whose errors pass through unchanged."""
    plan = build_root_ca(
        public_key,
        template.subject,
        lifetime=template.lifetime,
        now=now,
        path_length=template.path_length,
    )
    return await sign_certificate(plan.builder, public_key, algorithm, signer)


@dataclass(frozen=True)
class StoredRoot:
    """A root certified and stored: the chain (the root alone), the algorithm
    it was signed with and the version of the CA secret holding it."""

    chain: CAChain
    algorithm: SignatureAlgorithm
    secret_version: str

    @property
    def cert(self) -> x509.Certificate:
        return self.chain.ca


async def recertify_root(
    vault: CAVault,
    secret_name: str,
    key: KeyInfo,
    template: RootTemplate,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
    now: dt.datetime,
    *,
    tags: Mapping[str, str] | None = None,
) -> StoredRoot:
    """A root for the key version ``key`` from ``template`` (see
    :meth:`RootTemplate.renewing`), signed through ``signer``, checked as the
    controller checks a CA, and stored as a new version of ``secret_name``.

    Errors of ``signer`` and of storing pass through unchanged; a certificate
    failing the CA checks (which a correct signer cannot produce) is a
    :class:`akv_issuer.pki.PKIError` and is not stored."""
    cert = await certify_root(template, key.public_key, algorithm, signer, now)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    try:
        chain = load_ca_chain(pem, key.public_key, now)
    except CAError as err:
        raise PKIError(
            f"the new root certificate does not pass the CA checks: {err.reason}"
        ) from err
    stored = await vault.set_pem_secret(secret_name, pem, tags=tags)
    return StoredRoot(chain, algorithm, stored.version)
