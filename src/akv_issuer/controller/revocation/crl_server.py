"""Serving each issuer's CRL over plain HTTP, from every replica.

Why every replica and why plain HTTP: CRL distribution points are fetched by
relying parties that cannot yet trust anything (RFC 5280 4.2.1.13; TLS to
fetch the CRL would need revocation checking of its own), and the CRL is
signed, so integrity comes from the signature. A standby keeps no caches, so
the CRL is read from the issuer's revocation ConfigMap on demand and kept for
two seconds (``ttl``), which bounds the API server's load from a busy
endpoint while a new CRL is served at most ``ttl`` seconds after it was
written. Unknown issuers are cached too (as absent), for the same reason.

Paths: ``/crl/issuer/<namespace>/<name>.crl`` and
``/crl/clusterissuer/<name>.crl``; answer ``application/pkix-crl``, DER.
The stored CRL is served even after its nextUpdate (relying parties decide);
the issuer's ``CRLCurrent`` condition says when that happens.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError

from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, ISSUER_KIND
from akv_issuer.controller.core import IssuerKey, permissions
from akv_issuer.controller.revocation.store import NotOurs, RevocationStore
from akv_issuer.runtime.errors import UnexpectedErrors, expected

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/pkix-crl"
PREFIX: Final = "/crl/"


def crl_path(key: IssuerKey) -> str:
    """The path at which ``key``'s CRL is served."""
    if key.kind == CLUSTER_ISSUER_KIND:
        return f"{PREFIX}clusterissuer/{key.name}.crl"
    return f"{PREFIX}issuer/{key.namespace}/{key.name}.crl"


# Kubernetes object names (DNS subdomains): anything else cannot name an issuer,
# and is answered 404 without asking the API server.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Reads are serialised per issuer through a fixed set of locks, so requests for
# made-up names (the endpoint is unauthenticated) cannot grow memory.
_LOCKS: Final = 64


def parse_path(path: str) -> IssuerKey | None:
    if not path.startswith(PREFIX) or not path.endswith(".crl"):
        return None
    parts = path[len(PREFIX) : -len(".crl")].split("/")
    if not all(_NAME.match(part) for part in parts[1:]):
        return None
    if len(parts) == 2 and parts[0] == "clusterissuer" and parts[1]:
        return IssuerKey(CLUSTER_ISSUER_KIND, "", parts[1])
    if len(parts) == 3 and parts[0] == "issuer" and parts[1] and parts[2]:
        return IssuerKey(ISSUER_KIND, parts[1], parts[2])
    return None


def member_crl_path(key: IssuerKey, member: str) -> str:
    """The path at which CA pool member ``member``'s CRL of ``key`` is served."""
    return f"{crl_path(key)[: -len('.crl')]}/members/{member}.crl"


_MEMBER = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_member_path(path: str) -> tuple[IssuerKey, str] | None:
    """A pool member's CRL path: the issuer's path without ``.crl``, ``/members/<member>.crl``."""
    head, sep, tail = path.rpartition("/members/")
    if not sep or not tail.endswith(".crl"):
        return None
    member = tail[: -len(".crl")]
    key = parse_path(head + ".crl")
    if key is None or _MEMBER.match(member) is None:
        return None
    return key, member


class CRLServer:
    def __init__(
        self,
        store: RevocationStore,
        ttl: float = 2.0,
        unexpected: UnexpectedErrors | None = None,
    ) -> None:
        self._store = store
        self._unexpected = unexpected or UnexpectedErrors()
        self._ttl = ttl
        self._cache: dict[tuple[IssuerKey, str | None], tuple[float, bytes | None]] = {}
        self._locks = [asyncio.Lock() for _ in range(_LOCKS)]

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PREFIX + "{tail:.+}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        key = parse_path(request.path)
        member: str | None = None
        if key is None:
            found = parse_member_path(request.path)
            if found is None:
                return web.Response(status=404, text="not a CRL path\n")
            key, member = found
        try:
            der = await self._get(key, member)
        except Exception as exc:
            if expected(exc):  # the API server is unreachable: say so, briefly
                log.warning("serving the CRL of %s: %s: %s", key, type(exc).__name__, exc)
            else:  # a bug: its traceback once per issuer, counted
                self._unexpected.report(log, "crl-server", key, exc, "serving the CRL of %s", key)
            return web.Response(status=503, text="CRL temporarily unavailable\n")
        self._unexpected.forget("crl-server", key)
        if der is None:
            return web.Response(status=404, text="no CRL for this issuer\n")
        return web.Response(body=der, headers={"Content-Type": CONTENT_TYPE})

    async def _get(self, key: IssuerKey, member: str | None = None) -> bytes | None:
        slot = (key, member)
        cached = self._cache.get(slot)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        # One read per issuer at a time: concurrent clients wait for it.
        async with self._locks[hash(key) % _LOCKS]:
            cached = self._cache.get(slot)
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
            der: bytes | None = None
            try:
                stored = await self._store.read(key)
            except NotOurs:
                stored = None
            except ApiError as err:
                # An issuer whose namespace the controller may not read
                # ConfigMaps in has no CRL (its CRLCurrent condition says why).
                if not permissions.is_forbidden(err):
                    raise
                stored = None
            crl_pem = stored.crl_of(member)[0] if stored is not None else None
            if crl_pem:
                try:
                    der = x509.load_pem_x509_crl(crl_pem.encode()).public_bytes(
                        serialization.Encoding.DER
                    )
                except ValueError:
                    log.warning("the stored CRL of %s is unreadable", key)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[slot] = (time.monotonic(), der)
            return der
