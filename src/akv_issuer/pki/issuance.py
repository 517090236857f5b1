"""The certificate template: what gets signed for a CertificateRequest.

Parity baseline is cert-manager's CA issuer; see docs/architecture.md for the
points where this deliberately does better.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from akv_issuer.pki.csr import check_csr
from akv_issuer.pki.errors import CAError, CAErrorKind, CSRError, PolicyError
from akv_issuer.pki.usages import (
    DEFAULT_USAGES,
    ResolvedUsages,
    describe_extended_key_usages,
    describe_key_usage_bits,
    issued_key_usage,
    key_usage_bits,
    resolve_usages,
)

__all__ = [
    "DEFAULT_DURATION",
    "CertificatePlan",
    "ClampReason",
    "IssuancePolicy",
    "IssuanceRequest",
    "IssuerProfile",
    "authority_key_identifier",
    "build_certificate",
    "random_serial_number",
]

DEFAULT_DURATION = datetime.timedelta(days=90)


@dataclass(frozen=True, slots=True)
class IssuanceRequest:
    """What the requester asked for, beside the CSR itself.

    ``usages`` empty means cert-manager's default (``digital signature``,
    ``key encipherment``), as an unset ``spec.usages`` does. The certificate
    gets those of them the subject key can use
    (:func:`~akv_issuer.pki.usages.issued_key_usage`). ``path_length`` is
    only read when ``is_ca``; cert-manager has no field for it, the CLI does.
    """

    duration: datetime.timedelta = DEFAULT_DURATION
    usages: Sequence[str] = DEFAULT_USAGES
    is_ca: bool = False
    path_length: int | None = None
    # Set by a signer that decides the identity itself (PodCertificateRequests,
    # whose CSR only proves the key): the certificate's subject is empty and
    # these are its subject alternative names (critical); the CSR's subject
    # and SANs are not used.
    names: tuple[x509.GeneralName, ...] = ()
    # NotBefore is the time of signing, never backdated (the
    # PodCertificateRequest API takes NotBefore only within 5 minutes of the
    # API server's clock, and counts the lifetime from it).
    not_before_now: bool = False
    # The shortest lifetime the certificate may have after clamping (by the
    # issuer's maxDuration or the CA's NotAfter); shorter is a PolicyError.
    min_duration: datetime.timedelta | None = None


@dataclass(frozen=True, slots=True)
class IssuancePolicy:
    """Limits the issuer enforces on every request.

    ``max_duration`` clamps (it does not refuse): a Certificate asking for the
    default 90 days must not end up Failed with an hour-long backoff because
    an issuer allows 30; the shorter NotAfter is visible and cert-manager
    schedules the renewal from it.
    """

    max_duration: datetime.timedelta | None = None
    allow_ca: bool = False
    max_path_length: int | None = None

    def __post_init__(self) -> None:
        if self.max_duration is not None and self.max_duration <= datetime.timedelta(0):
            raise PolicyError("policy maxDuration must be positive")
        if self.max_path_length is not None and self.max_path_length < 0:
            raise PolicyError("policy maxPathLength must not be negative")


@dataclass(frozen=True, slots=True)
class IssuerProfile:
    """Issuer-level settings that shape every certificate it signs."""

    policy: IssuancePolicy = field(default_factory=IssuancePolicy)
    backdate: datetime.timedelta = datetime.timedelta(0)
    crl_distribution_points: Sequence[str] = ()
    ocsp_servers: Sequence[str] = ()
    issuing_certificate_urls: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.backdate < datetime.timedelta(0):
            raise PolicyError("backdate must not be negative")


class ClampReason(enum.StrEnum):
    CA_EXPIRY = "ca-expiry"
    MAX_DURATION = "max-duration"


@dataclass(frozen=True, slots=True)
class CertificatePlan:
    """A builder with every field fixed (serial, times), so that signing it
    twice yields the same to-be-signed bytes, plus what the caller should know."""

    builder: x509.CertificateBuilder
    serial_number: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    is_ca: bool
    path_length: int | None
    clamped_by: ClampReason | None = None
    """Why NotAfter is earlier than ``now + duration`` (to the second), if it is."""

    @property
    def clamped(self) -> bool:
        return self.clamped_by is not None


def random_serial_number() -> int:
    """A random positive serial of at most 159 bits, so its DER INTEGER takes
    at most 20 octets (RFC 5280 section 4.1.2.2)."""
    while True:
        serial = x509.random_serial_number()
        if serial > 0:
            return serial


def authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Point at the CA's own subject key id, so chain builders match them exactly;
    fall back to the RFC 5280 method-1 id of its key when it carries none."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_certificate(
    csr: x509.CertificateSigningRequest,
    request: IssuanceRequest,
    ca_cert: x509.Certificate,
    profile: IssuerProfile,
    now: datetime.datetime,
    *,
    serial_number: int | None = None,
) -> CertificatePlan:
    """Build the certificate for ``csr`` as ``ca_cert`` would issue it.

    ``serial_number`` (default: random) lets a caller that must be able to
    build the *same* certificate again pass one derived from its inputs
    (:func:`derived_serial_number`).

    Raises :class:`CSRError` when the CSR is invalid or disagrees with the
    request, :class:`PolicyError` when the request or the issuer's policy
    forbids it, :class:`CAError` when ``ca_cert`` is not valid at ``now``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    check_csr(csr)
    if request.duration <= datetime.timedelta(0):
        raise PolicyError(f"duration must be positive, got {request.duration}")
    usages = resolve_usages(request.usages or DEFAULT_USAGES)
    if "key_cert_sign" in usages.key_usage and not request.is_ca:
        # Validators reject keyCertSign without CA basic constraints
        # (OpenSSL: "keyCertSign without CA"), so such a certificate is useless.
        raise PolicyError("usage 'cert sign' requires isCA: true")
    requested_bits = set(usages.key_usage)
    if request.is_ca:
        requested_bits.add("key_cert_sign")
    requested = frozenset(requested_bits)
    public_key = csr.public_key()
    # What the subject key type allows (RFC 3279, 8813, 8410/9295); CA
    # certificates get keyCertSign, cRLSign and digitalSignature only.
    issued_bits = issued_key_usage(requested, public_key, is_ca=request.is_ca)

    csr_extensions = csr.extensions
    _check_csr_key_usage(csr_extensions, requested, issued_bits, is_ca=request.is_ca)
    _check_csr_extended_key_usage(csr_extensions, frozenset(usages.extended_key_usage))
    csr_path_length = _check_csr_basic_constraints(csr_extensions, request.is_ca)
    path_length = (
        _ca_path_length(request, csr_path_length, ca_cert, profile.policy)
        if request.is_ca
        else None
    )

    san = _optional(csr_extensions, x509.SubjectAlternativeName)
    subject = csr.subject
    if request.names:
        # The signer's identity replaces whatever the CSR names.
        subject = x509.Name([])
        san = x509.Extension(
            x509.SubjectAlternativeName.oid, True, x509.SubjectAlternativeName(request.names)
        )
    subject_empty = len(subject) == 0
    if subject_empty and (san is None or len(san.value) == 0):
        raise CSRError("CSR has neither a subject nor subject alternative names")
    if san is not None and len(san.value) == 0:
        # RFC 5280 4.2.1.6: the extension holds at least one name; validators
        # (openssl verify -x509_strict) refuse an empty one.
        raise CSRError("CSR has an empty subject alternative name extension")
    name_constraints = _optional(csr_extensions, x509.NameConstraints)
    if name_constraints is not None and not request.is_ca:
        raise CSRError("CSR carries NameConstraints, which are only allowed with isCA: true")

    not_before, not_after, clamped_by = _validity(
        now, request.duration, ca_cert, profile, backdate=not request.not_before_now
    )
    if request.min_duration is not None and not_after - not_before < request.min_duration:
        limit = (
            f"the CA certificate expires at {ca_cert.not_valid_after_utc.isoformat()}"
            if clamped_by is ClampReason.CA_EXPIRY
            else "the issuer's policy.maxDuration caps it"
        )
        raise PolicyError(
            f"the certificate would be valid for {not_after - not_before}, less than the "
            f"shortest lifetime allowed ({request.min_duration}): {limit}"
        )
    serial = random_serial_number() if serial_number is None else serial_number

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(request.is_ca, path_length), critical=True)
    )
    key_usage = ResolvedUsages(issued_bits, ()).key_usage_extension()
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    extended_key_usage = usages.extended_key_usage_extension()
    if extended_key_usage is not None:
        builder = builder.add_extension(extended_key_usage, critical=False)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    ).add_extension(authority_key_identifier(ca_cert), critical=False)
    if san is not None:
        # RFC 5280 4.2.1.6: with an empty subject the SAN is the identity and
        # must be critical.
        builder = builder.add_extension(san.value, critical=subject_empty or san.critical)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints.value, critical=name_constraints.critical)
    builder = _add_profile_extensions(builder, profile)

    return CertificatePlan(
        builder=builder,
        serial_number=serial,
        not_before=not_before,
        not_after=not_after,
        is_ca=request.is_ca,
        path_length=path_length,
        clamped_by=clamped_by,
    )


