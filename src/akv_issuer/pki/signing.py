"""Signing certificates, CSRs and CRLs with a key that lives elsewhere (Key Vault).

cryptography's builders sign through any object implementing its private-key
interface and hand that object the to-be-signed bytes. Key Vault is reached
asynchronously, which a synchronous ``sign()`` callback cannot await, so each
signature takes two passes over the same fully fixed builder: the first only
records the TBS bytes, the digest is then signed remotely, and the second pass
returns that signature. The result is verified before anyone sees it.

A certificate (the per-request case) skips the second pass: its DER is the
recorded TBS, the TBS's own signature AlgorithmIdentifier and the signature
(RFC 5280 4.1), so it is put together from those bytes and parsed, instead
of the builder encoding every field a second time. CSRs and CRLs (rare) keep
the second pass.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, overload

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
)
from cryptography.utils import Buffer

from akv_issuer.pki._keys import describe_key, spki_der
from akv_issuer.pki.errors import AlgorithmError, SignatureError

__all__ = [
    "CAPublicKey",
    "RemoteSigner",
    "SignatureAlgorithm",
    "ca_signature_algorithm",
    "check_algorithm",
    "default_algorithm",
    "is_pss_signed",
    "sign_certificate",
    "sign_csr",
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


class RemoteSigner(Protocol):
    """Signs a digest with the CA key, as Key Vault's ``sign`` operation does."""

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        """Return the raw signature: RSA as the modulus-sized octet string, EC as
        the concatenation ``r || s`` of two fixed-size big-endian integers."""
        ...


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


