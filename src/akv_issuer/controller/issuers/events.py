"""The events and gauges an issuer check leaves besides its status.

Events mark changes a person should see in ``kubectl describe``: the issuer
becoming Ready or not (once per transition, not per check), a CA certificate
about to expire, a key version without a CA certificate, the CA in use
changing, a CA renewal done, failed or due. Each is sent once per change; the
gauges say the same thing continuously for alerts.
"""

from __future__ import annotations

import datetime as dt
import logging

from akv_issuer.controller.api import (
    CONDITION_CA_RENEWAL_DUE,
    CONDITION_KEY_VERSION_PENDING,
    Condition,
    conditions_of,
    find_condition,
    format_time,
)
from akv_issuer.controller.api.objects import IssuerObject
from akv_issuer.controller.core import (
    RENEWAL_FAILED,
    RENEWED,
    CheckedIssuer,
    IssuerKey,
    published_ca,
)
from akv_issuer.controller.core.checked import MEMBER_READY
from akv_issuer.controller.core.config import ControllerConfig
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef

log = logging.getLogger(__name__)

EVENT_CA_EXPIRING = "CAExpiringSoon"
EVENT_NEW_KEY_VERSION = "NewKeyVersionWithoutCA"
EVENT_KEY_VERSION_CHANGED = "KeyVersionChanged"
EVENT_CA_CERTIFICATE_CHANGED = "CACertificateChanged"
EVENT_CA_RENEWED = "CARenewed"
EVENT_CA_RENEWAL_FAILED = "CARenewalFailed"
EVENT_CA_RENEWAL_DUE = "CARenewalDue"


def _lead_switched(obj: IssuerObject, checked: CheckedIssuer) -> bool:
    """A CA pool whose status now shows another member (the one it showed was set
    aside, or came back): not a new key version or CA, so no event says so."""
    before = str((obj.get("status") or {}).get("keyID") or "")
    return bool(checked.members) and any(
        m.checked.key_id == before and m.checked.key_id != checked.key_id for m in checked.members
    )


