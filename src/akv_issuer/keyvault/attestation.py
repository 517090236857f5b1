"""Managed HSM key attestation: what Key Vault answers, and what can be checked of it here.

``GET /keys/{name}/{version}/attestation`` (api-version 2025-07-01; azure-keyvault-keys
>= 4.11 ``KeyClient.get_key_attestation``) answers the key bundle of that version with
``attributes.attestation``: ``certificatePemFile`` (the certificates vouching for the
HSM's statements), ``privateKeyAttestation`` and ``publicKeyAttestation`` (the HSM's
signed statements about the key, in the HSM vendor's binary format) and a
``version``. Microsoft's validator (azure-managed-hsm-key-attestation,
``validate_attestation.py``) chains the certificates to the vendor's (Marvell's)
root and a Microsoft certificate, checks the statements' signatures and reads the
key's attributes from them.

What :func:`check_attestation` checks, without those roots and without parsing the
vendor's format (honestly: nothing here can tell a real HSM's statement from a
forged one; that takes the vendor's root, which the user verifies):

- the answer is about exactly this key version (its key ID) and attests exactly its
  public key;
- Key Vault's attested attributes say the key is not exportable and has no release
  policy (so it cannot leave the HSM by secure key release);
- there is a private-key statement (and, for an RSA or EC key, a public-key one) and
  the certificate file holds at least one X.509 certificate.

:class:`AttestationSummary` records what a user needs to do the rest: the SHA-256 of
each statement and of each root certificate in the file, to compare with what
Microsoft's validator reads from ``az keyvault key get-attestation`` of the same
version and with the vendor's published root.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .models import PublicKey


class AttestationError(Exception):
    """An attestation that does not show what it must; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyAttestation:
    """What the attestation answer says (the SDK's KeyVaultKey, read once)."""

    kid: str
    public_key: PublicKey | None
    exportable: bool | None
    has_release_policy: bool
    hsm_platform: str | None
    version: str | None
    certificate_pem_file: bytes
    private_key_attestation: bytes
    public_key_attestation: bytes


def attestation_from_sdk(key: Any, public_key: PublicKey | None) -> KeyAttestation:
    """A KeyAttestation from the SDK's ``KeyVaultKey`` of ``get_key_attestation`` and the
    public key read from its JWK (None when it holds none that can sign)."""
    props = key.properties
    found = props.attestation
    return KeyAttestation(
        kid=str(key.id or ""),
        public_key=public_key,
        exportable=props.exportable,
        has_release_policy=props.release_policy is not None,
        hsm_platform=props.hsm_platform,
        version=getattr(found, "version", None),
        certificate_pem_file=bytes(getattr(found, "certificate_pem_file", None) or b""),
        private_key_attestation=bytes(getattr(found, "private_key_attestation", None) or b""),
        public_key_attestation=bytes(getattr(found, "public_key_attestation", None) or b""),
    )


@dataclass(frozen=True)
class AttestationRoot:
    """A self-signed certificate of the attestation's certificate file."""

    subject: str
    sha256: str


@dataclass(frozen=True)
class AttestationSummary:
    """What the controller checked, and what a user compares with Microsoft's validator."""

    key_id: str
    format_version: str | None
    hsm_platform: str | None
    private_key_attestation_sha256: str
    public_key_attestation_sha256: str | None
    certificates: int
    roots: tuple[AttestationRoot, ...]


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _same_version(kid: str, wanted_kid: str) -> bool:
    """Key IDs compare by vault host, name (without case) and version (exactly)."""
    parts = kid.rstrip("/").split("/")
    wanted = wanted_kid.rstrip("/").split("/")
    return (
        len(parts) == len(wanted)
        and [p.lower() for p in parts[:-1]] == [p.lower() for p in wanted[:-1]]
        and parts[-1] == wanted[-1]
    )


def check_attestation(
    attested: KeyAttestation, *, kid: str, public_key: PublicKey
) -> AttestationSummary:
    """Check an attestation answer against the key version it was asked for (its key
    ID with version, and its public key as read with ``get_key``); raise
    :class:`AttestationError` naming the first thing it does not show."""
    if not _same_version(attested.kid, kid):
        raise AttestationError(f"the attestation is for {attested.kid or 'no key'}, not for {kid}")
    if attested.public_key is None or _spki(attested.public_key) != _spki(public_key):
        raise AttestationError("the attested public key is not the key's")
    if attested.exportable:
        raise AttestationError("the attestation says the key is exportable")
    if attested.has_release_policy:
        raise AttestationError("the attestation says the key has a release policy")
    if not attested.private_key_attestation:
        raise AttestationError("the answer holds no private-key attestation")
    if not attested.public_key_attestation:
        raise AttestationError("the answer holds no public-key attestation")
    try:
        certificates = x509.load_pem_x509_certificates(attested.certificate_pem_file)
    except ValueError:
        raise AttestationError("the attestation's certificate file holds no certificate") from None
    roots = tuple(
        AttestationRoot(c.subject.rfc4514_string(), c.fingerprint(hashes.SHA256()).hex())
        for c in certificates
        if c.subject == c.issuer
    )
    public_statement = attested.public_key_attestation
    return AttestationSummary(
        key_id=attested.kid,
        format_version=attested.version,
        hsm_platform=attested.hsm_platform,
        private_key_attestation_sha256=hashlib.sha256(attested.private_key_attestation).hexdigest(),
        public_key_attestation_sha256=hashlib.sha256(public_statement).hexdigest(),
        certificates=len(certificates),
        roots=roots,
    )
