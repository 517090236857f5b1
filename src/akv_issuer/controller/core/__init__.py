"""What every feature of the controller shares, and nothing else.

- value types: :class:`IssuerKey`, :class:`CheckedIssuer` (what a successful
  issuer check leaves), :class:`Renewal`, :class:`CheckFailed` and the Ready
  reason of each Key Vault or CA failure, :class:`IssuerView` (an issuer
  object as the request side reads it);
- the rules written once: the namespace holding an issuer's objects
  (:func:`owner_namespace`), how objects written for an issuer name it, which
  issuer a CertificateRequest addresses;
- the issuer side's interface and the one way to wire a feature to it
  (:class:`IssuerSide`, :class:`IssuerHooks`; :mod:`.hooks`) and what a
  feature's ``setup()`` wires into (:class:`Host`);
- the one way to Key Vault: every call counted, every sign holding a sign slot
  and fenced, the failure text (:class:`KeyVaultGateway`; :mod:`.keyvault_gateway`);
- what a feature says when its Kubernetes permission is missing
  (:mod:`.permissions`: the reason ``Forbidden``, the permission, the value
  granting it);
- the controller's settings (:class:`ControllerConfig`; here rather than in
  ``app`` because the features read them).

Features (``issuers``, ``requests``, ``ca_lifecycle``, ``revocation``,
``identity``) import each other only through this package.
"""

from akv_issuer.controller.core import permissions
from akv_issuer.controller.core.checked import (
    DUE_INTERMEDIATE,
    DUE_MANUAL,
    NOT_DUE,
    RENEWAL_FAILED,
    RENEWED,
    CheckedIssuer,
    KeyProtection,
    Renewal,
)
from akv_issuer.controller.core.config import COMPONENT, FIELD_MANAGER, ControllerConfig
from akv_issuer.controller.core.failures import (
    ADMIN_FIX_RECHECK,
    CheckFailed,
    ca_failure,
    keyvault_failure,
)
from akv_issuer.controller.core.hooks import (
    CARenewal,
    CheckFollower,
    FeatureCondition,
    FollowUp,
    IssuerHooks,
    IssuerListener,
    IssuerSide,
)
from akv_issuer.controller.core.host import Host
from akv_issuer.controller.core.issuer import (
    ANNOTATION_ISSUER,
    LABEL_MANAGED_BY,
    IssuerKey,
    addressed_issuer,
    issuer_identity,
    owner_namespace,
    ownership_conflict,
)
from akv_issuer.controller.core.keyvault_gateway import (
    KeyVault,
    KeyVaultGateway,
    keyvault_failure_text,
)
from akv_issuer.controller.core.view import IssuerView, published_ca

__all__ = [
    "ADMIN_FIX_RECHECK",
    "ANNOTATION_ISSUER",
    "COMPONENT",
    "DUE_INTERMEDIATE",
    "DUE_MANUAL",
    "FIELD_MANAGER",
    "LABEL_MANAGED_BY",
    "NOT_DUE",
    "RENEWAL_FAILED",
    "RENEWED",
    "CARenewal",
    "CheckFailed",
    "CheckFollower",
    "CheckedIssuer",
    "ControllerConfig",
    "FeatureCondition",
    "FollowUp",
    "Host",
    "IssuerHooks",
    "IssuerKey",
    "IssuerListener",
    "IssuerSide",
    "IssuerView",
    "KeyProtection",
    "KeyVault",
    "KeyVaultGateway",
    "Renewal",
    "addressed_issuer",
    "ca_failure",
    "issuer_identity",
    "keyvault_failure",
    "keyvault_failure_text",
    "owner_namespace",
    "ownership_conflict",
    "permissions",
    "published_ca",
]
