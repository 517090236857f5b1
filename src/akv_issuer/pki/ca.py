"""The CA certificate: the self-signed root template and the usability checks."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from akv_issuer.pki._keys import describe_key, spki_der
from akv_issuer.pki.errors import CAError, CAErrorKind, PolicyError
from akv_issuer.pki.issuance import CertificatePlan, random_serial_number

__all__ = ["build_root_ca", "check_ca"]


def build_root_ca(
    public_key: CertificateIssuerPublicKeyTypes,
    subject: str | x509.Name,
    *,
    lifetime: datetime.timedelta,
    now: datetime.datetime,
    path_length: int | None = None,
) -> CertificatePlan:
    """The template of a self-signed root CA certificate for ``public_key``.

    ``subject`` is either a common name or a full name. Sign the plan's builder
    with :func:`akv_issuer.pki.sign_certificate` using the same key.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if lifetime <= datetime.timedelta(0):
        raise PolicyError(f"CA lifetime must be positive, got {lifetime}")
    if path_length is not None and path_length < 0:
        raise PolicyError(f"path length must not be negative, got {path_length}")
    if isinstance(subject, str):
        if not subject:
            raise PolicyError("CA common name must not be empty")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    else:
        if len(subject) == 0:
            raise PolicyError("CA subject must not be empty")
        name = subject
    not_before = now.astimezone(datetime.UTC).replace(microsecond=0)
    not_after = not_before + lifetime
    serial = random_serial_number()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                # digitalSignature lets the CA key sign OCSP responses itself.
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return CertificatePlan(
        builder=builder,
        serial_number=serial,
        not_before=not_before,
        not_after=not_after,
        is_ca=True,
        path_length=path_length,
    )


def check_ca(
    ca_cert: x509.Certificate, key_public_key: PublicKeyTypes, now: datetime.datetime
) -> None:
    """Raise :class:`CAError` unless ``ca_cert`` can issue certificates with the
    key whose public half is ``key_public_key`` at ``now``.

    Checked in this order, the first failure wins: invalid (undecodable, not
    v3), not-a-ca (no CA basic constraints, or a key usage without keyCertSign),
    mismatch (another public key), not-yet-valid, expired.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        version = ca_cert.version
        extensions = ca_cert.extensions
        cert_key = ca_cert.public_key()
    except (
        ValueError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise CAError(CAErrorKind.INVALID, f"the CA certificate cannot be decoded: {exc}") from None
    if version is not x509.Version.v3:
        raise CAError(CAErrorKind.INVALID, "the CA certificate is not an X.509 v3 certificate")

    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAError(
            CAErrorKind.NOT_A_CA,
            f"the certificate {_subject(ca_cert)} is not a CA (basicConstraints CA:TRUE missing)",
        )
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.key_cert_sign:
        raise CAError(
            CAErrorKind.NOT_A_CA,
            f"the CA certificate {_subject(ca_cert)} does not allow certificate signing "
            "(keyCertSign missing from its key usage)",
        )

    if spki_der(cert_key) != spki_der(key_public_key):
        raise CAError(
            CAErrorKind.MISMATCH,
            f"the CA certificate's public key ({describe_key(cert_key)}) is not the "
            f"signing key's public key ({describe_key(key_public_key)})",
        )

    if now < ca_cert.not_valid_before_utc:
        raise CAError(
            CAErrorKind.NOT_YET_VALID,
            f"the CA certificate is not valid before {ca_cert.not_valid_before_utc.isoformat()}",
        )
    if now >= ca_cert.not_valid_after_utc:
        raise CAError(
            CAErrorKind.EXPIRED,
            f"the CA certificate expired at {ca_cert.not_valid_after_utc.isoformat()}",
        )


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())
