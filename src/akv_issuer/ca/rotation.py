"""The steps of rotating a root CA held in Key Vault (``akv-issuer ca rotate``).

Rotating is several steps that must happen in one order: a new key version (or
a new key), a root certificate for it (same subject and path length, signed by
that version through Key Vault), and that certificate stored as a new version
of the CA secret. A running issuer with ``keyVersion`` unset keeps signing
with the old version until the new secret version holds a certificate for the
new one (:func:`akv_issuer.ca.key_version_of_ca`), then switches at its next
check. So a certificate is never stored for a key version that was not just
certified, and a key version left without a certificate (a failed run, or Key
Vault's own rotation policy) is certified by rotating again, which then makes
no new version (:attr:`RotationStep.CERTIFY_PENDING`). Intermediates are not
rotated here: their parent signs them.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_issuer.ca.errors import KeyExists
from akv_issuer.ca.root import (
    RootTemplate,
    StoredRoot,
    check_root,
    check_signing_key,
    recertify_root,
    signature_algorithm,
)
from akv_issuer.ca.vault import CAVault
from akv_issuer.ca.versions import CurrentCA
from akv_issuer.keyvault import ErrorKind, KeyInfo, KeyVaultError
from akv_issuer.pki import SignatureAlgorithm

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class RotationStep(enum.StrEnum):
    """Where the key version of the new root comes from."""

    NEW_VERSION = "new-version"
    """Key Vault's rotate: a new version of the same key."""
    CERTIFY_PENDING = "certify-pending"
    """The newest version has no CA certificate yet: certify it, make none."""
    NEW_KEY = "new-key"
    """A new key of the same type and size or curve, beside the old one."""


@dataclass(frozen=True)
class RotationPlan:
    """What a rotation will do, decided before anything changes."""

    current: CurrentCA
    step: RotationStep
    key_name: str
    """The key that gets the new version, or the new key (``NEW_KEY``)."""
    secret_name: str
    """The secret the new root is stored in (the new key's name for ``NEW_KEY``)."""
    template: RootTemplate


def plan_rotation(
    current: CurrentCA,
    *,
    key_name: str,
    secret_name: str,
    new_key_name: str | None = None,
    lifetime: dt.timedelta | None = None,
) -> RotationPlan:
    """The rotation of the root ``current`` (see :func:`akv_issuer.ca.current_ca`).

    Raises :class:`akv_issuer.ca.NotACACertificate` or
    :class:`akv_issuer.ca.NotARoot` for anything but a self-signed root."""
    check_root(current.cert)
    template = RootTemplate.renewing(current.cert, lifetime=lifetime)
    if new_key_name is not None:
        return RotationPlan(current, RotationStep.NEW_KEY, new_key_name, new_key_name, template)
    step = RotationStep.CERTIFY_PENDING if current.pending else RotationStep.NEW_VERSION
    return RotationPlan(current, step, key_name, secret_name, template)


def key_shape(key: KeyInfo) -> str:
    """A key's type and size or curve, e.g. ``RSA 3072`` or ``EC-HSM P-384``."""
    if isinstance(key.public_key, rsa.RSAPublicKey):
        return f"{key.kty} {key.public_key.key_size}"
    return f"{key.kty} {_curve_name(key.public_key)}"


def _curve_name(public_key: ec.EllipticCurvePublicKey) -> str:
    return _CURVE_NAMES.get(public_key.curve.name, public_key.curve.name)


async def refuse_existing_key(vault: CAVault, name: str) -> None:
    """Raise :class:`KeyExists` if key ``name`` exists (``NEW_KEY`` must make it)."""
    try:
        existing = await vault.get_key(name)
    except KeyVaultError as exc:
        if exc.kind is not ErrorKind.NOT_FOUND:
            raise
    else:
        raise KeyExists(existing)


async def create_key_like(vault: CAVault, name: str, like: KeyInfo) -> KeyInfo:
    """A new key ``name`` of ``like``'s type and size or curve."""
    public = like.public_key
    if isinstance(public, rsa.RSAPublicKey):
        size, curve = public.key_size, None
    else:
        size, curve = None, _curve_name(public)
    return await vault.create_key(name, kty=like.kty, size=size, curve=curve)


async def new_key_version(vault: CAVault, plan: RotationPlan) -> KeyInfo:
    """The first step: the key version the new root is for."""
    if plan.step is RotationStep.NEW_KEY:
        return await create_key_like(vault, plan.key_name, plan.current.key)
    if plan.step is RotationStep.CERTIFY_PENDING:
        return plan.current.latest
    return await vault.rotate_key(plan.key_name)


async def certify_new_root(
    vault: CAVault,
    plan: RotationPlan,
    key: KeyInfo,
    now: dt.datetime,
    *,
    algorithm: SignatureAlgorithm | None = None,
    pss: bool = False,
) -> StoredRoot:
    """The second and third steps: the root for ``key`` (from the first step),
    signed by it through Key Vault with ``algorithm`` or the CA's scheme (PSS
    when ``pss`` or when the current root is PSS-signed), stored as a new
    version of the plan's secret. Raises :class:`akv_issuer.ca.KeyNotUsable`
    before anything is signed for a key version that may not sign."""
    check_signing_key(key)
    chosen = signature_algorithm(key.public_key, algorithm, ca_cert=plan.current.cert, pss=pss)
    return await recertify_root(
        vault, plan.secret_name, key, plan.template, chosen, vault.signer(key), now
    )
