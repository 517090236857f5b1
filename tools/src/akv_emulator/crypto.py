"""Key material for the emulator: generation, JWK export, sign and verify by JWS algorithm."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

RSA_SIZES = (2048, 3072, 4096)
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
# Key Vault binds each ES algorithm to one curve; a mismatch is a client error, not a signature.
_EC_ALG_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "P-256K"}
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class CryptoParameterError(ValueError):
    """The request names an algorithm, digest or key shape this key cannot serve."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int, length: int | None = None) -> bytes:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


@dataclass
class KeyMaterial:
    """A private key plus the JWK facts Key Vault reports for it."""

    kty: str  # as created: RSA, RSA-HSM, EC, EC-HSM
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.private_key, rsa.RSAPrivateKey)

    @property
    def is_hsm(self) -> bool:
        return self.kty.endswith("-HSM")

    @property
    def curve_name(self) -> str | None:
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            for name, curve in CURVES.items():
                if curve.name == self.private_key.curve.name:
                    return name
        return None

    @property
    def size(self) -> int:
        return self.private_key.key_size

    @property
    def limit_class(self) -> str:
        """The class Key Vault's published throttling limits are given for."""
        suffix = "-HSM" if self.is_hsm else ""
        if self.is_rsa:
            return f"RSA-{self.size}{suffix}"
        return f"EC{suffix}"

    def same_shape(self) -> KeyMaterial:
        """A new key of the same type, size or curve and public exponent (Key Vault's rotate)."""
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            exponent = key.public_key().public_numbers().e
            return generate(self.kty, key_size=key.key_size, crv=None, public_exponent=exponent)
        return generate(self.kty, key_size=None, crv=self.curve_name, public_exponent=None)

    def public_jwk(self) -> dict[str, str]:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            numbers = self.private_key.public_key().public_numbers()
            return {
                "n": b64url_encode(_int_bytes(numbers.n)),
                "e": b64url_encode(_int_bytes(numbers.e)),
            }
        pub = self.private_key.public_key().public_numbers()
        length = (self.private_key.curve.key_size + 7) // 8
        return {
            "crv": self.curve_name or "",
            "x": b64url_encode(_int_bytes(pub.x, length)),
            "y": b64url_encode(_int_bytes(pub.y, length)),
        }

    def _check(self, alg: str, digest: bytes) -> hashes.HashAlgorithm:
        if self.is_rsa:
            if alg not in RSA_ALGORITHMS:
                raise CryptoParameterError(f"Algorithm {alg} is not valid for an RSA key.")
        elif _EC_ALG_CURVE.get(alg) != self.curve_name:
            raise CryptoParameterError(
                f"Algorithm {alg} is not valid for an EC key on curve {self.curve_name}."
            )
        digest_alg = _HASHES["256" if alg == "ES256K" else alg[2:]]
        if len(digest) != digest_alg.digest_size:
            raise CryptoParameterError(
                f"Invalid digest length {len(digest)} for algorithm {alg}; "
                f"expected {digest_alg.digest_size} bytes."
            )
        return digest_alg

    def sign(self, alg: str, digest: bytes) -> bytes:
        digest_alg = self._check(alg, digest)
        prehashed = utils.Prehashed(digest_alg)
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding
            if alg.startswith("PS"):
                pad = padding.PSS(mgf=padding.MGF1(digest_alg), salt_length=digest_alg.digest_size)
            else:
                pad = padding.PKCS1v15()
            return key.sign(digest, pad, prehashed)
        der = key.sign(digest, ec.ECDSA(prehashed))
        r, s = utils.decode_dss_signature(der)
        length = (key.curve.key_size + 7) // 8
        return _int_bytes(r, length) + _int_bytes(s, length)

    def verify(self, alg: str, digest: bytes, signature: bytes) -> bool:
        digest_alg = self._check(alg, digest)
        prehashed = utils.Prehashed(digest_alg)
        try:
            if isinstance(self.private_key, rsa.RSAPrivateKey):
                pad: padding.AsymmetricPadding
                if alg.startswith("PS"):
                    pad = padding.PSS(
                        mgf=padding.MGF1(digest_alg), salt_length=digest_alg.digest_size
                    )
                else:
                    pad = padding.PKCS1v15()
                self.private_key.public_key().verify(signature, digest, pad, prehashed)
            else:
                length = (self.private_key.curve.key_size + 7) // 8
                if len(signature) != 2 * length:
                    return False
                r = int.from_bytes(signature[:length], "big")
                s = int.from_bytes(signature[length:], "big")
                der = utils.encode_dss_signature(r, s)
                self.private_key.public_key().verify(der, digest, ec.ECDSA(prehashed))
        except InvalidSignature:
            return False
        return True


def generate(
    kty: str, *, key_size: int | None, crv: str | None, public_exponent: int | None
) -> KeyMaterial:
    """Make a new key as Key Vault's create operation would.

    Raises CryptoParameterError on bad input.
    """
    if kty in ("RSA", "RSA-HSM"):
        size = key_size or 2048
        if size not in RSA_SIZES:
            raise CryptoParameterError(
                f"Invalid key size {size}; supported RSA sizes are "
                f"{', '.join(map(str, RSA_SIZES))}."
            )
        exponent = public_exponent or 65537
        if exponent not in (3, 65537):
            raise CryptoParameterError(f"Unsupported public exponent {exponent}.")
        return KeyMaterial(kty, rsa.generate_private_key(public_exponent=exponent, key_size=size))
    if kty in ("EC", "EC-HSM"):
        curve_name = crv or "P-256"
        curve = CURVES.get(curve_name)
        if curve is None:
            raise CryptoParameterError(
                f"Invalid curve {curve_name}; supported curves are {', '.join(CURVES)}."
            )
        return KeyMaterial(kty, ec.generate_private_key(curve))
    raise CryptoParameterError(
        f"Unsupported key type {kty!r}; the emulator creates RSA, RSA-HSM, EC and EC-HSM keys."
    )
