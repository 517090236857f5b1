"""The CA rules, written once for the CLI (``akv-issuer ca ...``, ``sign``)
and the controller (the issuer check, CA renewal).

A layer between :mod:`akv_issuer.keyvault` and its users: it imports ``pki``
and ``keyvault`` only, never ``runtime``, ``controller`` or ``cli``.

- key-version discovery (:mod:`.versions`): which key version the CA
  certificate in a CA secret holds (:func:`key_version_of_ca` for the issuer
  check, :func:`current_ca` for ``ca rotate``), and which secret version holds
  the CA certificate of a key version (:func:`ca_of_key_version`, for ``ca crl``
  and ``sign`` with ``--key-version``);
- root certification (:mod:`.root`): same subject and path length, a new
  validity, the same key version or a new one, the CA's one signature scheme
  (:func:`signature_algorithm`), checked, stored as a new secret version
  (:func:`recertify_root`); ``ca create``'s first root through
  :func:`certify_root`;
- rotation steps (:mod:`.rotation`): :func:`plan_rotation`, then
  :func:`new_key_version`, then :func:`certify_new_root`.

Key Vault is reached through :class:`CAVault` (one vault, one identity) over a
:class:`VaultAccess`: the CLI's ``KeyVaultAccess``, or the controller's Key
Vault gateway, which counts every call and fences every sign. Refusals are
:class:`CARuleError` subclasses carrying their facts; callers word them.
"""

from akv_issuer.ca.errors import (
    CARuleError,
    CASecretNotFound,
    KeyExists,
    KeyNotUsable,
    KeyVersionUnreadable,
    NoKeyVersionForCA,
    NoSecretVersionForKey,
    NotACACertificate,
    NotARoot,
    SecretVersionsUnlisted,
)
from akv_issuer.ca.root import (
    RootTemplate,
    StoredRoot,
    certify_root,
    check_root,
    check_signing_key,
    recertify_root,
    signature_algorithm,
)
from akv_issuer.ca.rotation import (
    RotationPlan,
    RotationStep,
    certify_new_root,
    create_key_like,
    key_shape,
    new_key_version,
    plan_rotation,
    refuse_existing_key,
)
from akv_issuer.ca.vault import CAVault, Count, VaultAccess, uncounted
from akv_issuer.ca.versions import (
    CurrentCA,
    ca_of_key_version,
    certificate_for,
    current_ca,
    holds_key,
    key_version_of_ca,
)

__all__ = [
    "CARuleError",
    "CASecretNotFound",
    "CAVault",
    "Count",
    "CurrentCA",
    "KeyExists",
    "KeyNotUsable",
    "KeyVersionUnreadable",
    "NoKeyVersionForCA",
    "NoSecretVersionForKey",
    "NotACACertificate",
    "NotARoot",
    "RootTemplate",
    "RotationPlan",
    "RotationStep",
    "SecretVersionsUnlisted",
    "StoredRoot",
    "VaultAccess",
    "ca_of_key_version",
    "certificate_for",
    "certify_new_root",
    "certify_root",
    "check_root",
    "check_signing_key",
    "create_key_like",
    "current_ca",
    "holds_key",
    "key_shape",
    "key_version_of_ca",
    "new_key_version",
    "plan_rotation",
    "recertify_root",
    "refuse_existing_key",
    "signature_algorithm",
    "uncounted",
]
