"""Key-type facts shared by the CSR checks, the signer and the CA checks."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dh,
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

# Named by the NIST names users see in `openssl x509 -text` and in Key Vault.
CURVE_NAMES: dict[type[ec.EllipticCurve], str] = {
    ec.SECP256R1: "P-256",
    ec.SECP384R1: "P-384",
    ec.SECP521R1: "P-521",
}


def describe_key(key: PublicKeyTypes) -> str:
    """A short human name for a public key, for error messages."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = CURVE_NAMES.get(type(key.curve), key.curve.name)
        return f"ECDSA {curve}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, x25519.X25519PublicKey):
        return "X25519"
    if isinstance(key, x448.X448PublicKey):
        return "X448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}-bit"
    if isinstance(key, dh.DHPublicKey):
        return "Diffie-Hellman"
    return type(key).__name__


def spki_der(key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo: the canonical form to compare two public keys."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
