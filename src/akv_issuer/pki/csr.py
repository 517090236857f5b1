"""Parsing and checking PKCS#10 certificate signing requests."""

from __future__ import annotations

import functools
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from akv_issuer.pki._keys import CURVE_NAMES, describe_key
from akv_issuer.pki.errors import CSRError

__all__ = [
    "CSR_PARSE_ERRORS",
    "MAX_CSR_PEM_BYTES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "check_csr",
    "parse_csr",
]

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
# A request object holds the CSR and, once issued, a certificate about as large
# (both base64); etcd stores at most 1.5 MiB per object. A CSR past this bound
# (thousands of SANs) was signed and then its status could never be written.
MAX_CSR_PEM_BYTES = 256 * 1024

# SHA-1 and MD5 self-signatures prove nothing any more; Go (and so cert-manager)
# refuses them too.
_ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

_PEM_BEGIN = b"-----BEGIN "

# ASN.1 string tags OpenSSL decodes in a name (its B_ASN1_PRINTABLE set): UTF8String,
# NumericString, PrintableString, TeletexString, IA5String, UniversalString, BMPString.
_NAME_STRING_TAGS = frozenset({12, 18, 19, 20, 22, 28, 30})

# Everything cryptography raises for malformed input. TypeError is absent on
# purpose: it would only ever signal a bug in this module.
_PARSE_ERRORS = (
    ValueError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)
# For code that reads a CSR leniently, without parse_csr's checks.
CSR_PARSE_ERRORS = _PARSE_ERRORS


def parse_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """Parse one PEM-encoded CSR and check it with :func:`check_csr`.

    Surrounding whitespace is tolerated; anything else that is not exactly one
    PEM ``CERTIFICATE REQUEST`` block raises :class:`CSRError`.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError:
            raise CSRError("CSR is not PEM-encoded: it contains non-ASCII characters") from None
    else:
        raw = bytes(data)
    raw = raw.strip()
    if not raw:
        raise CSRError("CSR is empty")
    if len(raw) > MAX_CSR_PEM_BYTES:
        raise CSRError(
            f"CSR is {len(raw)} bytes of PEM, more than {MAX_CSR_PEM_BYTES // 1024} KiB: "
            "the certificate (as large) would not fit in a Kubernetes object beside it"
        )
    if not raw.startswith(_PEM_BEGIN):
        raise CSRError("CSR is not PEM-encoded: expected '-----BEGIN CERTIFICATE REQUEST-----'")
    if raw.count(_PEM_BEGIN) != 1:
        raise CSRError("CSR must contain exactly one PEM block")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except _PARSE_ERRORS as exc:
        raise CSRError(f"CSR cannot be parsed: {exc}") from None
    check_csr(csr)
    return csr


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    """Check the key type, the self-signature and that every part of ``csr``
    that issuance reads can be decoded; raise :class:`CSRError` otherwise.

    cryptography decodes lazily, so a field that is only read while the
    certificate is being built could otherwise fail later with a raw error.

    The outcome depends on the CSR's DER alone (cryptography's CSRs hash and
    compare by it), so a CSR that passed is not checked again:
    :func:`parse_csr` checks, and :func:`~akv_issuer.pki.build_certificate`
    checks again for callers that parsed on their own; the self-signature's
    verification was the costliest step of issuance's PKI work, twice per
    certificate. A CSR that fails is checked (and fails) every time.
    """
    _check_once(csr)


@functools.lru_cache(maxsize=16)
def _check_once(csr: x509.CertificateSigningRequest) -> None:
    try:
        key = csr.public_key()
    except _PARSE_ERRORS as exc:
        raise CSRError(f"CSR public key cannot be decoded: {exc}") from None
    _check_key(key)
    try:
        hash_algorithm = csr.signature_hash_algorithm
    except _PARSE_ERRORS as exc:
        raise CSRError(f"CSR signature algorithm is not supported: {exc}") from None
    if hash_algorithm is not None and not isinstance(hash_algorithm, _ACCEPTED_HASHES):
        raise CSRError(
            f"CSR is signed with {hash_algorithm.name.upper()}; "
            "only SHA-256, SHA-384 and SHA-512 are accepted"
        )
    try:
        valid = csr.is_signature_valid
    except _PARSE_ERRORS as exc:
        raise CSRError(f"CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise CSRError("CSR signature does not verify against its public key")
    try:
        # Touch every lazily decoded part so that nothing fails later.
        _check_subject(csr)
        for extension in csr.extensions:
            _ = extension.value
    except _PARSE_ERRORS as exc:
        raise CSRError(f"CSR content cannot be decoded: {exc}") from None


def _check_subject(csr: x509.CertificateSigningRequest) -> None:
    """The subject is copied into the certificate as it is: each value must have
    a string type X.509 names allow (OpenSSL cannot even load a certificate
    whose name holds, say, a VisibleString) and a length within its bounds
    (cryptography only warns, on stderr, about an empty or over-long
    commonName or a country code that is not two letters)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subject = csr.subject
        attributes = list(subject)
    if caught:
        raise CSRError(f"CSR subject is not a valid X.509 name: {caught[0].message}")
    for attribute in attributes:
        kind = getattr(attribute, "_type", None)
        if kind is not None and int(kind.value) not in _NAME_STRING_TAGS:
            raise CSRError(
                f"CSR subject attribute {attribute.rfc4514_attribute_name} is a "
                f"{kind.name}; X.509 names take UTF8String, PrintableString, IA5String, "
                "BMPString, UniversalString, TeletexString or NumericString"
            )


def _check_key(key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise CSRError(
                f"CSR key is RSA {key.key_size}-bit; RSA keys must have "
                f"{MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if type(key.curve) not in CURVE_NAMES:
            raise CSRError(
                f"CSR key uses the elliptic curve {key.curve.name}; "
                "only P-256, P-384 and P-521 are accepted"
            )
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    raise CSRError(
        f"CSR key type {describe_key(key)} is not accepted; use RSA (2048-8192 bits), "
        "ECDSA P-256/P-384/P-521 or Ed25519"
    )
