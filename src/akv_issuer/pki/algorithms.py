"""The signature algorithms a Key Vault CA key signs with: their names and
facts (:class:`SignatureAlgorithm`), the default for a key and for a CA (one
signature scheme per CA), whether an algorithm fits a key, and verifying a
signature. No I/O; remote signing itself is :mod:`.signing`."""

from __future__ import annotations

import enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
)

from akv_issuer.pki._keys import describe_key
from akv_issuer.pki.errors import AlgorithmError, SignatureError

__all__ = [
    "MIN_CA_RSA_BITS",
    "CAPublicKey",
    "SignatureAlgorithm",
    "ca_signature_algorithm",
    "check_algorithm",
    "default_algorithm",
    "is_pss_signed",
    "verify_signature",
]

CAPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
"""The CA key types Key Vault can sign with."""

MIN_CA_RSA_BITS = 2048


class SignatureAlgorithm(enum.StrEnum):
    """Key Vault's (JWS) names of the signature algorithms used here."""

    RS256 = "RS256"
    RS384 = "RS384"
    RS512 = "RS512"
    PS256 = "PS256"
    PS384 = "PS384"
    PS512 = "PS512"
    ES256 = "ES256"
    ES384 = "ES384"
    ES512 = "ES512"

    @property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
        bits = self.value[2:]
        if bits == "256":
            return hashes.SHA256()
        if bits == "384":
            return hashes.SHA384()
        return hashes.SHA512()

    @property
    def is_rsa(self) -> bool:
        return self.value[0] in "RP"

    @property
    def is_pss(self) -> bool:
        return self.value[0] == "P"

    @property
    def curve(self) -> type[ec.EllipticCurve] | None:
        """The only curve Key Vault accepts with this algorithm (None for RSA)."""
        return _EC_CURVES.get(self)

    def rsa_padding(self) -> padding.PSS | padding.PKCS1v15:
        """The padding of an RSA algorithm; PSS salt is the digest length, as
        Key Vault uses it."""
        if not self.is_rsa:
            raise AlgorithmError(f"{self} is not an RSA algorithm")
        if self.is_pss:
            digest = self.hash_algorithm
            return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return padding.PKCS1v15()


_EC_CURVES: dict[SignatureAlgorithm, type[ec.EllipticCurve]] = {
    SignatureAlgorithm.ES256: ec.SECP256R1,
    SignatureAlgorithm.ES384: ec.SECP384R1,
    SignatureAlgorithm.ES512: ec.SECP521R1,
}
_EC_ALGORITHMS = {curve: algorithm for algorithm, curve in _EC_CURVES.items()}


def default_algorithm(
    public_key: CertificateIssuerPublicKeyTypes, *, pss: bool = False
) -> SignatureAlgorithm:
    """The algorithm cert-manager's CA issuer would pick for this key: for RSA
    SHA-512 from 4096 bits, SHA-384 from 3072, else SHA-256; for EC the curve's
    own hash. PKCS#1 v1.5 unless ``pss``."""
    if isinstance(public_key, rsa.RSAPublicKey):
        _check_rsa_size(public_key)
        if public_key.key_size >= 4096:
            bits = "512"
        elif public_key.key_size >= 3072:
            bits = "384"
        else:
            bits = "256"
        return SignatureAlgorithm(("PS" if pss else "RS") + bits)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(type(public_key.curve))
        if algorithm is None:
            raise AlgorithmError(
                f"CA key {describe_key(public_key)} is not supported; use P-256, P-384 or P-521"
            )
        return algorithm
    raise AlgorithmError(
        f"CA key {describe_key(public_key)} is not supported; use an RSA or EC key"
    )


def is_pss_signed(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s own signature is RSASSA-PSS."""
    return cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS


def ca_signature_algorithm(
    ca_cert: x509.Certificate | None,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    pss: bool = False,
) -> SignatureAlgorithm:
    """The algorithm a CA signs with when none is configured: one signature
    scheme per CA. :func:`default_algorithm` for the key, with RSASSA-PSS when
    ``pss`` or when the CA's own certificate ``ca_cert`` is PSS-signed (its
    relying parties verify PSS already, and a CA that mixes PSS and PKCS#1
    v1.5 gives linters and policy checks two schemes to accept); the hash
    follows the key size either way. ``ca_cert`` None (no CA certificate
    known yet): the key's default."""
    return default_algorithm(
        public_key, pss=pss or (ca_cert is not None and is_pss_signed(ca_cert))
    )


def check_algorithm(
    public_key: CertificateIssuerPublicKeyTypes, algorithm: SignatureAlgorithm
) -> CAPublicKey:
    """Raise :class:`AlgorithmError` unless ``algorithm`` can sign with
    ``public_key``; return the key narrowed to the supported types."""
    if isinstance(public_key, rsa.RSAPublicKey):
        _check_rsa_size(public_key)
        if not algorithm.is_rsa:
            raise AlgorithmError(
                f"algorithm {algorithm} does not fit the CA key {describe_key(public_key)}"
            )
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if algorithm.curve is not type(public_key.curve):
            raise AlgorithmError(
                f"algorithm {algorithm} does not fit the CA key {describe_key(public_key)}"
            )
        return public_key
    raise AlgorithmError(
        f"CA key {describe_key(public_key)} is not supported; use an RSA or EC key"
    )


def _check_rsa_size(public_key: rsa.RSAPublicKey) -> None:
    if public_key.key_size < MIN_CA_RSA_BITS:
        raise AlgorithmError(
            f"CA key {describe_key(public_key)} is too small; "
            f"at least {MIN_CA_RSA_BITS} bits are required"
        )


def verify_signature(
    public_key: CAPublicKey, algorithm: SignatureAlgorithm, signature: bytes, data: bytes
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` (X.509 form: DER for
    ECDSA) over ``data`` verifies with ``public_key`` under ``algorithm``."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, algorithm.rsa_padding(), algorithm.hash_algorithm)
        else:
            public_key.verify(signature, data, ec.ECDSA(algorithm.hash_algorithm))
    except InvalidSignature:
        raise SignatureError(
            f"the {algorithm} signature returned by the remote signer does not verify "
            "against the CA public key"
        ) from None
