"""cert-manager usage strings mapped to X.509 KeyUsage and ExtendedKeyUsage."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from akv_issuer.pki._keys import describe_key
from akv_issuer.pki.errors import PolicyError

__all__ = [
    "CA_KEY_USAGE",
    "DEFAULT_USAGES",
    "KEY_USAGE_BITS",
    "KNOWN_USAGES",
    "ResolvedUsages",
    "describe_extended_key_usages",
    "describe_key_usage_bits",
    "issued_key_usage",
    "key_usage_bits",
    "resolve_usages",
]

DEFAULT_USAGES: tuple[str, ...] = ("digital signature", "key encipherment")

# Values are the keyword names of cryptography's x509.KeyUsage.
KEY_USAGE_BITS: tuple[str, ...] = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)

_KEY_USAGES: dict[str, str] = {
    "digital signature": "digital_signature",
    "signing": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}

_EXTENDED_KEY_USAGES: dict[str, ObjectIdentifier] = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": ObjectIdentifier("2.16.840.1.113730.4.1"),
}

KNOWN_USAGES: frozenset[str] = frozenset(_KEY_USAGES) | frozenset(_EXTENDED_KEY_USAGES)


@dataclass(frozen=True, slots=True)
class ResolvedUsages:
    """What a list of usage strings means in X.509 terms."""

    key_usage: frozenset[str]
    """Set keyword names of x509.KeyUsage (see KEY_USAGE_BITS)."""
    extended_key_usage: tuple[ObjectIdentifier, ...]
    """In first-mention order, without duplicates."""

    def key_usage_extension(self) -> x509.KeyUsage | None:
        if not self.key_usage:
            return None
        return _key_usage_extension(self.key_usage)

    def extended_key_usage_extension(self) -> x509.ExtendedKeyUsage | None:
        if not self.extended_key_usage:
            return None
        return _extended_key_usage_extension(self.extended_key_usage)


# Built once per set of bits / OIDs (both extension objects are immutable):
# every certificate of an issuer asks for the same few combinations, and
# building a KeyUsage through its nine keyword checks was ~1 % of the
# controller's CPU per certificate. The caches are bounded: at most 2**9 bit
# sets exist, and the OID tuples come from a closed list.
@lru_cache(maxsize=256)
def _key_usage_extension(bits: frozenset[str]) -> x509.KeyUsage:
    return x509.KeyUsage(**{bit: bit in bits for bit in KEY_USAGE_BITS})


@lru_cache(maxsize=256)
def _extended_key_usage_extension(oids: tuple[ObjectIdentifier, ...]) -> x509.ExtendedKeyUsage:
    return x509.ExtendedKeyUsage(list(oids))


def resolve_usages(usages: Iterable[str]) -> ResolvedUsages:
    """Map cert-manager usage strings; an unknown one raises :class:`PolicyError`."""
    return _resolve_usages(tuple(usages))


@lru_cache(maxsize=256)
def _resolve_usages(usages: tuple[str, ...]) -> ResolvedUsages:
    # Cached per list of strings (requests of one issuer repeat the same few);
    # an unknown usage raises and so is never cached.
    bits: set[str] = set()
    extended: dict[ObjectIdentifier, None] = {}
    for usage in usages:
        if usage in _KEY_USAGES:
            bits.add(_KEY_USAGES[usage])
        elif usage in _EXTENDED_KEY_USAGES:
            extended.setdefault(_EXTENDED_KEY_USAGES[usage])
        else:
            raise PolicyError(f"unknown usage {usage!r}")
    if bits & {"encipher_only", "decipher_only"} and "key_agreement" not in bits:
        # RFC 5280 defines both bits only together with keyAgreement.
        raise PolicyError("usages 'encipher only' and 'decipher only' require 'key agreement'")
    return ResolvedUsages(frozenset(bits), tuple(extended))


def key_usage_bits(key_usage: x509.KeyUsage) -> frozenset[str]:
    """The set bits of a KeyUsage extension, as KEY_USAGE_BITS names."""
    bits = set()
    for bit in KEY_USAGE_BITS:
        if bit in ("encipher_only", "decipher_only") and not key_usage.key_agreement:
            # cryptography refuses to read these two without keyAgreement.
            continue
        if getattr(key_usage, bit):
            bits.add(bit)
    return frozenset(bits)


# For messages: the cert-manager name of each bit / OID (first name wins, so
# "digital signature" over "signing" and "email protection" over "s/mime").
_BIT_NAMES: dict[str, str] = {}
for _name, _bit in _KEY_USAGES.items():
    _BIT_NAMES.setdefault(_bit, _name)
_OID_NAMES: dict[ObjectIdentifier, str] = {}
for _name, _oid in _EXTENDED_KEY_USAGES.items():
    _OID_NAMES.setdefault(_oid, _name)


def describe_key_usage_bits(bits: Iterable[str]) -> str:
    names = sorted(_BIT_NAMES[bit] for bit in bits)
    return ", ".join(names) if names else "none"


def describe_extended_key_usages(oids: Iterable[ObjectIdentifier]) -> str:
    names = sorted(_OID_NAMES.get(oid, oid.dotted_string) for oid in oids)
    return ", ".join(names) if names else "none"


# ---- key usages the subject key can have -----------------------------------------------

CA_KEY_USAGE: frozenset[str] = frozenset({"digital_signature", "key_cert_sign", "crl_sign"})
"""The key usage of every CA certificate: keyCertSign and cRLSign (a CA that
cannot sign CRLs cannot revoke what it issued), and digitalSignature so that
the CA key may sign OCSP responses itself. Nothing else: RFC 3279 2.3.1 says
a CA's RSA key SHOULD NOT have keyEncipherment or dataEncipherment, and the
EC and Ed25519 RFCs forbid them."""

# The bits an end-entity certificate may assert, per subject key type:
# RSA, RFC 3279 2.3.1 (digitalSignature, nonRepudiation, keyEncipherment,
# dataEncipherment; cRLSign for a CRL issuer certificate), so no keyAgreement;
# ECDSA (id-ecPublicKey), RFC 5480 3 and RFC 8813 3: keyEncipherment and
# dataEncipherment MUST NOT be present, keyAgreement (ECDH) may, with
# encipherOnly / decipherOnly; Ed25519 / Ed448, RFC 8410 5 as replaced by
# RFC 9295: digitalSignature, nonRepudiation, cRLSign only.
_RSA_BITS = frozenset(
    {"digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "crl_sign"}
)
_EC_BITS = frozenset(
    {
        "digital_signature",
        "content_commitment",
        "key_agreement",
        "encipher_only",
        "decipher_only",
        "crl_sign",
    }
)
_EDDSA_BITS = frozenset({"digital_signature", "content_commitment", "crl_sign"})


def _allowed_bits(public_key: CertificatePublicKeyTypes) -> tuple[frozenset[str], str]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RSA_BITS, "RFC 3279 section 2.3.1"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _EC_BITS, "RFC 8813 section 3"
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _EDDSA_BITS, "RFC 8410 section 5 (RFC 9295)"
    raise PolicyError(f"key usages for a {describe_key(public_key)} key are not defined here")


def issued_key_usage(
    requested: frozenset[str], public_key: CertificatePublicKeyTypes, *, is_ca: bool
) -> frozenset[str]:
    """The key usage bits a certificate for ``public_key`` gets when
    ``requested`` (KEY_USAGE_BITS names) were asked for.

    A CA certificate gets :data:`CA_KEY_USAGE`, whatever was asked. An
    end-entity certificate gets the requested bits its key type can use: the
    others are left out rather than refused, so that cert-manager's default
    usages (digital signature, key encipherment) still give an ECDSA or
    Ed25519 key a certificate, without keyEncipherment. Nothing requested,
    nothing issued (no KeyUsage extension). If every requested bit is one the
    key cannot use, :class:`PolicyError`: a certificate without a KeyUsage
    extension would allow every use instead.
    """
    if is_ca:
        return CA_KEY_USAGE
    allowed, rfc = _allowed_bits(public_key)
    issued = requested & allowed
    if requested and not issued:
        raise PolicyError(
            f"usages ({describe_key_usage_bits(requested)}) do not fit the "
            f"{describe_key(public_key)} subject key ({rfc}); ask for one of "
            f"{describe_key_usage_bits(allowed - {'encipher_only', 'decipher_only'})}"
        )
    return issued
