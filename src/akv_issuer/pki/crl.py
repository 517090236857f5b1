"""Certificate revocation lists signed by the remote CA key.

The CA key lives only in Key Vault, so nothing but this project can sign a CRL
for it. A CRL is one more builder signed through the same two-pass route as
certificates and CSRs (:func:`akv_issuer.pki.signing.sign_remotely`), so it
works for every key type and algorithm the issuer supports and is verified
before it is returned.

:func:`build_crl` is the template, separate from signing so that a caller can
decide whether a new CRL is needed before it spends a Key Vault sign call. It
writes an RFC 5280 version 2 CRL: issuer = the CA certificate's subject (so
that relying parties match it to the certificates it issued), the CRL number,
the authority key identifier matching the certificates' AKI, thisUpdate and
nextUpdate in whole seconds UTC, and per entry the reason code (left out for
``unspecified``, as RFC 5280 section 5.3.1 asks) and the invalidity date. The
entries are sorted by serial number, so the same revocations always give the
same bytes whatever order they are stored in.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
)

from akv_issuer.pki.algorithms import SignatureAlgorithm, check_algorithm
from akv_issuer.pki.errors import CAError, CAErrorKind, PolicyError, SignatureError
from akv_issuer.pki.issuance import authority_key_identifier
from akv_issuer.pki.signing import RemoteSigner, sign_remotely

__all__ = ["MAX_CRL_NUMBER", "MAX_SERIAL_NUMBER", "RevokedCertificate", "build_crl", "sign_crl"]

MAX_CRL_NUMBER = 2**159 - 1
"""RFC 5280 5.2.3: CRL numbers fit in 20 octets (a non-negative DER INTEGER)."""

MAX_SERIAL_NUMBER = 2**159 - 1
"""RFC 5280 4.1.2.2: serial numbers are positive and fit in 20 octets."""


@dataclass(frozen=True)
class RevokedCertificate:
    """One CRL entry. Times must be timezone-aware; they are written in whole
    seconds UTC. ``reason`` ``None`` or ``unspecified`` writes no reason code;
    ``removeFromCRL`` is refused (RFC 5280 allows it in delta CRLs only: in a
    full CRL an entry is removed by leaving it out)."""

    serial_number: int
    revocation_date: datetime.datetime
    reason: x509.ReasonFlags | None = None
    invalidity_date: datetime.datetime | None = None


def build_crl(
    ca_cert: x509.Certificate,
    revoked: Iterable[RevokedCertificate],
    *,
    crl_number: int,
    this_update: datetime.datetime,
    next_update: datetime.datetime,
) -> x509.CertificateRevocationListBuilder:
    """The template of the CRL of ``ca_cert``; sign it with :func:`sign_crl`.

    Raises :class:`PolicyError` for a negative or oversized CRL number, a
    ``next_update`` not after ``this_update`` (after truncation to whole
    seconds), a serial number <= 0 or longer than 20 octets, a serial listed
    twice, a revocation or invalidity date after ``this_update`` (whole
    seconds; RFC 5280 5.1.2.6 / 5.3.2: a CRL lists what was known when it was
    issued), or a ``removeFromCRL`` reason; :class:`CAError` (``not-a-ca``) when
    ``ca_cert``'s key usage leaves out cRLSign, since relying parties reject a
    CRL from such a CA; ``ValueError`` for a naive datetime (a programming
    error, as elsewhere in :mod:`akv_issuer.pki`).
    """
    _check_crl_sign(ca_cert)
    if not MAX_CRL_NUMBER >= crl_number >= 0:
        raise PolicyError(
            f"CRL number must be between 0 and 2^159-1 (RFC 5280 5.2.3), got {crl_number}"
        )
    last = _whole_seconds(this_update, "this_update")
    next_ = _whole_seconds(next_update, "next_update")
    if next_ <= last:
        raise PolicyError(
            f"next update {next_.isoformat()} must be after this update {last.isoformat()}"
        )
    entries: dict[int, x509.RevokedCertificate] = {}
    for entry in revoked:
        serial = entry.serial_number
        if not MAX_SERIAL_NUMBER >= serial > 0:
            raise PolicyError(
                f"serial number {_hex(serial)} is not a positive integer of at most 20 octets"
            )
        if serial in entries:
            raise PolicyError(f"serial number {_hex(serial)} is listed twice")
        entries[serial] = _entry(entry, last)
    # The constructor rather than add_revoked_certificate(): that copies the
    # list on every call, which is quadratic for a CRL of 100,000 entries.
    return x509.CertificateRevocationListBuilder(
        issuer_name=ca_cert.subject,
        last_update=last,
        next_update=next_,
        extensions=[
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid, False, authority_key_identifier(ca_cert)
            ),
        ],
        revoked_certificates=[entries[serial] for serial in sorted(entries)],
    )


async def sign_crl(
    builder: x509.CertificateRevocationListBuilder,
    ca_public_key: CertificateIssuerPublicKeyTypes,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> x509.CertificateRevocationList:
    """Sign the CRL ``builder`` (complete, as :func:`build_crl` makes it) with
    the remote CA key: one ``signer.sign_digest`` call.

    Raises :class:`AlgorithmError` when ``algorithm`` does not fit the key and
    :class:`SignatureError` when the result does not verify against
    ``ca_public_key``; errors raised by ``signer`` propagate unchanged.
    """
    key = check_algorithm(ca_public_key, algorithm)
    crl = await sign_remotely(builder, key, algorithm, signer)
    if not crl.is_signature_valid(key):
        # sign_remotely verified the signature value; this also checks the
        # signature algorithm the CRL names, as a relying party reads it.
        raise SignatureError("the signed CRL does not verify against the CA public key")
    return crl


def _check_crl_sign(ca_cert: x509.Certificate) -> None:
    try:
        key_usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # no key usage extension: every use is allowed (RFC 5280 4.2.1.3)
    if not key_usage.crl_sign:
        raise CAError(
            CAErrorKind.NOT_A_CA,
            f"the CA certificate {ca_cert.subject.rfc4514_string()!r} does not allow CRL "
            "signing (cRLSign missing from its key usage)",
        )


def _entry(entry: RevokedCertificate, this_update: datetime.datetime) -> x509.RevokedCertificate:
    revocation = _whole_seconds(entry.revocation_date, "revocation_date")
    _check_not_after(entry.serial_number, "revocation", revocation, this_update)
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial_number)
        .revocation_date(revocation)
    )
    reason = entry.reason
    if reason is x509.ReasonFlags.remove_from_crl:
        raise PolicyError(
            f"serial number {_hex(entry.serial_number)}: reason removeFromCRL is only for "
            "delta CRLs (RFC 5280 5.3.1); leave the entry out of a full CRL instead"
        )
    if reason is not None and reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(reason), critical=False)
    if entry.invalidity_date is not None:
        invalidity = _whole_seconds(entry.invalidity_date, "invalidity_date")
        _check_not_after(entry.serial_number, "invalidity", invalidity, this_update)
        builder = builder.add_extension(x509.InvalidityDate(invalidity), critical=False)
    return builder.build()


def _check_not_after(
    serial: int, what: str, when: datetime.datetime, this_update: datetime.datetime
) -> None:
    # A CRL states what was known at thisUpdate (RFC 5280 5.1.2.4, 5.1.2.6,
    # 5.3.2): a revocation, or a key compromise, after it is not known yet.
    if when > this_update:
        raise PolicyError(
            f"serial number {_hex(serial)}: {what} time {when.isoformat()} is after the "
            f"CRL's thisUpdate {this_update.isoformat()}; a CRL cannot list a future {what}"
        )


def _whole_seconds(value: datetime.datetime, what: str) -> datetime.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(datetime.UTC).replace(microsecond=0)


def _hex(serial: int) -> str:
    # Hexadecimal, as openssl prints serials; 0x so that it never reads as decimal.
    return f"0x{serial:X}" if serial >= 0 else f"-0x{-serial:X}"
