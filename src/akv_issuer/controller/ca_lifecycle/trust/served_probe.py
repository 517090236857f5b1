"""Whether the API server serves ``certificates.k8s.io/v1`` ClusterTrustBundles.

API servers older than 1.37 do not: a list answered 404 says so. The answer is
believed for :data:`REPROBE_AFTER`, then the API server is asked again (an
upgrade to 1.37 while the controller runs); a 404 on one bundle asks at once,
since it means either "no such bundle" or "no such API".

Apart from the publisher (:mod:`.cluster_trust_bundle`) because it is its own
small state machine (unknown, served, not served since when, said so in the
log or not) that concerns the API server, not any issuer: the publisher only
asks :meth:`ServedProbe.served` before it writes and turns :class:`NotServed`
into the ``APINotServed`` condition.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Final

from lightkube import ApiError, AsyncClient

from akv_issuer.controller.api import ClusterTrustBundle
from akv_issuer.controller.core import COMPONENT, LABEL_MANAGED_BY

log = logging.getLogger(__name__)

# How long a "not served" answer is believed before the API server is asked again
# (an upgrade to 1.37 while the controller runs).
REPROBE_AFTER: Final = dt.timedelta(minutes=5)
API_DESCRIPTION: Final = "certificates.k8s.io/v1 ClusterTrustBundles"
NOT_SERVED_MESSAGE: Final = (
    f"the API server does not serve {API_DESCRIPTION} (Kubernetes 1.37 or later); "
    "nothing is published, the controller asks again every 5 minutes"
)


class NotServed(Exception):
    """The API server answered 404 for the ClusterTrustBundle API itself."""


class ServedProbe:
    """Asks the API server whether it serves ClusterTrustBundles v1 and
    remembers the answer; says in the log once when it does not, and when it
    does again."""

    def __init__(self, client: AsyncClient, now: Callable[[], dt.datetime]) -> None:
        self._client = client
        self._now = now
        # Whether the API server serves ClusterTrustBundles v1, and when that
        # was last asked (None: not yet).
        self._served: bool | None = None
        self._probed_at: dt.datetime | None = None
        self._said_not_served = False

    @property
    def known_not_served(self) -> bool:
        """The last answer was "not served" (without asking again)."""
        return self._served is False

    async def served(self) -> bool:
        """Whether the API server serves ClusterTrustBundles v1: a list answered
        404 says it does not. Believed for :data:`REPROBE_AFTER`."""
        if self._served is None or (
            not self._served
            and self._probed_at is not None
            and self._now() - self._probed_at >= REPROBE_AFTER
        ):
            await self._probe()
        return bool(self._served)

    async def gone(self) -> bool:
        """After a 404: whether it means the resource is not served (asks at once)."""
        await self._probe()
        return self._served is False

    async def _probe(self) -> None:
        self._probed_at = self._now()
        try:
            async for _ in self._client.list(
                ClusterTrustBundle, labels={LABEL_MANAGED_BY: COMPONENT}, chunk_size=1
            ):
                break
        except ApiError as err:
            if err.status.code != 404:
                raise
            if not self._said_not_served:
                log.warning("%s; spec.clusterTrustBundles cannot be honoured", NOT_SERVED_MESSAGE)
                self._said_not_served = True
            self._served = False
            return
        if self._served is False:
            log.info("the API server serves %s now", API_DESCRIPTION)
        self._served = True
        self._said_not_served = False
