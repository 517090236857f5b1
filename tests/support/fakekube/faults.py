"""Fault injection: the next N requests that match fail, wait or lose their connection.

Faults are made through :class:`~support.fakekube.FakeKube` (``fail``,
``drop``, ``hold``, ``delay``) and matched against each request in the order
they were added; the first one with hits left acts. A fault with
``times=None`` acts on every matching request until :meth:`Fault.cancel`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Kubernetes verbs a fault (and :meth:`FakeKube.calls`) can name. "patch"
#: matches every patch, "apply" only server-side apply.
VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "apply", "delete", "deletecollection"}
)


@dataclass
class Call:
    """One request the fake API server received (``FakeKube.requests``)."""

    verb: str
    group: str
    plural: str
    subresource: str
    namespace: str
    name: str
    params: dict[str, str]
    patch_type: str | None  # "apply", "merge", "strategic", "json"
    field_manager: str | None
    body: Any
    status: int = 0  # the HTTP status answered (0: none, the connection was dropped)

    @property
    def resource(self) -> str:
        return self.plural + (f"/{self.subresource}" if self.subresource else "")

    def is_(self, verb: str) -> bool:
        if verb == "apply":
            return self.verb == "patch" and self.patch_type == "apply"
        return self.verb == verb


@dataclass
class Fault:
    verb: str | None
    plural: str | None
    group: str | None
    subresource: str | None
    name: str | None
    namespace: str | None
    when: Callable[[Call], bool] | None
    times: int | None
    action: str  # "fail", "drop", "hold", "delay"
    status: int = 500
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None
    after: bool = False  # drop: after the request took effect
    seconds: float = 0.0  # delay
    hits: int = 0
    #: Set at every hit (clear it to wait for the next one).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _cancelled: bool = False

    def matches(self, call: Call) -> bool:
        if self._cancelled or (self.times is not None and self.hits >= self.times):
            return False
        if self.verb is not None and not call.is_(self.verb):
            return False
        if self.plural is not None and self.plural != call.plural:
            return False
        if self.group is not None and self.group != call.group:
            return False
        if self.subresource is not None and self.subresource != call.subresource:
            return False
        if self.name is not None and self.name != call.name:
            return False
        if self.namespace is not None and self.namespace != call.namespace:
            return False
        return self.when is None or self.when(call)

    def release(self) -> None:
        """Let held requests (``hold``) go on, now and from now on."""
        self._released.set()

    def cancel(self) -> None:
        """No more hits; held requests go on."""
        self._cancelled = True
        self._released.set()

    @property
    def exhausted(self) -> bool:
        return self._cancelled or (self.times is not None and self.hits >= self.times)

    async def wait_released(self) -> None:
        await self._released.wait()
