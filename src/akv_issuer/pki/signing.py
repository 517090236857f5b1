"""Signing certificates, CSRs and CRLs with a key that lives elsewhere (Key Vault).

cryptography's builders sign through any object implementing its private-key
interface and hand that object the to-be-signed bytes. Key Vault is reached
asynchronously, which a synchronous ``sign()`` callback cannot await, so each
signature takes two passes over the same fully fixed builder: the first only
records the TBS bytes, the digest is then signed remotely, and the second pass
returns that signature (the stand-in private keys: :mod:`._remote_key`). The
result is verified before anyone sees it. Which algorithm fits which key:
:mod:`.algorithms`.

A certificate (the per-request case) skips the second pass: its DER is the
recorded TBS, the TBS's own signature AlgorithmIdentifier and the signature
(RFC 5280 4.1), so it is put together from those bytes and parsed, instead
of the builder encoding every field a second time. CSRs and CRLs (rare) keep
the second pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
)

from akv_issuer.pki._keys import spki_der
from akv_issuer.pki._remote_key import FirstPassDone, Recorder, RemoteKey, remote_key
from akv_issuer.pki.algorithms import (
    CAPublicKey,
    SignatureAlgorithm,
    check_algorithm,
    verify_signature,
)
from akv_issuer.pki.errors import SignatureError

__all__ = ["RemoteSigner", "sign_certificate", "sign_csr", "sign_remotely"]


class RemoteSigner(Protocol):
    """Signs a digest with the CA key, as Key Vault's ``sign`` operation does."""

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        """Return the raw signature: RSA as the modulus-sized octet string, EC as
        the concatenation ``r || s`` of two fixed-size big-endian integers."""
        ...


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

    def sign(private_key: RemoteKey) -> _Signed:
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


async def _two_passes(
    sign: Callable[[RemoteKey], _T],
    public_key: CAPublicKey,
    algorithm: SignatureAlgorithm,
    signer: RemoteSigner,
    assemble: Callable[[bytes, bytes], _T] | None = None,
) -> _T:
    recorder = Recorder(algorithm)
    key = remote_key(public_key, recorder)
    with contextlib.suppress(FirstPassDone):
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
