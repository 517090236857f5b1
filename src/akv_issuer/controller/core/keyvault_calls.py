"""The Key Vault calls of the controller: counted, and signs fenced and bounded.

Every Key Vault call an issuer check, a request's sign, a CRL's sign or a CA
renewal makes goes through :class:`KeyVaultCalls` (counted by operation and
HTTP status, ``akv_issuer_keyvault_calls_total``). Every sign goes through
:class:`FencedSigner`: with leader election, ``fence`` raises ``NotLeading``
right before the call once this replica's lease may have passed to another,
so two replicas never both sign; certificate and CRL signs also hold one of
the ``--concurrency`` sign slots (:class:`SignSlots`) for exactly the remote
call. :class:`IssuerSigners` hands out that signer for a checked issuer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from prometheus_client import Counter, Gauge

from akv_issuer.controller.core.checked import CheckedIssuer
from akv_issuer.keyvault import KeyVaultAccess, KeyVaultError
from akv_issuer.pki import RemoteSigner, SignatureAlgorithm
from akv_issuer.runtime.leader import no_fence

T = TypeVar("T")


class CountedCall(Protocol):
    """Awaits a Key Vault call, counting it by operation (:class:`KeyVaultCalls`)."""

    def __call__(self, operation: str, call: Awaitable[T], /) -> Awaitable[T]: ...


class KeyVaultCalls:
    """Awaits a Key Vault call, counting it by operation and HTTP status."""

    def __init__(self, calls: Counter) -> None:
        self._calls = calls

    async def __call__(self, operation: str, call: Awaitable[T], /) -> T:
        try:
            result = await call
        except KeyVaultError as err:
            self._calls.labels(operation, err.metric_label).inc()
            raise
        self._calls.labels(operation, "200").inc()
        return result


class SignSlots:
    """At most ``size`` Key Vault signs in flight, process-wide."""

    def __init__(self, size: int, in_flight: Gauge) -> None:
        self._semaphore = asyncio.Semaphore(size)
        self._in_flight = in_flight

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._semaphore:
            self._in_flight.inc()
            try:
                yield
            finally:
                self._in_flight.dec()


class FencedSigner:
    """The Key Vault signer, counted like every other Key Vault call and asking
    ``fence`` right before the call; with ``slots``, holding a sign slot for
    exactly the duration of the remote call (``fence`` is asked after waiting
    for the slot)."""

    def __init__(
        self,
        inner: RemoteSigner,
        count: CountedCall,
        fence: Callable[[], None] = no_fence,
        slots: SignSlots | None = None,
    ) -> None:
        self._inner = inner
        self._count = count
        self._fence = fence
        self._slots = slots

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        if self._slots is None:
            self._fence()
            return await self._count("sign", self._inner.sign_digest(algorithm, digest))
        async with self._slots.hold():
            self._fence()
            result: bytes = await self._count("sign", self._inner.sign_digest(algorithm, digest))
        return result


class IssuerSigners:
    """The signer of a checked issuer for certificates and CRLs: counted, fenced,
    and sharing the ``--concurrency`` sign slots."""

    def __init__(
        self,
        keyvault: KeyVaultAccess,
        count: CountedCall,
        slots: SignSlots,
        fence: Callable[[], None] = no_fence,
    ) -> None:
        self._kv = keyvault
        self._count = count
        self._slots = slots
        self._fence = fence

    def remote_signer(self, checked: CheckedIssuer) -> RemoteSigner:
        """The issuer's Key Vault signer, counted and holding a sign slot per call."""
        return FencedSigner(
            self._kv.signer(checked.key_info, checked.auth), self._count, self._fence, self._slots
        )
