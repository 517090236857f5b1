"""What a feature's ``setup()`` wires itself into: :class:`Host` (the app's
manager, as controller-runtime's ``SetupWithManager`` takes a Manager).

A feature adds its work queues (``add_controller``), its watches (``watch``:
one informer per resource name; a second feature watching the same name gets
the same informer's events after the first one's handler, decoded into the
first one's shape) and its HTTP routes (``serve``); the app starts and stops
them all with the process's lifecycle and leadership.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from lightkube import AsyncClient

from akv_issuer.controller.core.config import ControllerConfig
from akv_issuer.controller.core.keyvault_gateway import KeyVaultGateway
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.runtime.controller import Controller
from akv_issuer.runtime.events import EventRecorder
from akv_issuer.runtime.informer import Handler


class Host(Protocol):
    @property
    def config(self) -> ControllerConfig: ...

    @property
    def client(self) -> AsyncClient: ...

    @property
    def keyvault(self) -> KeyVaultGateway:
        """Every Key Vault call: counted; every sign holding a sign slot and fenced."""
        ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def events(self) -> EventRecorder: ...

    @property
    def now(self) -> Callable[[], dt.datetime]:
        """The wall clock (aware UTC) every feature reads: retry budgets, status
        and revocation times, CRL validity. The app's is the system clock; unit
        tests give a fake one."""
        ...

    def add_controller(self, controller: Controller[Any]) -> None:
        """Run ``controller``'s workers while this replica leads."""
        ...

    def watch(
        self, resource: Any, name: str, handler: Handler, *, shape: type | None = None
    ) -> None:
        """List-then-watch ``resource`` while this replica leads, calling ``handler``."""
        ...

    def serve(self, bind_address: str, routes: list[web.RouteDef]) -> None:
        """Serve ``routes`` on every replica, leader or not."""
        ...
