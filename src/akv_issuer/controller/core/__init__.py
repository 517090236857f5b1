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
- every Key Vault call counted, every sign fenced (:mod:`.keyvault_calls`);
- the controller's settings (:class:`ControllerConfig`; here rather than in
  ``app`` because the features read them).

Features (``issuers``, ``requests``, ``ca_lifecycle``, ``revocation``,
``identity``) import each other only through this package.
"""

from akv_issuer.controller.core.checked import (
    DUE_INTERMEDIATE,
    DUE_MANUAL,
    NOT_DUE,
    RENEWAL_FAILED,
    RENEWED,
    CheckedIssuer,
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
from akv_issuer.controller.core.keyvault_calls import (
    CountedCall,
    FencedSigner,
    IssuerSigners,
    KeyVaultCalls,
    SignSlots,
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
    "CountedCall",
    "FeatureCondition",
    "FencedSigner",
    "FollowUp",
    "Host",
    "IssuerHooks",
    "IssuerKey",
    "IssuerListener",
    "IssuerSide",
    "IssuerSigners",
    "IssuerView",
    "KeyVaultCalls",
    "Renewal",
    "SignSlots",
    "addressed_issuer",
    "ca_failure",
    "issuer_identity",
    "keyvault_failure",
    "owner_namespace",
    "ownership_conflict",
    "published_ca",
]
