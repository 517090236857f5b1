"""The ``httpx2`` transport that hands a real client's requests to a :class:`FakeKube`.

lightkube builds every request and reads every response through ``httpx2``
as it does against a real cluster (the controller's own client runs on
``akv_issuer.runtime.kubehttp.AiohttpTransport`` in the same place); only the
wire is replaced. The requests of ``akv_issuer.runtime.kubeapi.KubeApi``
(``FakeKube.api()``) arrive here the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx2

if TYPE_CHECKING:
    from .server import FakeKube


class FakeTransport(httpx2.AsyncBaseTransport):
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.kube.handle(request)
