"""List-then-watch informer on lightkube.

The informer keeps no objects itself: each object is handed to a handler that
decides what little to remember (for CertificateRequests only the keys of
unfinished ones, for issuers the object). That is what keeps memory bounded
when thousands of finished requests exist.

Protocol: a paginated list, then a watch from the list's resourceVersion;
a watch that the server closes is resumed from the last seen resourceVersion;
``410 Gone`` (the version was compacted away, or a list's continue token
expired) means a fresh list; any other error reconnects after an exponential
backoff. After each list the handler is told which keys exist, so objects
deleted while no watch was open are noticed.

A handler that raises costs that one object (or event), never the list or
the watch: the error is logged once with its traceback and counted
(``handler_errors``); the list goes on and the watch stays open. The object
is handed over again at its next change or the next list.

The informer reads the list pages and the watch stream through
:class:`~.kubeapi.KubeApi` (lightkube's errors) and decodes them with
:mod:`.decoding`: into the caller's ``shape`` when given (only the fields its
handler reads; a handler that keeps an object calls :func:`~.decoding.whole`
during the call), else whole. While one page is decoded and handled, the next
is already asked for, so the API server encodes it meanwhile (on another core
when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import httpx2
from lightkube import ApiError
from prometheus_client import Counter

from akv_issuer.runtime.decoding import ListPage, ObjectDecoder, Partial, decode_event
from akv_issuer.runtime.kubeapi import ApiResource, KubeApi, watch_error
from akv_issuer.runtime.logs import about
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Warnings about objects that do not fit their shape, per list (then silence).
_SHAPE_WARNINGS = 3


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
        api: KubeApi,
        resource: ApiResource,
        handler: Handler,
        *,
        name: str,
        namespace: str | None = None,
        shape: type | None = None,
        chunk_size: int = 500,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        handler_errors: Counter | None = None,
    ) -> None:
        """``namespace``: None lists and watches every namespace (a
        cluster-scoped resource has none). ``shape``: a TypedDict of the
        fields ``handler`` reads (see :mod:`.decoding`); None hands it whole
        objects. ``handler_errors``:
        a counter with one label, the informer's name, counting exceptions
        the handler raised."""
        self._api = api
        self._resource = resource
        self._handler = handler
        self._decoder = ObjectDecoder(shape)
        self._shape_warnings = 0
        self.name = name
        self._namespace = namespace if resource.namespaced else None
        self._chunk_size = chunk_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._sleep = sleep
        self.synced = asyncio.Event()
        self._handler_errors = handler_errors
        self.lists = 0
        self.watch_restarts = 0
        self.handler_errors = 0

    @property
    def resource(self) -> ApiResource:
        """What this informer lists and watches."""
        return self._resource

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
        keys: set[str] = set()
        self._shape_warnings = 0
        page = await self._page("")
        resource_version = page.resource_version
        while True:
            # The next page is asked for before this one is handled: the API
            # server encodes it meanwhile.
            following = (
                asyncio.create_task(self._page(page.continue_token))
                if page.continue_token
                else None
            )
            try:
                for raw in page.items:
                    obj = self._object(raw)
                    keys.add(object_key(obj))
                    self._deliver(self._handler.on_upsert, obj, "listed")
            except BaseException:
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                raise
            if following is None:
                break
            page = await following
            # Every page of one list carries the list's resourceVersion.
            resource_version = page.resource_version or resource_version
        try:
            self._handler.on_listed(keys)
        except Exception:
            self._handler_failed("the list's keys", f"{len(keys)} objects")
        self.lists += 1
        self.synced.set()
        return resource_version

    async def _page(self, continue_token: str) -> ListPage:
        """One page of the list (the first when ``continue_token`` is empty).
        An expired continue token is ``410 Gone``: the list starts over."""
        return await self._api.list_page(
            self._resource,
            namespace=self._namespace,
            limit=self._chunk_size,
            continue_token=continue_token,
        )

    def _object(self, raw: Any) -> Obj:
        obj, misfit = self._decoder.decode_lenient(raw)
        if misfit is not None and self._shape_warnings < _SHAPE_WARNINGS:
            self._shape_warnings += 1
            log.warning(
                "%s: %s does not have the expected fields (%s); read whole",
                self.name,
                object_key(obj),
                misfit,
            )
        return obj

    def _deliver(self, call: Callable[[Obj], None], obj: Obj, event: str) -> None:
        """Hand ``obj`` to the handler; an exception it raises costs this object
        only. Lines logged meanwhile name the informer and the object's key."""
        with about(self.name, obj, object_key):
            try:
                call(obj)
            except Exception:
                self._handler_failed(event, object_key(obj))
            finally:
                if isinstance(obj, Partial):
                    obj.release()

    def _handler_failed(self, event: str, what: str) -> None:
        # Inside an except block: log.exception adds the traceback, once.
        self.handler_errors += 1
        if self._handler_errors is not None:
            self._handler_errors.labels(self.name).inc()
        log.exception(
            "%s: handler failed on %s (%s); skipped until it changes again or is listed again",
            self.name,
            what,
            event,
        )

    async def _watch(self, resource_version: str) -> str:
        last = resource_version
        try:
            async with self._api.watch(
                self._resource,
                namespace=self._namespace,
                resource_version=resource_version,
                timeout_seconds=self._watch_timeout,
            ) as lines:
                async for line in lines:
                    if not line:
                        continue
                    event_type, raw = decode_event(line)
                    if event_type == "ERROR":
                        raise watch_error(raw)
                    if event_type not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    obj = self._object(raw)
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        last = str(rv)
                    if event_type == "DELETED":
                        self._deliver(self._handler.on_delete, obj, event_type)
                    else:
                        self._deliver(self._handler.on_upsert, obj, event_type)
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
