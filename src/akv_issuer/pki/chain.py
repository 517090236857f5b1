"""CA bundles: loading, ordering and the split cert-manager expects.

Non-certificate PEM blocks are skipped rather than refused: the PEM form of a
Key Vault *certificate*'s secret puts the private key next to the chain, and
nothing here needs or keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from akv_issuer.pki.errors import CAError, CAErrorKind

__all__ = [
    "is_self_signed",
    "issued_by",
    "load_ca_chain",
    "load_certificates",
    "order_chain",
    "split_chain",
    "to_pem",
]

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)
_CERTIFICATE_LABELS = (b"CERTIFICATE", b"X509 CERTIFICATE")
_DECODE_ERRORS = (ValueError, UnsupportedAlgorithm, x509.InvalidVersion)


def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """Every certificate in ``data``, in the order given.

    ``data`` is PEM (any number of blocks; text around them and non-certificate
    blocks are ignored) or one DER certificate. Raises :class:`CAError` (kind
    ``invalid``) when no certificate can be read or one of them is malformed.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not raw.strip():
        raise CAError(CAErrorKind.INVALID, "the CA bundle is empty")
    if b"-----BEGIN " not in raw:
        try:
            return [x509.load_der_x509_certificate(_der_certificate(raw))]
        except _DECODE_ERRORS:
            raise CAError(
                CAErrorKind.INVALID, "the CA bundle is neither PEM nor a DER certificate"
            ) from None
    certificates = []
    for index, match in enumerate(_PEM_BLOCK.finditer(raw), start=1):
        if match["label"] not in _CERTIFICATE_LABELS:
            continue
        try:
            certificates.append(x509.load_pem_x509_certificate(match[0]))
        except _DECODE_ERRORS as exc:
            raise CAError(
                CAErrorKind.INVALID,
                f"PEM block {index} of the CA bundle is not a certificate: {exc}",
            ) from None
    if not certificates:
        raise CAError(CAErrorKind.INVALID, "the CA bundle holds no PEM certificate")
    return certificates


def _der_certificate(raw: bytes) -> bytes:
    """The DER certificate in ``raw``, without the whitespace around it.

    A certificate ends with its signature, whose last bytes may well be 0x20 or
    0x0a, so trailing whitespace cannot simply be stripped: the outer SEQUENCE's
    length says where the certificate ends. Raises ValueError when the bytes
    around it are not whitespace or the length is malformed.
    """
    body = raw.lstrip()
    if len(body) < 2 or body[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    first = body[1]
    if first < 0x80:
        end = 2 + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(body) < 2 + count:
            raise ValueError("unsupported DER length")
        end = 2 + count + int.from_bytes(body[2 : 2 + count], "big")
    if end > len(body) or body[end:].strip():
        raise ValueError("bytes after the DER certificate")
    return body[:end]


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent``'s key signed ``child`` and its subject is ``child``'s issuer."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return issued_by(cert, cert)


def order_chain(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Order one chain leaf first, each certificate followed by its issuer.

    Duplicates are dropped. Raises :class:`CAError` (kind ``invalid``) when the
    certificates do not form exactly one chain.
    """
    unique = list(
        {cert.public_bytes(serialization.Encoding.DER): cert for cert in certificates}.values()
    )
    if not unique:
        raise CAError(CAErrorKind.INVALID, "no certificate given")
    parents: dict[int, int] = {}
    for i, child in enumerate(unique):
        for j, parent in enumerate(unique):
            if i != j and issued_by(child, parent):
                parents[i] = j
                break
    issuers = set(parents.values())
    leaves = [i for i in range(len(unique)) if i not in issuers]
    if len(leaves) != 1:
        raise CAError(
            CAErrorKind.INVALID,
            "the certificates do not form a single chain "
            f"({len(leaves) or 'no'} certificates are not the issuer of another)",
        )
    ordered = [leaves[0]]
    while ordered[-1] in parents and parents[ordered[-1]] not in ordered:
        ordered.append(parents[ordered[-1]])
    if len(ordered) != len(unique):
        stray = next(cert for i, cert in enumerate(unique) if i not in ordered)
        raise CAError(
            CAErrorKind.INVALID,
            f"the certificate {stray.subject.rfc4514_string()!r} is not part of the chain",
        )
    return [unique[i] for i in ordered]


def load_ca_chain(data: bytes | str) -> list[x509.Certificate]:
    """The CA secret's content as a chain: the issuing CA first, then its parents
    (the secret may hold the CA alone or followed by its parents, in any order)."""
    return order_chain(load_certificates(data))


def to_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


def split_chain(
    leaf: x509.Certificate, ca_chain: Sequence[x509.Certificate]
) -> tuple[bytes, bytes]:
    """``(status.certificate, status.ca)`` PEM, as cert-manager fills them.

    The certificate part is the leaf and every intermediate; a self-signed root
    is never in it. The CA part is the top of the chain: the root when it is
    held, else the topmost intermediate (which then appears in both).
    """
    if not ca_chain:
        raise CAError(CAErrorKind.INVALID, "no CA certificate to build the chain with")
    chain = order_chain([leaf, *ca_chain])
    if chain[0].public_bytes(serialization.Encoding.DER) != leaf.public_bytes(
        serialization.Encoding.DER
    ):
        raise CAError(CAErrorKind.INVALID, "the certificate is not the leaf of the CA chain")
    top = chain[-1]
    certificate_part = chain[:-1] if is_self_signed(top) else chain
    return to_pem(certificate_part), to_pem([top])