class IssuerEvents:
    def __init__(self, config: ControllerConfig, metrics: Metrics, events: EventRecorder) -> None:
        self.config = config
        self._metrics = metrics
        self._events = events
        self._expiring: set[IssuerKey] = set()

    def forget(self, key: IssuerKey) -> None:
        self._expiring.discard(key)

    async def _member_events(self, obj: IssuerObject, checked: CheckedIssuer) -> None:
        """spec.pool: one event per member whose state changed (PoolMemberReady,
        PoolMemberUnavailable, PoolMemberInvalid), naming the member and why."""
        before = {
            str(m.get("name")): (m.get("state"), m.get("reason"))
            for m in (obj.get("status") or {}).get("members") or ()
        }
        for state in checked.member_states:
            if before.get(state.name) == (state.state, state.reason):
                continue
            if state.name not in before and state.state == MEMBER_READY:
                continue  # a new member that is fine: the Ready event says so
            type_ = NORMAL if state.state == MEMBER_READY else WARNING
            await self._events.record(
                ObjectRef.of(obj), type_, f"PoolMember{state.state}", state.message
            )

    async def after_check(
        self, key: IssuerKey, obj: IssuerObject, checked: CheckedIssuer, now: dt.datetime
    ) -> None:
        """Events of a successful check, judged against the status it replaces."""
        await self._member_events(obj, checked)
        self._metrics.set_pool_members(
            *key.labels, {m.name: m.state == MEMBER_READY for m in checked.member_states}
        )
        if not _lead_switched(obj, checked):
            await self._key_version_events(obj, checked)
        await self._renewal_events(key, obj, checked)
        self._metrics.key_version_pending.labels(*key.labels).set(
            1 if checked.pending_key_version else 0
        )
        # A CA pool: the member whose CA certificate expires first.
        soonest = min(
            (m.checked for m in checked.members), key=lambda c: c.not_after, default=checked
        )
        self._metrics.ca_expiry.labels(*key.labels).set(soonest.not_after.timestamp())
        await self._warn_ca_expiry(key, obj, soonest, now)

    async def _renewal_events(
        self, key: IssuerKey, obj: IssuerObject, checked: CheckedIssuer
    ) -> None:
        """An event for a renewal (done or failed) and, once, for a renewal that
        is due but not the controller's to do; the metrics follow."""
        renewal = checked.renewal
        self._metrics.ca_renewal_due.labels(*key.labels).set(
            1 if renewal is not None and renewal.due else 0
        )
        if renewal is None:
            return
        if renewal.reason in (RENEWED, RENEWAL_FAILED):
            self._metrics.ca_renewals.labels(*key.labels, renewal.reason).inc()
            log.log(
                logging.INFO if renewal.reason == RENEWED else logging.WARNING,
                "%s: %s",
                key,
                renewal.message,
            )
        old = find_condition(conditions_of(obj), CONDITION_CA_RENEWAL_DUE)
        repeated = (
            renewal.reason not in (RENEWED, RENEWAL_FAILED)
            and old is not None
            and old.status == "True"
            and old.reason == renewal.reason
        )
        if repeated:
            return  # the condition already says it; one event per change
        events = {
            RENEWED: (NORMAL, EVENT_CA_RENEWED),
            RENEWAL_FAILED: (WARNING, EVENT_CA_RENEWAL_FAILED),
        }
        type_, reason = events.get(renewal.reason, (WARNING, EVENT_CA_RENEWAL_DUE))
        await self._events.record(ObjectRef.of(obj), type_, reason, renewal.message)

    async def _key_version_events(self, obj: IssuerObject, checked: CheckedIssuer) -> None:
        """An event when a new key version waits for its CA, and when the CA that
        signs changes: another key version, or another certificate of the same one."""
        status = obj.get("status") or {}
        old = find_condition(conditions_of(obj), CONDITION_KEY_VERSION_PENDING)
        pending = checked.pending_key_version
        if pending and (old is None or old.status != "True" or pending not in old.message):
            await self._events.record(
                ObjectRef.of(obj),
                WARNING,
                EVENT_NEW_KEY_VERSION,
                f"key {checked.spec.key_name} has a new version {pending} without a CA "
                f"certificate in {checked.spec.ca_description}; still signing with "
                f"version {checked.key_version}. Store the new CA certificate "
                "(akv-issuer ca import, or a new CA) to switch.",
            )
        before = str(status.get("keyVersion") or "")
        if before and before != checked.key_version:
            await self._events.record(
                ObjectRef.of(obj),
                NORMAL,
                EVENT_KEY_VERSION_CHANGED,
                f"now signing with key version {checked.key_version} (was {before}); CA "
                f"{checked.ca_cert.subject.rfc4514_string()} valid until "
                f"{format_time(checked.not_after)}",
            )
            return
        published = published_ca(obj)
        if published is not None and published != checked.ca_cert:
            await self._events.record(
                ObjectRef.of(obj),
                NORMAL,
                EVENT_CA_CERTIFICATE_CHANGED,
                f"now signing with CA certificate serial {checked.ca_cert.serial_number:x} "
                f"(was {published.serial_number:x}), key version {checked.key_version}, valid "
                f"until {format_time(checked.not_after)}",
            )

    async def _warn_ca_expiry(
        self, key: IssuerKey, obj: IssuerObject, checked: CheckedIssuer, now: dt.datetime
    ) -> None:
        left = checked.not_after - now
        expiring = left <= self.config.ca_expiry_warning
        self._metrics.ca_expiring.labels(*key.labels).set(1 if expiring else 0)
        if expiring and key not in self._expiring:
            self._expiring.add(key)
            await self._events.record(
                ObjectRef.of(obj),
                WARNING,
                EVENT_CA_EXPIRING,
                f"CA certificate expires at {format_time(checked.not_after)} "
                f"(in {left.days} days); issue a new CA and update "
                f"{checked.spec.ca_description}",
            )
        elif not expiring:
            self._expiring.discard(key)

    async def transition(
        self,
        obj: IssuerObject,
        old: Condition | None,
        status: str,
        reason: str,
        message: str,
    ) -> None:
        if (
            old is not None
            and old.status == status
            and old.reason == reason
            and old.message == message
        ):
            return
        type_ = NORMAL if status == "True" else WARNING
        await self._events.record(ObjectRef.of(obj), type_, str(reason), message)
