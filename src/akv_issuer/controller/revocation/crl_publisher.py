"""The leader keeps a current CRL for every issuer with ``spec.crl.enabled``.

Why here and not in the issuer check: a CRL is due on its own clock (before
nextUpdate) and on revocations, not on issuer re-checks, and it costs a Key
Vault sign -- so it has its own queue keyed by issuer, and signs only when
something changed: no CRL yet, the revocation list (its digest) differs from
the one the current CRL was made from, the CA key changed, the validity
changed, or nextUpdate is less than ``renewBefore`` away. One sign per CRL.

The CRL number and the CRL itself are in the issuer's revocation ConfigMap
(:mod:`akv_issuer.controller.revocation.store`), written with a resourceVersion
precondition, so a new leader continues the numbering and never signs a CRL
that is already there. A CRL that was signed but not written is never served,
so reusing its number after a failure is safe.

When re-signing fails (Key Vault throttled, down, the issuer not Ready), the
CRL already stored keeps being served by every replica until its nextUpdate;
the issuer's ``CRLCurrent`` condition turns False (``ResignFailing``, then
``Expired`` after nextUpdate) so it can be alerted on. The condition is
written with a field manager of its own, beside the conditions the issuer
reconciler owns (``status.conditions`` is a map keyed by type).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    API_VERSION,
    ISSUER_KIND,
    ClusterIssuer,
    Issuer,
    IssuerSpec,
    SpecError,
    conditions_of,
    find_condition,
    format_time,
    make_condition,
    parse_issuer_spec,
)
from akv_issuer.controller.api.objects import IssuerObject
from akv_issuer.controller.core import (
    CheckedIssuer,
    ControllerConfig,
    IssuerKey,
    IssuerSide,
    KeyVaultGateway,
    keyvault_failure_text,
    permissions,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.revocation.revoker import IssuerLocks
from akv_issuer.controller.revocation.store import (
    REASONS,
    CRLState,
    NotOurs,
    RevocationList,
    RevocationListConflict,
    RevocationStore,
    key_id,
)
from akv_issuer.keyvault import KeyVaultError
from akv_issuer.pki import PKIError, RevokedCertificate, build_crl, sign_crl
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.events import WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

CONDITION_CRL_CURRENT: Final = "CRLCurrent"
REASON_CURRENT: Final = "Current"
REASON_RESIGN_FAILING: Final = "ResignFailing"
REASON_EXPIRED: Final = "Expired"
REASON_NOT_SIGNED: Final = "NotSigned"
EVENT_CRL_FAILED: Final = "CRLSignFailed"
CRL_FIELD_MANAGER_SUFFIX: Final = "-crl"
# While the issuer is not checked: look again this often (its check also
# brings the key back at once).
UNCHECKED_RETRY: Final = 10.0


class CRLPublisher:
    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        issuers: IssuerSide,
        store: RevocationStore,
        locks: IssuerLocks,
        keyvault: KeyVaultGateway,
        metrics: Metrics,
        events: EventRecorder,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._config = config
        self._client = client
        self._issuers = issuers
        self._store = store
        self._locks = locks
        self._kv = keyvault
        self._metrics = metrics
        self._events = events
        self._now = now
        self.backoff = Backoff(base=2.0, cap=60.0)
        self.controller: Controller[IssuerKey] = Controller(
            "crls",
            self.reconcile,
            workers=1,
            backoff=self.backoff,
            gauges=QueueGauges(metrics.queue_depth, metrics.queue_delayed),
            unexpected=metrics.unexpected,
        )
        self._condition: dict[IssuerKey, tuple[str, str, str]] = {}
        self._last_failure: dict[IssuerKey, str] = {}

    def issuer_changed(self, key: IssuerKey) -> None:
        """Subscribed to the issuer reconciler: checked, failed or deleted."""
        self.controller.enqueue_unless_backing_off(key)

    def revoked(self, key: IssuerKey) -> None:
        """A revocation was recorded: a new CRL now, whatever the backoff."""
        self.controller.enqueue(key, reset=True)

    async def reconcile(self, key: IssuerKey, failures: int) -> Result:
        obj = self._issuers.issuer_object(key)
        view, checked = self._issuers.lookup(key)
        if obj is None or view is None:
            self._forget(key)
            return DONE
        spec = checked.spec if checked is not None else _spec(obj)
        if spec is None or not spec.crl.enabled:
            self._forget(key)
            return DONE
        now = self._now().replace(microsecond=0)
        async with self._locks.hold(key):
            try:
                current = await self._store.read(key)
            except NotOurs as err:
                return await self._failed(key, obj, None, now, str(err), failures)
            except ApiError as err:
                if not permissions.is_forbidden(err):
                    raise
                return await self._forbidden(key, obj, None, now, failures)
            self._observe(key, current.crl_state)
            if checked is None:
                return await self._unchecked(key, obj, current.crl_state, now, failures)
            return await self._refresh(key, obj, spec, checked, current, now, failures)

    async def _refresh(
        self,
        key: IssuerKey,
        obj: IssuerObject,
        spec: IssuerSpec,
        checked: CheckedIssuer,
        current: RevocationList,
        now: dt.datetime,
        failures: int,
    ) -> Result:
        """Re-sign the issuer's CRL when due; a CA pool's, each member's with its own key
        (its CRL lists the certificates that member signed, at its own path). The
        condition CRLCurrent covers them all: False naming the first member whose CRL
        cannot be re-signed."""
        if not checked.members:
            outcome = await self._refresh_one(key, spec, checked, None, current, now)
            return await self._report(key, obj, outcome, now, failures)
        outcomes: list[_Outcome] = []
        for index, member in enumerate(checked.members):
            slot = None if member.name == spec.member_name else member.name
            if index:
                current = await self._store.read(key)  # the previous member's CRL landed
            outcome = await self._refresh_one(key, spec, member.checked, slot, current, now)
            if outcome.conflict:
                return Result.requeue(0.0)
            outcomes.append(replace(outcome, member=member.name))
        failed = [o for o in outcomes if o.failure is not None]
        if failed:
            return await self._report(key, obj, failed[0], now, failures)
        if any(o.signed for o in outcomes):
            self._last_failure.pop(key, None)
        soonest = min(outcomes, key=lambda o: o.state.next_update if o.state else now)
        names = ", ".join(o.member for o in outcomes)
        assert soonest.state is not None
        status, reason, message = self._current(soonest.state)
        message = f"{len(outcomes)} CRLs (pool members {names}) current; the first: {message}"
        await self._set_condition(key, obj, status, reason, message)
        return Result.requeue(min(o.requeue for o in outcomes))

    async def _report(
        self, key: IssuerKey, obj: IssuerObject, outcome: _Outcome, now: dt.datetime, failures: int
    ) -> Result:
        if outcome.conflict:
            return Result.requeue(0.0)  # a revocation landed meanwhile: sign again
        if outcome.forbidden:
            return await self._forbidden(key, obj, outcome.state, now, failures)
        if outcome.failure is not None:
            detail = outcome.failure
            if outcome.member:
                detail = f"pool member {outcome.member!r}: {detail}"
            return await self._failed(
                key, obj, outcome.state, now, detail, failures, outcome.retry_after
            )
        assert outcome.state is not None
        if outcome.signed:
            self._last_failure.pop(key, None)
        await self._set_condition(key, obj, *self._current(outcome.state))
        return Result.requeue(outcome.requeue)

    async def _refresh_one(
        self,
        key: IssuerKey,
        spec: IssuerSpec,
        checked: CheckedIssuer,
        slot: str | None,
        current: RevocationList,
        now: dt.datetime,
    ) -> _Outcome:
        """The CRL of one key (``slot`` None: the issuer's own; else a pool member's):
        kept while current, else signed with that key and stored."""
        validity, overlap = spec.crl.validity, spec.crl.overlap
        ca_key = key_id(checked.key_info.public_key)
        # An entry stays listed for one full CRL validity after its certificate
        # expired (RFC 5280 5.1.2.6 allows dropping it once expired); a relying
        # party that still holds the certificate then finds it in a CRL that
        # was current after the certificate's NotAfter.
        entries = current.for_key(ca_key, now, keep_expired=validity)
        digest = RevocationList.digest(entries)
        crl_pem, state = current.crl_of(slot)
        if state is not None and crl_pem:
            due = state.next_update - overlap
            unchanged = (
                state.digest == digest
                and state.ca_key_id == ca_key
                and state.next_update - state.this_update == validity
            )
            if unchanged and now < due:
                return _Outcome(state, requeue=max(1.0, (due - now).total_seconds()))
        number = (state.number + 1) if state is not None else 1
        try:
            builder = build_crl(
                checked.ca_cert,
                [
                    RevokedCertificate(
                        serial_number=r.serial,
                        # Another replica whose clock runs ahead may have
                        # recorded a revocation "after" this CRL's thisUpdate,
                        # which RFC 5280 5.1.2.6 forbids and build_crl refuses:
                        # the revocation is known now, so it is dated now.
                        revocation_date=min(r.revoked_at, now),
                        reason=REASONS[r.reason],
                    )
                    for r in entries
                ],
                crl_number=number,
                this_update=now,
                next_update=now + validity,
            )
            crl = await sign_crl(
                builder,
                checked.key_info.public_key,
                checked.algorithm,
                self._kv.issuer_signer(checked),
            )
        except KeyVaultError as err:
            self._metrics.crl_signs.labels(*key.labels, "Failed").inc()
            return _Outcome(state, failure=keyvault_failure_text(err), retry_after=err.retry_after)
        except (PKIError, TimeoutError, OSError) as err:
            self._metrics.crl_signs.labels(*key.labels, "Failed").inc()
            detail = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            return _Outcome(state, failure=str(detail))
        self._metrics.crl_signs.labels(*key.labels, "Signed").inc()
        new_state = CRLState(number, now, now + validity, len(entries), digest, ca_key)
        pem = crl.public_bytes(serialization.Encoding.PEM).decode()
        try:
            await self._store.write(key, current, crl=(pem, new_state), member=slot)
        except RevocationListConflict:
            return _Outcome(state, conflict=True)
        except OverflowError as err:
            return _Outcome(state, failure=str(err))
        except ApiError as err:
            if not permissions.is_forbidden(err):
                raise
            return _Outcome(state, forbidden=True)
        log.info(
            "%s: CRL number %d signed%s with %d entries, next update %s",
            key,
            number,
            f" by pool member {slot!r}" if slot else "",
            len(entries),
            format_time(new_state.next_update),
        )
        if slot is None:
            self._observe(key, new_state)
        return _Outcome(
            new_state,
            requeue=max(1.0, (new_state.next_update - overlap - now).total_seconds()),
            signed=True,
        )

    async def _unchecked(
        self,
        key: IssuerKey,
        obj: IssuerObject,
        state: CRLState | None,
        now: dt.datetime,
        failures: int,
    ) -> Result:
        """The issuer is not (yet) checked: nothing can be signed. Not a failure
        while no CRL is due (the issuer's next check brings the key back at
        once); once one is due, the condition says re-signing is failing."""
        self._issuers.request_check(key)
        if state is None:
            await self._set_condition(
                key, obj, "False", REASON_NOT_SIGNED, f"no CRL signed yet: {key} is not Ready"
            )
            return Result.requeue(UNCHECKED_RETRY)
        spec = _spec(obj)
        overlap = spec.crl.overlap if spec is not None else dt.timedelta(0)
        if now < state.next_update - overlap:
            return Result.requeue(
                min(UNCHECKED_RETRY, (state.next_update - overlap - now).total_seconds())
            )
        return await self._failed(key, obj, state, now, f"{key} is not Ready", failures)

    @staticmethod
    def _current(state: CRLState) -> tuple[str, str, str]:
        return (
            "True",
            REASON_CURRENT,
            f"CRL number {state.number} with {state.entries} entries, valid until "
            f"{format_time(state.next_update)}",
        )

    async def _forbidden(
        self,
        key: IssuerKey,
        obj: IssuerObject,
        state: CRLState | None,
        now: dt.datetime,
        failures: int,
    ) -> Result:
        """The revocation ConfigMap may not be read or written: CRLCurrent
        False/Forbidden, naming the permission and the value granting it."""
        namespace, name = self._store.where(key)
        detail = (
            f"the revocation ConfigMap {namespace}/{name} is out of reach: "
            f"{self._store.permission(key).missing()}"
        )
        return await self._failed(
            key, obj, state, now, detail, failures, cause=permissions.REASON_FORBIDDEN
        )

    async def _failed(
        self,
        key: IssuerKey,
        obj: IssuerObject,
        state: CRLState | None,
        now: dt.datetime,
        detail: str,
        failures: int,
        retry_after: float | None = None,
        *,
        cause: str | None = None,
    ) -> Result:
        """CRLCurrent False: NotSigned, ResignFailing or Expired by the stored
        CRL's state, or ``cause`` (Forbidden) when given; the message says what
        is still served."""
        if state is None:
            reason, message = REASON_NOT_SIGNED, f"no CRL signed yet: {detail}"
        elif now < state.next_update:
            reason = REASON_RESIGN_FAILING
            message = (
                f"re-signing the CRL fails ({detail}); CRL number {state.number} is served "
                f"until its nextUpdate {format_time(state.next_update)}"
            )
        else:
            reason = REASON_EXPIRED
            message = (
                f"CRL number {state.number} expired at {format_time(state.next_update)} and "
                f"could not be re-signed ({detail}); relying parties that check CRLs reject "
                "this issuer's certificates"
            )
        reason = cause or reason
        log.warning("%s", message)
        if self._last_failure.get(key) != detail:
            self._last_failure[key] = detail
            await self._events.record(
                ObjectRef.of(obj), WARNING, cause or EVENT_CRL_FAILED, message
            )
        await self._set_condition(key, obj, "False", reason, message)
        delay = max(self.backoff.delay(failures + 1), retry_after or 0.0)
        if state is not None and now < state.next_update:
            # Come back no later than nextUpdate, so Expired is reported on time.
            delay = min(delay, max(1.0, (state.next_update - now).total_seconds()))
        return Result.retry(delay)

    def _observe(self, key: IssuerKey, state: CRLState | None) -> None:
        if state is None:
            return
        labels = key.labels
        self._metrics.crl_entries.labels(*labels).set(state.entries)
        self._metrics.crl_number.labels(*labels).set(state.number)
        self._metrics.crl_this_update.labels(*labels).set(state.this_update.timestamp())
        self._metrics.crl_next_update.labels(*labels).set(state.next_update.timestamp())
        self._metrics.crl_age.set(labels, state.this_update.timestamp())

    def _forget(self, key: IssuerKey) -> None:
        self._condition.pop(key, None)
        self._last_failure.pop(key, None)
        self.controller.cancel(key)

    async def _set_condition(
        self, key: IssuerKey, obj: IssuerObject, status: str, reason: str, message: str
    ) -> None:
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        old = find_condition(conditions_of(obj), CONDITION_CRL_CURRENT)
        same_status = old is not None and old.status == status
        if self._condition.get(key) == (status, reason, message) or (
            same_status
            and old is not None
            and old.reason == reason
            and old.message == message
            and old.observed_generation == generation
        ):
            self._condition[key] = (status, reason, message)
            return
        condition = make_condition(
            CONDITION_CRL_CURRENT,
            status,
            reason,
            message,
            observed_generation=generation,
            now=self._now(),
        )
        if same_status and old is not None and old.last_transition_time:
            condition["lastTransitionTime"] = old.last_transition_time
        resource: Any = Issuer if key.kind == ISSUER_KIND else ClusterIssuer
        metadata: dict[str, Any] = {"name": key.name}
        if key.namespace:
            metadata["namespace"] = key.namespace
        body = {
            "apiVersion": API_VERSION,
            "kind": key.kind,
            "metadata": metadata,
            "status": {"conditions": [condition]},
        }
        try:
            await self._client.patch(
                resource.Status,
                key.name,
                body,
                namespace=key.namespace or None,
                patch_type=PatchType.APPLY,
                field_manager=self._config.field_manager + CRL_FIELD_MANAGER_SUFFIX,
                force=True,
            )
        except ApiError as err:
            if err.status.code != 404:
                raise
        self._condition[key] = (status, reason, message)


@dataclass(frozen=True)
class _Outcome:
    """One CRL's refresh: its state now (the stored one on failure), when to look again,
    or what went wrong."""

    state: CRLState | None
    requeue: float = 0.0
    failure: str | None = None
    retry_after: float | None = None
    conflict: bool = False
    forbidden: bool = False
    member: str = ""
    signed: bool = False


def _spec(obj: IssuerObject) -> IssuerSpec | None:
    try:
        return parse_issuer_spec(obj.get("spec") or {})
    except SpecError:
        return None
