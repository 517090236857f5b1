"""The status of an Issuer / ClusterIssuer after a check, built without I/O.

``Ready`` (with ``observedGeneration``), the CA fields (``caCertificate``,
``keyID``, ``keyVersion``, ``signatureAlgorithm``, ``caNotAfter``) and
``lastCheckTime``; ``KeyVersionPending`` once the key has been rotated, and
``CARenewalDue`` once the CA certificate has been in its renewal window.
``lastTransitionTime`` moves only when a condition's status changes. The
whole status is applied each time (server-side apply drops owned fields that
are left out), so what a failed check cannot speak about is carried over:
the CA fields during a passing Key Vault outage, and the optional conditions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final, Literal

from akv_issuer.controller.api import (
    CONDITION_CA_RENEWAL_DUE,
    CONDITION_KEY_VERSION_PENDING,
    CONDITION_READY,
    KEY_VERSION_CURRENT_REASON,
    KEY_VERSION_PENDING_REASON,
    Condition,
    ConditionStatus,
    IssuerReason,
    build_issuer_status,
    conditions_of,
    find_condition,
    format_time,
    make_condition,
)
from akv_issuer.controller.api.objects import ConditionFields, IssuerObject, IssuerStatus
from akv_issuer.controller.core import (
    NOT_DUE,
    CheckedIssuer,
    CheckFailed,
    FeatureCondition,
    KeyProtection,
)
from akv_issuer.controller.core.checked import MEMBER_READY

# Status fields that describe the CA; a passing outage keeps them as they were.
_CA_FIELDS: Final[
    tuple[
        Literal[
            "caCertificate",
            "keyID",
            "keyVersion",
            "signatureAlgorithm",
            "caNotAfter",
            "keyAttestation",
        ],
        ...,
    ]
] = ("caCertificate", "keyID", "keyVersion", "signatureAlgorithm", "caNotAfter", "keyAttestation")


def issuer_status(
    obj: IssuerObject,
    *,
    now: dt.datetime,
    checked: CheckedIssuer | None = None,
    failure: CheckFailed | None = None,
    conditions: Sequence[FeatureCondition] = (),
    kept: Sequence[str] = (),
) -> IssuerStatus:
    """The status to apply after a check that passed (``checked``) or failed.

    ``conditions``: those the features following a passed check own (the
    Reissuing condition while Certificates are being re-issued, see
    ``core.hooks``); ``kept``: the types of every such condition, which a
    failed check keeps as they are."""
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    old_status = obj.get("status") or {}
    old_ready = find_condition(conditions_of(obj), CONDITION_READY)
    if checked is not None:
        status_value, reason, message = (
            ConditionStatus.TRUE,
            str(IssuerReason.CHECKED),
            ready_message(checked),
        )
    elif failure is not None:
        status_value, reason, message = (
            ConditionStatus.FALSE,
            str(failure.reason),
            failure.message,
        )
    else:
        raise TypeError("issuer_status needs a checked issuer or a failure")
    condition = make_condition(
        CONDITION_READY, status_value, reason, message, observed_generation=generation, now=now
    )
    if (
        old_ready is not None
        and old_ready.status == str(status_value)
        and old_ready.last_transition_time
    ):
        condition["lastTransitionTime"] = old_ready.last_transition_time
    written = [condition]
    features = (
        (_optional_condition(obj, c.type, c.active, c.inactive, True, now) for c in conditions)
        if checked is not None
        else (_optional_condition(obj, type_, None, ("", ""), False, now) for type_ in kept)
    )
    for optional in (
        _key_version_condition(obj, checked, now),
        _renewal_condition(obj, checked, now),
        *features,
    ):
        if optional is not None:
            written.append(optional)
    if checked is not None:
        status = build_issuer_status(
            conditions=written,
            ca_certificate_pem=checked.ca_pem,
            key_id=checked.key_id or None,
            key_version=checked.key_version or None,
            signature_algorithm=str(checked.algorithm),
            ca_not_after=checked.not_after,
            last_check_time=now,
            key_attestation=key_attestation_status(checked.protection),
            members=members_status(checked) if checked.member_states else None,
        )
    else:
        status = build_issuer_status(conditions=written, last_check_time=now)
        if failure is not None and failure.reason in (
            IssuerReason.THROTTLED,
            IssuerReason.KEY_VAULT_UNREACHABLE,
        ):
            # A passing outage says nothing new about the CA: keep what
            # consumers of status.caCertificate already rely on.
            for field_name in _CA_FIELDS:
                if field_name in old_status:
                    status[field_name] = old_status[field_name]
    return status


def _key_version_condition(
    obj: IssuerObject, checked: CheckedIssuer | None, now: dt.datetime
) -> ConditionFields | None:
    """KeyVersionPending: a newer key version waits for its CA certificate."""
    active = None
    if checked is not None and checked.pending_key_version:
        active = (
            KEY_VERSION_PENDING_REASON,
            f"key version {checked.pending_key_version} is newer than version "
            f"{checked.key_version}, which the CA certificate holds, and has no CA "
            f"certificate in {checked.spec.ca_description} yet; signing continues "
            f"with version {checked.key_version}",
        )
    inactive = (
        KEY_VERSION_CURRENT_REASON,
        f"the CA certificate holds the latest key version {checked.key_version}"
        if checked is not None
        else "",
    )
    return _optional_condition(
        obj, CONDITION_KEY_VERSION_PENDING, active, inactive, checked is not None, now
    )


def _renewal_condition(
    obj: IssuerObject, checked: CheckedIssuer | None, now: dt.datetime
) -> ConditionFields | None:
    """CARenewalDue: the CA certificate is in its renewal window and not renewed."""
    renewal = checked.renewal if checked is not None else None
    active = (renewal.reason, renewal.message) if renewal is not None and renewal.due else None
    inactive = (
        (renewal.reason, renewal.message)
        if renewal is not None
        else (NOT_DUE, "the CA certificate is not in its renewal window")
    )
    return _optional_condition(
        obj, CONDITION_CA_RENEWAL_DUE, active, inactive, checked is not None, now
    )


def _optional_condition(
    obj: IssuerObject,
    type_: str,
    active: tuple[str, str] | None,
    inactive: tuple[str, str],
    checked: bool,
    now: dt.datetime,
) -> ConditionFields | None:
    """A condition that appears only once it has something to say.

    True with ``active`` (reason, message) while that holds; once it has
    appeared, False with ``inactive`` after it ends; never written for an
    issuer it never concerned. A failed check knows nothing new about it and
    keeps what is there.
    """
    old = find_condition(conditions_of(obj), type_)
    if not checked:
        return _condition_dict(old) if old is not None else None
    if active is not None:
        status, (reason, message) = ConditionStatus.TRUE, active
    elif old is not None:
        status, (reason, message) = ConditionStatus.FALSE, inactive
    else:
        return None
    condition = make_condition(
        type_,
        status,
        reason,
        message,
        observed_generation=int((obj.get("metadata") or {}).get("generation") or 0),
        now=now,
    )
    if old is not None and old.status == str(status) and old.last_transition_time:
        condition["lastTransitionTime"] = old.last_transition_time
    return condition


def _condition_dict(condition: Condition) -> ConditionFields:
    """A condition as read, in the shape it is written back."""
    written: ConditionFields = {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
    }
    if condition.last_transition_time:
        written["lastTransitionTime"] = condition.last_transition_time
    if condition.observed_generation is not None:
        written["observedGeneration"] = condition.observed_generation
    return written


def members_status(checked: CheckedIssuer) -> list[dict[str, Any]]:
    """``status.members``: each pool member's state."""
    written: list[dict[str, Any]] = []
    for state in checked.member_states:
        member: dict[str, Any] = {
            "name": state.name,
            "state": state.state,
            "reason": state.reason,
            "message": state.message,
        }
        if state.key_id:
            member["keyID"] = state.key_id
        if state.ca_not_after is not None:
            member["caNotAfter"] = format_time(state.ca_not_after)
        written.append(member)
    return written


