"""How the request flow reports what became of a request, for every kind.

Each outcome is a status write through the request kind (:mod:`.kind`) and,
as it calls for, an event (one per distinct message while a request waits,
not one per retry), a metric, an audit record and a log line:

- ``pending``: why the request waits, where the kind has a field for it;
- ``finish``: a final Denied or Failed status, then the ``refused`` audit
  record; a 409 means the request changed meanwhile, and it is decided anew;
- ``issued``: the Issued status, then the ``issued`` audit record and the
  Issued event naming the serial. A write that fails keeps the certificate
  (by request uid, :mod:`.memory`), so the retry writes the *same* one.

Every final outcome leaves one audit record (:mod:`..observability.audit`),
written after the final status write.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Generic

from akv_issuer.controller.api import CertificateRequestEvent
from akv_issuer.controller.core import IssuerSide
from akv_issuer.controller.observability import audit
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Issued,
    Pending,
    RequestConflict,
    RequestKind,
    StatusUpdate,
)
from akv_issuer.controller.requests.memory import RequestMemory, RequestT
from akv_issuer.controller.requests.signing import Signed
from akv_issuer.runtime.controller import DONE, Result
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff

# The flow's logger: these lines were the flow's before the split, and log
# filters name it.
log = logging.getLogger("akv_issuer.controller.requests.flow")


class Outcomes(Generic[RequestT]):
    def __init__(
        self,
        kind: RequestKind[RequestT],
        memory: RequestMemory[RequestT],
        *,
        issuers: IssuerSide,
        metrics: Metrics,
        events: EventRecorder,
        backoff: Backoff,
        now: Callable[[], dt.datetime],
        forget: Callable[[str, str | None], None],
    ) -> None:
        """``forget(key, uid)``: the flow is done with the request."""
        self._kind = kind
        self._memory = memory
        self._issuers = issuers
        self._metrics = metrics
        self._events = events
        self._backoff = backoff
        self._now = now
        self._forget = forget

    async def _write(self, key: str, obj: RequestT, update: StatusUpdate) -> None:
        self._memory.wrote(key, await self._kind.write(obj, update, self._now()))

    async def pending(
        self,
        key: str,
        obj: RequestT,
        reason: str,
        message: str,
        event_reason: str,
        *,
        warning: bool = False,
        detail: str = "",
    ) -> None:
        """Say why the request waits: in its status where the kind has a field
        for it, and in one event per distinct message (not one per retry)."""
        update = Pending(reason, f"{reason}: {message}{detail}")
        if self._kind.shows(obj, update):
            return
        await self._write(key, obj, update)
        if not self._memory.new_event(key, (event_reason, message)):
            return
        await self._events.record(
            ObjectRef.of(obj), WARNING if warning else NORMAL, str(event_reason), message
        )

    async def finish(
        self,
        key: str,
        obj: RequestT,
        view: RequestView,
        update: Denied | Failed,
        failures: int,
    ) -> Result:
        """A final status: written, evented, forgotten. If the request changed
        meanwhile (409), it is read again and decided anew."""
        try:
            await self._write(key, obj, update)
        except RequestConflict:
            delay = self._backoff.delay(failures + 1)
            log.info("changed while being written; deciding again")
            return Result.retry(delay)
        self._forget(key, view.uid)
        reason = update.reason
        self._metrics.finished.labels(self._kind.object_kind, type(update).__name__).inc()
        if view.issuer is not None:
            self._metrics.failed.labels(*view.issuer.labels, reason).inc()
        if isinstance(update, Failed):
            await self._events.record(
                ObjectRef.of(obj), WARNING, CertificateRequestEvent.PERMANENT_ERROR, update.message
            )
        elif reason != "Denied":
            # The signer's own policy denied it (a kind with no approver): say why.
            await self._events.record(ObjectRef.of(obj), WARNING, reason, update.message)
        log.info("ended %s: %s", type(update).__name__, update.message)
        self._audit_refusal(obj, view, reason, update.message)
        return DONE

    def _audit_refusal(self, obj: RequestT, view: RequestView, reason: str, message: str) -> None:
        try:
            csr_pem: bytes | None = base64.b64decode(self._kind.csr(obj), validate=True)
        except ValueError:
            csr_pem = None
        checked = self._issuers.lookup(view.issuer)[1] if view.issuer is not None else None
        audit.emit(
            audit.refused(
                request=audit.RequestRef.of(self._kind.object_kind, obj),
                requester=self._kind.requester(obj),
                issuer=view.issuer,
                reason=reason,
                message=message,
                csr_pem=csr_pem,
                ca=checked.audit_ca if checked is not None else None,
                at=self._now(),
            )
        )

    async def issued(
        self, key: str, obj: RequestT, view: RequestView, result: Signed, failures: int
    ) -> Result:
        """The Issued status with ``result``; a failed write keeps it for the retry."""
        try:
            await self._write(key, obj, Issued(result.certificate_pem, result.ca_pem))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # If the request changed since it was read (409) or the API server
            # failed, the same certificate (kept by uid) is written next time.
            self._metrics.status_write_retries.inc()
            delay = self._backoff.delay(failures + 1)
            log.warning(
                "writing the issued certificate failed (%s); retrying the same "
                "certificate in %.1fs",
                "conflict" if isinstance(exc, RequestConflict) else type(exc).__name__,
                delay,
            )
            return Result.retry(delay)
        self._memory.signed.pop(view.uid, None)
        self._metrics.issued.labels(*result.issuer.labels).inc()
        self._metrics.finished.labels(self._kind.object_kind, "Issued").inc()
        self._forget(key, view.uid)
        serial = f"{result.leaf.serial_number:x}"
        log.info("issued by %s (serial %s)", result.issuer, serial)
        audit.emit(
            audit.issued(
                request=audit.RequestRef.of(self._kind.object_kind, obj),
                requester=self._kind.requester(obj),
                issuer=result.issuer,
                certificate=result.leaf,
                ca=result.ca_key,
                at=self._now(),
            )
        )
        await self._events.record(
            ObjectRef.of(obj),
            NORMAL,
            CertificateRequestEvent.ISSUED,
            f"Certificate issued (serial {serial})",
        )
        return DONE
