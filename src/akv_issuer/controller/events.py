"""Kubernetes Events on issuers and CertificateRequests (``core/v1`` Events).

Events are best effort: a failure to record one is logged and never fails the
reconcile that wanted to record it.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

log = logging.getLogger(__name__)

COMPONENT = "azure-keyvault-issuer"
NORMAL = "Normal"
WARNING = "Warning"
_MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str  # "" for cluster-scoped objects
    uid: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            api_version=str(obj.get("apiVersion") or ""),
            kind=str(obj.get("kind") or ""),
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or ""),
            uid=str(meta.get("uid") or ""),
        )


class EventRecorder:
    def __init__(self, client: AsyncClient, instance: str) -> None:
        self._client = client
        self._instance = instance
        self.recorded = 0

    async def record(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        # Events of cluster-scoped objects live in "default", as client-go does.
        namespace = ref.namespace or "default"
        event = Event(
            metadata=ObjectMeta(
                name=f"{ref.name}.{secrets.token_hex(8)}",
                namespace=namespace,
            ),
            involvedObject=ObjectReference(
                apiVersion=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace or None,
                uid=ref.uid or None,
            ),
            type=type_,
            reason=reason,
            message=message[:_MAX_MESSAGE],
            source=EventSource(component=COMPONENT),
            reportingComponent=COMPONENT,
            reportingInstance=self._instance,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        try:
            await self._client.create(event)
            self.recorded += 1
        except Exception as exc:
            log.warning(
                "could not record event %s on %s %s: %s",
                reason,
                ref.kind,
                ref.name,
                type(exc).__name__,
            )
