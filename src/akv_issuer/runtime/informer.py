"""List-then-watch informer on lightkube.

The informer keeps no objects itself: each object is handed to a handler that
decides what little to remember (for CertificateRequests only the keys of
unfinished ones, for issuers the object). That is what keeps memory bounded
when thousands of finished requests exist.

Protocol: a paginated list, then a watch from the list's resourceVersion;
a watch that the server closes is resumed from the last seen resourceVersion;
``410 Gone`` (the version was compacted away) means a fresh list; any other
error reconnects after an exponential backoff. After each list the handler is
told which keys exist, so objects deleted while no watch was open are noticed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable
from typing import Any, Protocol

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.core.generic_client import ALL_NS
from lightkube.core.resource import GlobalResource

from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Handler(Protocol):
    def on_upsert(self, obj: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...

    def on_listed(self, keys: set[str]) -> None:
        """Called after each complete list with the keys of every listed object."""
        ...


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = str(meta.get("name", ""))
    return f"{namespace}/{name}" if namespace else name


def _is_gone(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status.code == 410
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code == 410
    return False


class Informer:
    def __init__(
        self,
        client: AsyncClient,
        resource: type[Any],
        handler: Handler,
        *,
        name: str,
        namespace: str | None = ALL_NS,
        chunk_size: int = 500,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._resource = resource
        self._handler = handler
        self.name = name
        # A cluster-scoped resource has no namespace to list in.
        self._namespace = None if issubclass(resource, GlobalResource) else namespace
        self._chunk_size = chunk_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._sleep = sleep
        self.synced = asyncio.Event()
        self.lists = 0
        self.watch_restarts = 0

    async def run(self) -> None:
        failures = 0
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list()
                    failures = 0
                resource_version = await self._watch(resource_version)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _is_gone(exc):
                    log.info("%s: watch history expired (410 Gone), listing again", self.name)
                    resource_version = None
                    continue
                resource_version = exc.resource_version if isinstance(exc, _WatchBroken) else None
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning(
                    "%s: list/watch failed (%s: %s), retrying in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                self.watch_restarts += 1
                await self._sleep(delay)

    async def _list(self) -> str:
        listing: Any = self._client.list(
            self._resource, namespace=self._namespace, chunk_size=self._chunk_size
        )
        keys: set[str] = set()
        async for item in listing:
            obj: Obj = item
            keys.add(object_key(obj))
            self._handler.on_upsert(obj)
        self._handler.on_listed(keys)
        self.lists += 1
        self.synced.set()
        # Set by lightkube per page, also for an empty list, once iteration ends.
        return str(listing.resourceVersion)

    async def _watch(self, resource_version: str) -> str:
        stream: AsyncIterable[tuple[str, Any]] = self._client.watch(
            self._resource,
            namespace=self._namespace,
            resource_version=resource_version,
            server_timeout=self._watch_timeout,
        )
        last = resource_version
        try:
            async for event_type, item in stream:
                obj: Obj = item
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    last = str(rv)
                if event_type == "DELETED":
                    self._handler.on_delete(obj)
                elif event_type in ("ADDED", "MODIFIED"):
                    self._handler.on_upsert(obj)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_gone(exc):
                raise
            # Keep the position so the reconnect resumes instead of listing again.
            raise _WatchBroken(last, exc) from exc
        return last


class _WatchBroken(Exception):
    def __init__(self, resource_version: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.resource_version = resource_version
