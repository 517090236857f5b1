"""Watch streams: one queue of JSON lines per open watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from .resources import ResourceType

Obj = dict[str, Any]

END = object()  # the server ends the watch
BREAK = object()  # the connection breaks


@dataclass
class Change:
    """One write, as the event log (and every watch) sees it."""

    rv: int
    type: str
    rtype: ResourceType
    namespace: str
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Watcher:
    rtype: ResourceType
    namespace: str | None
    labels: Callable[[Obj], bool]
    fields: Callable[[Obj], bool]
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and (obj.get("metadata") or {}).get("namespace") != (
            self.namespace
        ):
            return False
        return self.labels(obj) and self.fields(obj)

    def offer(self, change: Change) -> None:
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type == "DELETED":
            kind = "DELETED" if now else None
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:  # no longer selected: a watcher sees it go
            kind = "DELETED"
        else:
            kind = None
        if kind is not None:
            self.send(kind, change.obj)

    def send(self, kind: str, obj: Obj) -> None:
        self.queue.put_nowait(line(kind, obj))


def line(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


class WatchStream(httpx2.AsyncByteStream):
    """The body of a watch response: lines until the server ends it (at
    ``timeout`` on the server's clock, or when a test breaks it)."""

    def __init__(
        self,
        watcher: Watcher,
        timeout: float | None,
        sleep: Callable[[float], Awaitable[None]],
        on_close: Callable[[Watcher], None],
    ) -> None:
        self._watcher = watcher
        self._on_close = on_close
        self._timer: asyncio.Task[None] | None = None
        if timeout:
            self._timer = asyncio.create_task(self._expire(timeout, sleep))

    async def _expire(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        await sleep(seconds)
        self._watcher.queue.put_nowait(END)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._watcher.queue.get()
            if item is END:
                return
            if item is BREAK:
                raise httpx2.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)"
                )
            yield item

    async def aclose(self) -> None:
        self._on_close(self._watcher)
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(BaseException):
                await self._timer
