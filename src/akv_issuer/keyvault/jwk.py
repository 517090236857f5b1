"""Key Vault's JSON Web Keys and this package's :class:`KeyInfo`: the public key
of a JWK, the JWK of a public key (for a signer that must not fetch it again),
and the local refusal of a sign Key Vault would refuse."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_issuer.pki import SignatureAlgorithm

from .errors import ErrorKind, KeyVaultError
from .models import KeyInfo, PublicKey

if TYPE_CHECKING:
    from azure.keyvault.keys import JsonWebKey, KeyVaultKey

CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}


def text(value: Any) -> str:
    """An SDK enum member or plain string as its wire text (str() of an enum is its name)."""
    return str(getattr(value, "value", value) or "")


def public_key(jwk: JsonWebKey) -> PublicKey:
    # JsonWebKey sets its fields dynamically, so they are read with getattr for the type checker.
    kty = text(getattr(jwk, "kty", None))
    n, e = getattr(jwk, "n", None), getattr(jwk, "e", None)
    x, y, crv = getattr(jwk, "x", None), getattr(jwk, "y", None), getattr(jwk, "crv", None)
    if kty in ("RSA", "RSA-HSM") and n and e:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
        return numbers.public_key()
    if kty in ("EC", "EC-HSM") and x and y:
        curve = CURVES.get(text(crv))
        if curve is None:
            raise KeyVaultError(
                ErrorKind.PERMANENT, f"unsupported EC curve {crv!r}", code="UnsupportedKeyType"
            )
        point = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return point.public_key()
    raise KeyVaultError(
        ErrorKind.PERMANENT,
        f"key type {kty or 'unknown'} cannot sign certificates; use RSA, RSA-HSM, EC or EC-HSM",
        code="UnsupportedKeyType",
    )


def key_info(vault_url: str, key: KeyVaultKey) -> KeyInfo:
    props = key.properties
    return KeyInfo(
        vault_url=vault_url,
        name=key.name,
        version=str(props.version or ""),
        kid=str(key.id),
        kty=text(key.key_type),
        public_key=public_key(key.key),
        enabled=bool(props.enabled),
        key_ops=tuple(text(op) for op in (key.key_operations or [])),
        not_before=props.not_before,
        expires=props.expires_on,
        exportable=bool(props.exportable),
        has_release_policy=props.release_policy is not None,
    )


def check_sign_request(key: KeyInfo, algorithm: SignatureAlgorithm, digest: bytes) -> None:
    """Refuse locally what Key Vault would refuse: wrong key type or digest length.

    The algorithm's facts (RSA or EC, its curve, its digest size) come from
    :class:`akv_issuer.pki.SignatureAlgorithm`; this layer only words the refusal
    as the vault's BadParameter, so a caller handles it like any permanent error.
    """
    if algorithm.is_rsa:
        if not isinstance(key.public_key, rsa.RSAPublicKey):
            raise KeyVaultError(
                ErrorKind.PERMANENT,
                f"algorithm {algorithm} needs an RSA key but {key.name} is {key.kty}",
                code="BadParameter",
                operation="sign",
            )
    else:
        curve = algorithm.curve
        if (
            curve is None
            or not isinstance(key.public_key, ec.EllipticCurvePublicKey)
            or not isinstance(key.public_key.curve, curve)
        ):
            on_curve = (
                f" on {key.public_key.curve.name}"
                if isinstance(key.public_key, ec.EllipticCurvePublicKey)
                else ""
            )
            raise KeyVaultError(
                ErrorKind.PERMANENT,
                f"algorithm {algorithm} needs an EC {_curve_name(curve)} key but {key.name} is "
                f"{key.kty}{on_curve}",
                code="BadParameter",
                operation="sign",
            )
    size = algorithm.hash_algorithm.digest_size
    if len(digest) != size:
        raise KeyVaultError(
            ErrorKind.PERMANENT,
            f"{algorithm} needs a {size}-byte digest, got {len(digest)} bytes",
            code="BadParameter",
            operation="sign",
        )


def _curve_name(curve: type[ec.EllipticCurve] | None) -> str:
    return next((name for name, c in CURVES.items() if type(c) is curve), "unknown curve")


def jwk_of(key: KeyInfo) -> dict[str, Any]:
    """The public JWK of ``key`` as the SDK's ``KeyVaultKey`` takes it, so a
    CryptographyClient built from it does not fetch the key again before signing."""
    jwk: dict[str, Any] = {"kid": key.kid, "kty": key.kty, "key_ops": list(key.key_ops)}
    if isinstance(key.public_key, rsa.RSAPublicKey):
        numbers = key.public_key.public_numbers()
        jwk["n"] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        jwk["e"] = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    else:
        pub = key.public_key.public_numbers()
        length = (key.public_key.curve.key_size + 7) // 8
        crv = next(n for n, c in CURVES.items() if c.name == key.public_key.curve.name)
        jwk.update(crv=crv, x=pub.x.to_bytes(length, "big"), y=pub.y.to_bytes(length, "big"))
    return jwk