_E = TypeVar("_E", bound=x509.ExtensionType)


def _optional(extensions: x509.Extensions, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _check_csr_key_usage(
    extensions: x509.Extensions,
    requested: frozenset[str],
    issued: frozenset[str],
    *,
    is_ca: bool,
) -> None:
    extension = _optional(extensions, x509.KeyUsage)
    if extension is None:
        return
    found = key_usage_bits(extension.value)
    # cert-manager (v1.21 too) puts exactly the requested bits in its CSRs,
    # whatever the key type: an ECDSA CSR with default usages asks for
    # keyEncipherment, which the certificate then leaves out. A CSR asking for
    # exactly what will be issued is accepted too, and for a CA the requested
    # bits plus cRLSign (which this issuer always adds).
    accepted = {requested, issued}
    if is_ca:
        accepted.add(requested | {"crl_sign"})
    if found not in accepted:
        raise CSRError(
            f"CSR key usages ({describe_key_usage_bits(found)}) do not match "
            f"the requested usages ({describe_key_usage_bits(requested)})"
        )


def _check_csr_extended_key_usage(
    extensions: x509.Extensions, requested: frozenset[x509.ObjectIdentifier]
) -> None:
    extension = _optional(extensions, x509.ExtendedKeyUsage)
    if extension is None:
        return
    found = frozenset(extension.value)
    if found != requested:
        raise CSRError(
            f"CSR extended key usages ({describe_extended_key_usages(found)}) do not "
            f"match the requested usages ({describe_extended_key_usages(requested)})"
        )


def _check_csr_basic_constraints(extensions: x509.Extensions, is_ca: bool) -> int | None:
    extension = _optional(extensions, x509.BasicConstraints)
    if extension is None:
        return None
    if extension.value.ca != is_ca:
        raise CSRError(
            f"CSR basic constraints say CA={str(extension.value.ca).lower()} "
            f"but the request has isCA: {str(is_ca).lower()}"
        )
    return extension.value.path_length


def _ca_path_length(
    request: IssuanceRequest,
    csr_path_length: int | None,
    ca_cert: x509.Certificate,
    policy: IssuancePolicy,
) -> int | None:
    if not policy.allow_ca:
        raise PolicyError("the issuer's policy does not allow CA certificates (isCA: true)")
    if request.path_length is not None and request.path_length < 0:
        raise PolicyError(f"path length must not be negative, got {request.path_length}")
    ca_constraints = _optional(ca_cert.extensions, x509.BasicConstraints)
    ca_path_length = None if ca_constraints is None else ca_constraints.value.path_length
    if ca_path_length == 0:
        raise PolicyError(
            "the issuing CA has path length 0 and cannot issue CA certificates (isCA: true)"
        )
    limits = [
        limit
        for limit in (
            request.path_length,
            csr_path_length,
            policy.max_path_length,
            None if ca_path_length is None else ca_path_length - 1,
        )
        if limit is not None
    ]
    return min(limits) if limits else None


def _validity(
    now: datetime.datetime,
    duration: datetime.timedelta,
    ca_cert: x509.Certificate,
    profile: IssuerProfile,
    *,
    backdate: bool = True,
) -> tuple[datetime.datetime, datetime.datetime, ClampReason | None]:
    # X.509 times have whole seconds; dropping the fraction here makes the
    # plan's times equal to the certificate's.
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    ca_not_before = ca_cert.not_valid_before_utc
    ca_not_after = ca_cert.not_valid_after_utc
    if now < ca_not_before:
        raise CAError(
            CAErrorKind.NOT_YET_VALID,
            f"the CA certificate is not valid before {ca_not_before.isoformat()}",
        )
    if now >= ca_not_after:
        raise CAError(
            CAErrorKind.EXPIRED, f"the CA certificate expired at {ca_not_after.isoformat()}"
        )
    # A certificate valid before its issuer confuses path validators.
    back = profile.backdate if backdate else datetime.timedelta(0)
    not_before = max((now - back).replace(microsecond=0), ca_not_before)
    not_after = (now + duration).replace(microsecond=0)
    clamped_by: ClampReason | None = None
    max_duration = profile.policy.max_duration
    if max_duration is not None and duration > max_duration:
        not_after = (now + max_duration).replace(microsecond=0)
        clamped_by = ClampReason.MAX_DURATION
    if not_after > ca_not_after:
        not_after = ca_not_after
        clamped_by = ClampReason.CA_EXPIRY
    return not_before, not_after, clamped_by


def _add_profile_extensions(
    builder: x509.CertificateBuilder, profile: IssuerProfile
) -> x509.CertificateBuilder:
    if profile.crl_distribution_points:
        points = [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            for url in profile.crl_distribution_points
        ]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    access = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
        )
        for url in profile.ocsp_servers
    ] + [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url)
        )
        for url in profile.issuing_certificate_urls
    ]
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder


def derived_serial_number(*parts: bytes) -> int:
    """A positive 159-bit serial from SHA-256 over ``parts`` (length-prefixed).

    For an issuer whose replicas or retries must build the same certificate
    for the same request: the parts must identify the request and cover every
    input of the certificate, so that two different certificates never share
    a serial (RFC 5280 4.1.2.2).
    """
    digest = hashlib.sha256(b"akv-issuer serial v1")
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return int.from_bytes(digest.digest()[:20], "big") >> 1 or 1
