"""CA bundles: loading, ordering and the split cert-manager expects.

Non-certificate PEM blocks are skipped rather than refused: the PEM form of a
Key Vault *certificate*'s secret puts the private key next to the chain, and
nothing here needs or keeps it.

:func:`load_ca_chain` is the one reading of a CA secret. The CLI (``ca
import``, ``sign``) and the controller's issuer check both call it, so a
secret that one of them accepts the other accepts too: the README promises
that they run the same checks, and two readers had drifted apart before.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from akv_issuer.pki._keys import spki_der
from akv_issuer.pki.ca import check_ca
from akv_issuer.pki.errors import CAError, CAErrorKind

__all__ = [
    "CAChain",
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


@dataclass(frozen=True)
class CAChain:
    """The CA certificate of a Key Vault key, followed by its issuers upward.

    ``certificates[0]`` is the CA (its public key is the key's); every further
    certificate issued the one before it. The top is a self-signed root or the
    highest issuer the secret held.
    """

    certificates: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.certificates:
            raise ValueError("a CA chain holds at least the CA certificate")

    @property
    def ca(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def not_after(self) -> datetime.datetime:
        return self.ca.not_valid_after_utc

    def pem(self) -> bytes:
        return to_pem(self.certificates)

    @functools.cached_property
    def ca_der(self) -> bytes:
        """The CA certificate's DER, encoded once per chain (an input of every
        leaf's derived serial number)."""
        return self.ca.public_bytes(serialization.Encoding.DER)

    @functools.cached_property
    def _parts(self) -> tuple[bytes, bytes]:
        top = self.certificates[-1]
        below = self.certificates[:-1] if is_self_signed(top) else self.certificates
        return to_pem(below), to_pem([top])

    def split(self, leaf: x509.Certificate) -> tuple[bytes, bytes]:
        """:func:`split_chain` for a leaf this chain's CA issued, without
        re-ordering the chain for every leaf: the order and the root test are
        worked out once per chain (they cost three signature checks per leaf).

        The leaf must be the CA's: its issuer is the CA's subject (checked here)
        and its signature verifies with the CA key (checked by the caller, as
        :func:`akv_issuer.pki.sign_certificate` does), else :class:`CAError`.
        """
        if leaf.issuer != self.ca.subject:
            raise CAError(CAErrorKind.INVALID, "the certificate is not the leaf of the CA chain")
        below, top = self._parts
        return leaf.public_bytes(serialization.Encoding.PEM) + below, top


def load_ca_chain(
    data: bytes | str, key_public_key: PublicKeyTypes, now: datetime.datetime
) -> CAChain:
    """Read a CA secret for the Key Vault key whose public half is ``key_public_key``.

    The secret holds the CA alone or together with its issuers, in any order
    (PEM, or one DER certificate). The CA is the certificate holding the key's
    public key; if several do (a re-issued CA certificate), the first one that
    passes :func:`check_ca` at ``now`` wins. Its issuers follow upward by
    verified signature; certificates off that path (a leaf, an unrelated root)
    are left out rather than refused, since nothing would ever use them.

    Raises :class:`CAError` with the kind of the first failure:
    ``invalid`` (no readable certificate), then, for the CA or, when no
    certificate holds the key, for the lowest certificate of the secret, the
    kinds of :func:`check_ca` (``not-a-ca``, ``mismatch``, ``not-yet-valid``,
    ``expired``).
    """
    certificates = _unique(load_certificates(data))
    wanted = spki_der(key_public_key)
    holders = [cert for cert in certificates if _spki_of(cert) == wanted]
    if not holders:
        lowest = _lowest(certificates)
        check_ca(lowest, key_public_key, now)
        raise CAError(  # check_ca refuses another key already; kept for safety
            CAErrorKind.MISMATCH,
            "no certificate in the CA bundle holds the signing key's public key",
        )
    refusals: list[CAError] = []
    for candidate in holders:
        try:
            check_ca(candidate, key_public_key, now)
        except CAError as err:
            refusals.append(err)
            continue
        return CAChain(_issuers_upward(candidate, [c for c in certificates if c not in holders]))
    raise refusals[0]


def _unique(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    return list(
        {cert.public_bytes(serialization.Encoding.DER): cert for cert in certificates}.values()
    )


def _spki_of(cert: x509.Certificate) -> bytes | None:
    try:
        return spki_der(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return None


def _lowest(certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The first certificate that issued none of the others: the one a reader
    takes for the bundle's CA when none holds the key."""
    for cert in certificates:
        if not any(other is not cert and issued_by(other, cert) for other in certificates):
            return cert
    return certificates[0]


def _issuers_upward(
    ca: x509.Certificate, others: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    chain = [ca]
    rest = list(others)
    current = ca
    while not is_self_signed(current):
        parent = next((cert for cert in rest if issued_by(current, cert)), None)
        if parent is None:
            break
        chain.append(parent)
        rest.remove(parent)
        current = parent
    return tuple(chain)


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
