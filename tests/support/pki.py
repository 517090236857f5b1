"""Helpers shared by the PKI unit tests: cached keys, a local signer, CSRs,
CAs, a minimal DER walker (for byte-level assertions) and openssl."""

from __future__ import annotations

import datetime
import functools
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from akv_issuer import pki

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CA_KEY_KINDS = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")
CSR_KEY_KINDS = ("rsa2048", "p256", "ed25519")

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),
}


@functools.cache
def private_key(kind: str) -> CertificateIssuerPrivateKeyTypes:
    """One key per kind for the whole session: RSA 4096 generation is slow."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind])
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def ca_key(kind: str) -> CAPrivateKey:
    key = private_key(kind)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


class LocalSigner:
    """A real RemoteSigner over a local key: signs digests the way Key Vault
    does and returns its raw format (EC as r || s)."""

    def __init__(self, key: CAPrivateKey) -> None:
        self.key = key
        self.calls: list[tuple[pki.SignatureAlgorithm, bytes]] = []

    async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        self.calls.append((algorithm, digest))
        prehashed = utils.Prehashed(algorithm.hash_algorithm)
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, algorithm.rsa_padding(), prehashed)
        r, s = utils.decode_dss_signature(self.key.sign(digest, ec.ECDSA(prehashed)))
        size = (self.key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    subject: x509.Name | None = None,
    sans: Sequence[x509.GeneralName] = (x509.DNSName("app.example.com"),),
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        name("app.example.com") if subject is None else subject
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key, hash_algorithm or hashes.SHA256())


def pem(obj: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def der(obj: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER)


async def make_root(
    kind: str,
    *,
    pss: bool = False,
    now: datetime.datetime | None = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=365),
    path_length: int | None = None,
    subject: str | x509.Name = "Test Root CA",
) -> x509.Certificate:
    key = ca_key(kind)
    plan = pki.build_root_ca(
        key.public_key(),
        subject,
        lifetime=lifetime,
        now=now or datetime.datetime.now(datetime.UTC),
        path_length=path_length,
    )
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    return await pki.sign_certificate(plan.builder, key.public_key(), algorithm, LocalSigner(key))


def sign_locally(
    builder: x509.CertificateBuilder, issuer_key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate:
    """Sign with the local key directly, for tests that check templates only."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return builder.sign(issuer_key, None)
    return builder.sign(issuer_key, hashes.SHA256())


def run_openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)


def openssl_verify_strict(
    directory: Path,
    root: x509.Certificate,
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate] = (),
) -> subprocess.CompletedProcess[str]:
    (directory / "ca.pem").write_bytes(pem(root))
    (directory / "leaf.pem").write_bytes(pem(leaf))
    args: list[str | Path] = ["verify", "-x509_strict", "-CAfile", directory / "ca.pem"]
    if untrusted:
        (directory / "untrusted.pem").write_bytes(b"".join(pem(c) for c in untrusted))
        args += ["-untrusted", directory / "untrusted.pem"]
    return run_openssl(*args, directory / "leaf.pem")


# A minimal DER walker: enough to pull the raw subject out of a TBS structure,
# which no public cryptography API exposes byte for byte.


def _tlv_end(data: bytes, offset: int) -> tuple[int, int]:
    length = data[offset + 1]
    header = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
        header += count
    return offset + header, offset + header + length


def der_children(data: bytes) -> list[bytes]:
    start, end = _tlv_end(data, 0)
    children = []
    offset = start
    while offset < end:
        _, child_end = _tlv_end(data, offset)
        children.append(data[offset:child_end])
        offset = child_end
    return children


def raw_subject_of_csr(csr: x509.CertificateSigningRequest) -> bytes:
    # CertificationRequestInfo: version, subject, ...
    return der_children(csr.tbs_certrequest_bytes)[1]


def raw_subject_of_certificate(cert: x509.Certificate) -> bytes:
    # TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
    return der_children(cert.tbs_certificate_bytes)[5]


def raw_extension_value(extensions_owner: bytes, oid: x509.ObjectIdentifier) -> bytes:
    """The extnValue octets of ``oid`` inside DER ``extensions_owner`` (searched
    naively: the OID's encoding followed by the value, enough for tests)."""
    oid_der = _encode_oid(oid)
    index = extensions_owner.index(oid_der) + len(oid_der)
    if extensions_owner[index] == 0x01:  # critical BOOLEAN
        index += 3
    assert extensions_owner[index] == 0x04
    start, end = _tlv_end(extensions_owner, index)
    return extensions_owner[start:end]


def _encode_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)
