"""The Key Vault key version an issuer signs with: usable for this issuer
(enabled, within its validity, allowed to sign) and the signature algorithm
(the issuer's, else the CA's one scheme for the key). Part of the issuer check
(:mod:`.check`); each failure names its Ready reason."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from akv_issuer.ca import signature_algorithm
from akv_issuer.controller.api import IssuerReason, IssuerSpec
from akv_issuer.controller.core import CheckFailed
from akv_issuer.keyvault import KeyInfo
from akv_issuer.pki import AlgorithmError, PKIError, SignatureAlgorithm


def check_usable(spec: IssuerSpec, key_info: KeyInfo, now: dt.datetime) -> None:
    """The key version is enabled, within its validity, allowed to sign, and fits
    the issuer's signature algorithm."""
    if not key_info.enabled:
        raise CheckFailed(IssuerReason.KEY_DISABLED, f"key {spec.key_name!r} is disabled")
    if key_info.not_before is not None and key_info.not_before > now:
        raise CheckFailed(
            IssuerReason.KEY_DISABLED,
            f"key {spec.key_name!r} is not valid before {key_info.not_before.isoformat()}",
        )
    if key_info.expires is not None and key_info.expires <= now:
        raise CheckFailed(
            IssuerReason.KEY_DISABLED,
            f"key {spec.key_name!r} expired at {key_info.expires.isoformat()}",
        )
    if "sign" not in key_info.key_ops:
        raise CheckFailed(
            IssuerReason.KEY_NOT_USABLE,
            f"key {spec.key_name!r} does not allow the sign operation "
            f"(key_ops: {', '.join(key_info.key_ops) or 'none'})",
        )
    issuer_algorithm(spec, key_info)


def issuer_algorithm(
    spec: IssuerSpec, key_info: KeyInfo, ca_cert: x509.Certificate | None = None
) -> SignatureAlgorithm:
    """The issuer's signature algorithm, or the default for the key and the CA
    (PSS when the CA certificate is PSS-signed), if the key fits it."""
    try:
        explicit = (
            SignatureAlgorithm(spec.signature_algorithm) if spec.signature_algorithm else None
        )
        algorithm = signature_algorithm(key_info.public_key, explicit, ca_cert=ca_cert)
    except (AlgorithmError, ValueError) as err:
        reason = err.reason if isinstance(err, PKIError) else str(err)
        raise CheckFailed(IssuerReason.KEY_NOT_USABLE, reason) from None
    return algorithm