async def sign_certificate(
    builder: x509.CertificateBuilder,
    ca_public_key: CertificateIssuerPublicKeyTypes,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> x509.Certificate:
    """Sign ``builder`` with the remote CA key; the builder must be complete
    (serial and validity set), as :class:`CertificatePlan` builders are.

    Errors raised by ``signer`` propagate unchanged so the caller can tell a
    transient remote failure from a permanent one.
    """
    key = check_algorithm(ca_public_key, algorithm)
    return await sign_remotely(builder, key, algorithm, signer)


async def sign_csr(
    subject: x509.Name,
    ca_public_key: CertificateIssuerPublicKeyTypes,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.CertificateSigningRequest:
    """A CSR for the remote key itself (to have it certified as an intermediate
    CA by another CA), self-signed through ``signer``."""
    key = check_algorithm(ca_public_key, algorithm)
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for extension in extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    csr = await sign_remotely(builder, key, algorithm, signer)
    if spki_der(csr.public_key()) != spki_der(key):
        raise SignatureError("the CSR does not carry the CA public key")
    return csr


_Builder = (
    x509.CertificateBuilder
    | x509.CertificateSigningRequestBuilder
    | x509.CertificateRevocationListBuilder
)
_Signed = x509.Certificate | x509.CertificateSigningRequest | x509.CertificateRevocationList


@overload
async def sign_remotely(
    builder: x509.CertificateBuilder,
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> x509.Certificate: ...


@overload
async def sign_remotely(
    builder: x509.CertificateSigningRequestBuilder,
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> x509.CertificateSigningRequest: ...


@overload
async def sign_remotely(
    builder: x509.CertificateRevocationListBuilder,
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> x509.CertificateRevocationList: ...


async def sign_remotely(
    builder: _Builder,
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
) -> _Signed:
    """The one remote-signing route of certificates, CSRs and CRLs: two passes
    over the fully fixed ``builder``, then the signature is verified against
    ``public_key`` (already checked to fit ``algorithm``, see
    :func:`check_algorithm`) over the TBS bytes, else :class:`SignatureError`.
    Not exported from :mod:`akv_issuer.pki`: callers use the typed wrappers."""
    rsa_padding = algorithm.rsa_padding() if algorithm.is_rsa else None

    def sign(private_key: _RemoteKey) -> _Signed:
        if rsa_padding is None:
            return builder.sign(private_key, algorithm.hash_algorithm)
        return builder.sign(private_key, algorithm.hash_algorithm, rsa_padding=rsa_padding)

    assemble = _assemble_certificate if isinstance(builder, x509.CertificateBuilder) else None
    signed = await _two_passes(sign, public_key, algorithm, signer, assemble)
    verify_signature(public_key, algorithm, signed.signature, _tbs_bytes(signed))
    return signed


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, offset of the content, offset after the element) of the DER TLV at ``offset``."""
    if offset + 2 > len(data):
        raise SignatureError("the to-be-signed bytes end inside a DER element")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise SignatureError("the to-be-signed bytes hold an unsupported DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise SignatureError("the to-be-signed bytes end inside a DER element")
    return tag, start, end


def _assemble_certificate(tbs: bytes, signature: bytes) -> x509.Certificate:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue },
    where signatureAlgorithm repeats the TBS's ``signature`` field byte for byte
    (TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, ...})."""
    tag, offset, end = _der_element(tbs, 0)
    if tag != 0x30 or end != len(tbs):
        raise SignatureError("the to-be-signed bytes are not one DER SEQUENCE")
    tag, _, after = _der_element(tbs, offset)
    if tag == 0xA0:  # [0] EXPLICIT version
        offset = after
        tag, _, after = _der_element(tbs, offset)
    if tag != 0x02:  # serialNumber INTEGER
        raise SignatureError("the to-be-signed certificate has no serial number where expected")
    tag, _, algorithm_end = _der_element(tbs, after)
    if tag != 0x30:  # signature AlgorithmIdentifier
        raise SignatureError("the to-be-signed certificate has no signature algorithm")
    algorithm = tbs[after:algorithm_end]
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_length(len(body)) + body)


def _tbs_bytes(signed: _Signed) -> bytes:
    if isinstance(signed, x509.Certificate):
        return signed.tbs_certificate_bytes
    if isinstance(signed, x509.CertificateSigningRequest):
        return signed.tbs_certrequest_bytes
    return signed.tbs_certlist_bytes


_T = TypeVar("_T")


class _FirstPassDone(Exception):
    """Ends the recording pass: no placeholder-signed object is ever built."""


async def _two_passes(
    sign: Callable[[_RemoteKey], _T],
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
    assemble: Callable[[bytes, bytes], _T] | None = None,
) -> _T:
    recorder = _Recorder(algorithm)
    key = _remote_key(public_key, recorder)
    with contextlib.suppress(_FirstPassDone):
        sign(key)
    tbs = recorder.tbs
    if tbs is None:
        raise SignatureError("the builder did not ask for a signature")
    digest = hashes.Hash(algorithm.hash_algorithm)
    digest.update(tbs)
    raw = await signer.sign_digest(algorithm, digest.finalize())
    if not isinstance(raw, bytes):
        raise SignatureError(f"the remote signer returned {type(raw).__name__}, not bytes")
    recorder.signature = _x509_signature(public_key, raw)
    if assemble is not None:
        return assemble(tbs, recorder.signature)
    result = sign(key)
    if recorder.tbs != tbs:
        # The builder is expected to be fully fixed; if it is not, the remote
        # signature covers other bytes than the ones being returned.
        raise SignatureError("the to-be-signed bytes changed between the two signing passes")
    return result


def _x509_signature(public_key: CAPublicKey, raw: bytes) -> bytes:
    if isinstance(public_key, rsa.RSAPublicKey):
        size = (public_key.key_size + 7) // 8
        if not 0 < len(raw) <= size:
            raise SignatureError(f"the remote RSA signature has {len(raw)} bytes, expected {size}")
        # I2OSP output is exactly the modulus length; OpenSSL refuses shorter.
        return raw.rjust(size, b"\x00")
    size = (public_key.curve.key_size + 7) // 8
    if len(raw) != 2 * size:
        raise SignatureError(
            f"the remote ECDSA signature has {len(raw)} bytes, expected {2 * size} (r || s)"
        )
    r = int.from_bytes(raw[:size], "big")
    s = int.from_bytes(raw[size:], "big")
    return utils.encode_dss_signature(r, s)


class _Recorder:
    def __init__(self, algorithm: SignatureAlgorithm) -> None:
        self.algorithm = algorithm
        self.tbs: bytes | None = None
        self.signature: bytes | None = None

    def sign(self, data: Buffer, hash_algorithm: object) -> bytes:
        expected = self.algorithm.hash_algorithm
        if not isinstance(hash_algorithm, type(expected)):
            raise SignatureError(f"the builder asked for a different hash than {self.algorithm}")
        self.tbs = bytes(data)
        if self.signature is None:
            raise _FirstPassDone
        return self.signature


def _unsupported() -> TypeError:
    return TypeError("the private half of this key lives in Key Vault; only sign() is supported")


class _RemoteRSAKey(rsa.RSAPrivateKey):
    def __init__(self, public_key: rsa.RSAPublicKey, recorder: _Recorder) -> None:
        self._public_key = public_key
        self._recorder = recorder

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        return self._recorder.sign(data, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise _unsupported()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _unsupported()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _unsupported()

    def __copy__(self) -> _RemoteRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _RemoteRSAKey:
        return self


class _RemoteECKey(ec.EllipticCurvePrivateKey):
    def __init__(self, public_key: ec.EllipticCurvePublicKey, recorder: _Recorder) -> None:
        self._public_key = public_key
        self._recorder = recorder

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        return self._recorder.sign(data, algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise _unsupported()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _unsupported()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _unsupported()

    def __copy__(self) -> _RemoteECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _RemoteECKey:
        return self


_RemoteKey = _RemoteRSAKey | _RemoteECKey


def _remote_key(public_key: CAPublicKey, recorder: _Recorder) -> _RemoteKey:
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RemoteRSAKey(public_key, recorder)
    return _RemoteECKey(public_key, recorder)
