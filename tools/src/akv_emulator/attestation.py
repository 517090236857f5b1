"""Key attestation of the emulator's Managed HSM mode.

Key Vault's ``GET /keys/{name}/{version}/attestation`` (api-version 2025-07-01;
azure-keyvault-keys >= 4.11 ``get_key_attestation``) answers the key bundle with
``attributes.attestation``: ``certificatePemFile`` (the certificates that vouch
for the attestation, PEM), ``privateKeyAttestation`` and ``publicKeyAttestation``
(the HSM's signed statements about the key, binary), each base64url, and a
``version``. Azure's statements are in the HSM vendor's (Marvell's) binary format,
chaining up to the vendor's root and a Microsoft certificate; that format is not
reproduced here. The emulator's statements are its own, shaped alike and signed by
a throwaway attestation CA made per process:

    b"AKVEMU-ATTEST\\x00" | u32 count | count x (u32 type, u32 length, value) | signature

big-endian, the attributes numbered as PKCS#11 numbers them (CKA_*), the
signature RSASSA-PKCS1-v1_5 with SHA-256 by the partition certificate's key over
everything before it (its last 256 bytes). ``certificatePemFile`` holds the
partition certificate, then the attestation root. A key generated in the HSM is
``CKA_LOCAL`` 1; one imported (a certificate import) 0. ``CKA_EXTRACTABLE`` is
the key's ``exportable``; ``CKA_NEVER_EXTRACTABLE`` its opposite.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

MAGIC = b"AKVEMU-ATTEST\x00"
FORMAT_VERSION = "1.0.0"
SIGNATURE_LENGTH = 256  # RSA-2048

# PKCS#11 attribute types and values used in the statements.
CKA_CLASS = 0x000
CKA_KEY_TYPE = 0x100
CKA_ID = 0x102
CKA_SENSITIVE = 0x103
CKA_MODULUS = 0x120
CKA_PUBLIC_EXPONENT = 0x122
CKA_EXTRACTABLE = 0x162
CKA_LOCAL = 0x163
CKA_NEVER_EXTRACTABLE = 0x164
CKA_ALWAYS_SENSITIVE = 0x165
CKA_EC_POINT = 0x181
CKO_PUBLIC_KEY = 2
CKO_PRIVATE_KEY = 3
CKK_RSA = 0
CKK_EC = 3


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "akv-emulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class AttestationAuthority:
    """The emulator's attestation CA (root) and the HSM partition certificate it
    issued, whose key signs every statement. Throwaway: made per process."""

    partition_key: rsa.RSAPrivateKey
    partition: x509.Certificate
    root: x509.Certificate

    @classmethod
    def create(cls) -> AttestationAuthority:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        root_name = _name("akv-emulator attestation root (throwaway)")
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(root_key, hashes.SHA256())
        )
        partition_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        partition = (
            x509.CertificateBuilder()
            .subject_name(_name("akv-emulator HSM partition"))
            .issuer_name(root_name)
            .public_key(partition_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        return cls(partition_key, partition, root)

    def certificate_pem_file(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.partition, self.root)
        )

    def statement(
        self, kid: str, public_key: object, *, private: bool, exportable: bool, local: bool
    ) -> bytes:
        """A signed statement about one key version (its private or its public part)."""
        attributes: list[tuple[int, bytes]] = [
            (CKA_CLASS, _u32(CKO_PRIVATE_KEY if private else CKO_PUBLIC_KEY)),
            (CKA_ID, kid.encode()),
            (CKA_LOCAL, _flag(local)),
        ]
        if isinstance(public_key, rsa.RSAPublicKey):
            numbers = public_key.public_numbers()
            attributes += [
                (CKA_KEY_TYPE, _u32(CKK_RSA)),
                (CKA_MODULUS, numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                (CKA_PUBLIC_EXPONENT, numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            ]
        else:
            point = public_key.public_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            attributes += [(CKA_KEY_TYPE, _u32(CKK_EC)), (CKA_EC_POINT, point)]
        if private:
            attributes += [
                (CKA_SENSITIVE, _flag(True)),
                (CKA_ALWAYS_SENSITIVE, _flag(True)),
                (CKA_EXTRACTABLE, _flag(exportable)),
                (CKA_NEVER_EXTRACTABLE, _flag(not exportable)),
            ]
        body = MAGIC + _u32(len(attributes))
        for kind, value in attributes:
            body += struct.pack(">II", kind, len(value)) + value
        signature = self.partition_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return body + signature


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _flag(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def read_statement(blob: bytes) -> dict[int, bytes]:
    """The attributes of a statement (without checking its signature); ValueError when
    it is not one of the emulator's. For the emulator's own tests."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4 + SIGNATURE_LENGTH:
        raise ValueError("not an akv-emulator attestation statement")
    body = blob[:-SIGNATURE_LENGTH]
    (count,) = struct.unpack_from(">I", body, len(MAGIC))
    offset = len(MAGIC) + 4
    attributes: dict[int, bytes] = {}
    for _ in range(count):
        kind, length = struct.unpack_from(">II", body, offset)
        offset += 8
        attributes[kind] = body[offset : offset + length]
        offset += length
    if offset != len(body):
        raise ValueError("trailing bytes after the attributes")
    return attributes
