"""What a successful issuer check leaves for every feature: :class:`CheckedIssuer`.

Everything signing needs (the spec, the identity, the Key Vault key version,
the CA chain, the issuance profile), so a request costs one Key Vault call;
the CA as audit records name it (``audit_ca``, worked out once); and what the check found
about the CA certificate's renewal (:class:`Renewal`, see
:mod:`akv_issuer.controller.ca_lifecycle.renewal`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from akv_issuer.controller.api import IssuerSpec
from akv_issuer.controller.core.issuer import IssuerKey
from akv_issuer.controller.core.pool import MemberRef
from akv_issuer.controller.observability.audit import CAKey, subject_text
from akv_issuer.keyvault import AttestationSummary, AuthConfig, KeyInfo
from akv_issuer.pki import CAChain, IssuerProfile, SignatureAlgorithm

# Reasons of the CARenewalDue condition (and of the renewal metric's result).
DUE_INTERMEDIATE = "IntermediateCA"
DUE_MANUAL = "AutomaticRenewalOff"
RENEWAL_FAILED = "RenewalFailed"
RENEWED = "Renewed"
NOT_DUE = "NotDue"


@dataclass(frozen=True, slots=True)
class Renewal:
    """What an issuer check found about its CA certificate's renewal."""

    reason: str  # one of the reasons above
    message: str

    @property
    def due(self) -> bool:
        """The certificate is in its window and was not renewed."""
        return self.reason in (DUE_INTERMEDIATE, DUE_MANUAL, RENEWAL_FAILED)


@dataclass(frozen=True, slots=True)
class KeyProtection:
    """What the check found about the key leaving Key Vault (issue 24): whether it is
    exportable or has a release policy (let through only by spec.allowExportableKey),
    and, in a Managed HSM, its attestation as checked (``attestation``) or why that
    failed (``attestation_error``, let through only by spec.allowExportableKey)."""

    exportable: bool = False
    has_release_policy: bool = False
    attestation: AttestationSummary | None = None
    attestation_error: str | None = None
    checked_at: dt.datetime | None = None

    @property
    def leaves_vault(self) -> bool:
        """The key can leave Key Vault, or (HSM) nothing shows that it cannot."""
        return self.exportable or self.has_release_policy or self.attestation_error is not None

    def audit_fields(self) -> dict[str, Any]:
        """The audit record's ``ca.key_protection`` (docs/audit.md)."""
        found = self.attestation
        return {
            "exportable": self.exportable,
            "release_policy": self.has_release_policy,
            "attestation": (
                {
                    "result": "Checked",
                    "key_id": found.key_id,
                    "private_key_attestation_sha256": found.private_key_attestation_sha256,
                    "root_sha256": [root.sha256 for root in found.roots],
                }
                if found is not None
                else {"result": "Failed", "message": self.attestation_error}
                if self.attestation_error is not None
                else None
            ),
        }


# status.members[].state (spec.pool)
MEMBER_READY = "Ready"
MEMBER_UNAVAILABLE = "Unavailable"
MEMBER_INVALID = "Invalid"


@dataclass(frozen=True, slots=True)
class MemberState:
    """One pool member as status.members shows it."""

    name: str
    state: str  # MEMBER_READY, MEMBER_UNAVAILABLE or MEMBER_INVALID
    reason: str
    message: str
    key_id: str | None = None
    ca_not_after: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class PoolMember:
    """A pool member that passed its check: its name, its key in the pool's breakers
    (``ref``) and what signing with it needs (``checked``: the issuer as if it had this
    key alone)."""

    name: str
    ref: MemberRef
    checked: CheckedIssuer


@dataclass(frozen=True)
class CheckedIssuer:
    key: IssuerKey
    uid: str
    generation: int
    spec: IssuerSpec
    auth: AuthConfig
    key_info: KeyInfo
    algorithm: SignatureAlgorithm
    ca: CAChain
    profile: IssuerProfile
    checked_at: dt.datetime
    # With keyVersion unset: a version newer than the one signing (the one the
    # CA certificate holds) for which no CA certificate is stored yet.
    pending_key_version: str | None = None
    # The CA certificate is in its renewal window: renewed now, or due (see ca_lifecycle).
    renewal: Renewal | None = None
    # Whether the key can leave Key Vault, and its Managed HSM attestation (issue 24).
    protection: KeyProtection | None = None
    # spec.pool (issue 26): the members that passed their check, each as the checked
    # issuer of that key alone (this object's own fields are the first one's); empty
    # without a pool. And every member's state for status.members.
    members: tuple[PoolMember, ...] = ()
    member_states: tuple[MemberState, ...] = ()
    # spec.pool: seconds until a member set aside may be probed, when the check should
    # come back to do it (None: no member is set aside).
    probe_in: float | None = None

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.ca.ca

    @functools.cached_property
    def audit_ca(self) -> CAKey:
        """The CA as audit records name it, worked out once per checked issuer
        rather than once per certificate (its subject's RFC 4514 string)."""
        return CAKey(
            key_id=self.key_info.kid,
            key_name=self.key_info.name,
            key_version=self.key_info.version,
            ca_subject=subject_text(self.ca_cert.subject),
            key_protection=(
                self.protection.audit_fields() if self.protection is not None else None
            ),
        )

    @property
    def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """The CA first, then its issuers."""
        return self.ca.certificates

    @property
    def ca_pem(self) -> bytes:
        return self.ca.pem()

    @property
    def not_after(self) -> dt.datetime:
        return self.ca.not_after

    @property
    def key_version(self) -> str:
        return self.key_info.version

    @property
    def key_id(self) -> str:
        return self.key_info.kid