def pool_summary(checked: CheckedIssuer) -> str:
    """``pool of 3: a, b Ready; c Unavailable (Throttled)``."""
    groups: dict[str, list[str]] = {}
    for state in checked.member_states:
        label = state.state if state.state == MEMBER_READY else f"{state.state} ({state.reason})"
        groups.setdefault(label, []).append(state.name)
    parts = "; ".join(f"{', '.join(names)} {label}" for label, names in groups.items())
    return f"pool of {len(checked.member_states)}: {parts}"


def ready_message(checked: CheckedIssuer) -> str:
    if checked.member_states:
        return (
            f"{pool_summary(checked)}; {len(checked.members)} member(s) sign, each "
            f"certificate with one member's chain"
        )
    message = (
        f"key {checked.spec.key_name} version {checked.key_version} signs with "
        f"{checked.algorithm}; CA {checked.ca_cert.subject.rfc4514_string()} valid until "
        f"{format_time(checked.not_after)}"
    )
    protection = checked.protection
    if protection is None:
        return message
    if protection.attestation is not None:
        message += "; Managed HSM attestation checked (status.keyAttestation)"
    if protection.leaves_vault:
        found = [
            text
            for flag, text in (
                (protection.exportable, "is exportable"),
                (protection.has_release_policy, "has a release policy"),
                (protection.attestation_error is not None, "has no attestation that passed"),
            )
            if flag
        ]
        message += (
            f"; WARNING: the key {' and '.join(found)}, so it may leave Key Vault "
            f"(allowed by spec.allowExportableKey)"
        )
    return message


def key_attestation_status(protection: KeyProtection | None) -> dict[str, Any] | None:
    """``status.keyAttestation`` (Managed HSM): the attestation as checked, or why it
    failed (only with spec.allowExportableKey; else the issuer is not Ready)."""
    if protection is None or protection.checked_at is None:
        return None
    found = protection.attestation
    if found is None and protection.attestation_error is None:
        return None  # not in a Managed HSM
    status: dict[str, Any] = {"checkTime": format_time(protection.checked_at)}
    if found is None:
        status["result"] = "Failed"
        status["message"] = protection.attestation_error
        return status
    status.update(
        {
            "keyID": found.key_id,
            "result": "Checked",
            "message": (
                "names this key version, attests its public key, not exportable, no release "
                "policy; compare the digests and root fingerprints with Microsoft's "
                "attestation validator (docs/api.md, Key protection)"
            ),
            "privateKeyAttestationSHA256": found.private_key_attestation_sha256,
            "certificates": found.certificates,
            "rootCertificates": [{"subject": r.subject, "sha256": r.sha256} for r in found.roots],
        }
    )
    if found.public_key_attestation_sha256 is not None:
        status["publicKeyAttestationSHA256"] = found.public_key_attestation_sha256
    if found.format_version:
        status["formatVersion"] = found.format_version
    if found.hsm_platform:
        status["hsmPlatform"] = found.hsm_platform
    return status
