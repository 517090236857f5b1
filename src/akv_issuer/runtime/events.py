"""Kubernetes Events (``core/v1``) on the objects a controller reconciles.

Events are best effort: a failure to record one is logged and never fails the
reconcile that wanted to record it. Once :meth:`EventRecorder.start` has run,
they are also sent off the reconcile path: a worker queues the event and goes
on, so the API round trip of an Event never holds a worker (and a slow events
endpoint never slows signing). The queue is bounded; if the API server cannot
keep up, events beyond the bound are dropped and counted, as client-go's
broadcaster does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event
from prometheus_client import Counter

from akv_issuer.runtime.errors import UnexpectedErrors, api_error_text, expected

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
_MAX_MESSAGE = 1024
_QUEUE_BOUND = 5000
EVENT_SENDERS = 4


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
    def __init__(
        self,
        client: AsyncClient,
        component: str,
        instance: str,
        dropped: Counter | None = None,
        *,
        queue_bound: int = _QUEUE_BOUND,
        unexpected: UnexpectedErrors | None = None,
    ) -> None:
        self._client = client
        self._unexpected = unexpected or UnexpectedErrors()
        self._queue_bound = queue_bound
        self._component = component
        self._instance = instance
        self._dropped = dropped
        self.recorded = 0
        self.dropped = 0
        self._queue: asyncio.Queue[Event] | None = None
        self._senders: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Send events from background tasks from now on (call inside the loop)."""
        if self._queue is not None:
            return
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_bound)
        self._queue = queue
        self._senders = [
            asyncio.create_task(self._send_loop(queue), name=f"event-sender-{n}")
            for n in range(EVENT_SENDERS)
        ]

    async def stop(self, grace: float) -> None:
        """Send what is queued (for at most ``grace`` seconds), then stop."""
        queue, self._queue = self._queue, None
        if queue is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), grace)
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []
        if queue.qsize():
            self._drop(queue.qsize())
            log.warning("%d events not sent before shutdown", queue.qsize())

    async def record(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        event = self._event(ref, type_, reason, message)
        if self._queue is None:
            await self._send(event)
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop(1)
            log.warning("event queue full: dropped event %s on %s %s", reason, ref.kind, ref.name)

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._dropped is not None:
            self._dropped.inc(count)

    async def _send_loop(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._send(event)
            finally:
                queue.task_done()

    def _event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> Event:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        # Events of cluster-scoped objects live in "default", as client-go does.
        namespace = ref.namespace or "default"
        return Event(
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
            source=EventSource(component=self._component),
            reportingComponent=self._component,
            reportingInstance=self._instance,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )

    async def _send(self, event: Event) -> None:
        try:
            await self._client.create(event)
            self.recorded += 1
        except Exception as exc:
            involved = event.involvedObject
            kind, name = (involved.kind or "", involved.name or "") if involved else ("", "")
            if expected(exc):
                log.warning(
                    "could not record event %s on %s %s: %s: %s",
                    event.reason,
                    kind,
                    name,
                    type(exc).__name__,
                    api_error_text(exc),
                )
            else:  # a bug: its traceback once per event reason, counted
                self._unexpected.report(
                    log,
                    "events",
                    event.reason,
                    exc,
                    "could not record event %s on %s %s",
                    event.reason,
                    kind,
                    name,
                )
