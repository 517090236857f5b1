"""The controller's one way to Key Vault: :class:`KeyVaultGateway`.

Every Key Vault call the controller makes -- an issuer check's reads, a
certificate's or a CRL's sign, a CA renewal's sign and store -- goes through
the gateway, and so gets, written once here:

- counting by operation and outcome (``akv_issuer_keyvault_requests_total``,
  the HTTP status or the error's ``metric_label``);
- for every sign, one of the ``--concurrency`` sign slots for exactly each
  request sent (``akv_issuer_keyvault_signs_in_flight``; the keyvault layer
  below also bounds all calls per vault; ``keyvault.retry.each_attempt``): a
  sign that backs off between attempts holds no slot meanwhile, so a vault that
  fails does not slow the signs of the others; and the leader fence asked right
  before each request, after the slot was granted: with leader election
  ``fence`` raises ``NotLeading`` once this replica's lease may have passed to
  another, so two replicas never both sign (a renewal is a sign too);
- for the sign of a CA pool member (``member``): its circuit breaker
  (``core.pool``) asked right before each request too, after the slot: a member
  another request found down meanwhile is not asked (``KeyVaultError`` code
  :data:`MEMBER_SET_ASIDE`, sent nowhere), and a vault that is ``unreachable``
  is not retried in the keyvault layer (``keyvault.retry.failover_elsewhere``):
  the request goes on to the next member at once, while a single key's sign
  keeps the layer's retries (it has nowhere else to go);
- the text a feature shows for a failed call (:func:`keyvault_failure_text`);
- the party each sign and key read is charged to in its vault's throttling
  budget (:mod:`akv_issuer.keyvault.budget`: Key Vault's weighted 10-second
  windows). The keyvault layer charges exactly the requests it sends to Key
  Vault -- a key read its cache answers, or that joins a read in flight, costs
  nothing; each attempt of a retried call costs again -- so the gateway only
  names the party (``charged_to``): the checked issuer a sign is for; for
  reads and renewal signs during an issuer check, the issuer the check is
  about; key reads queue apart from the issuer's signs (``<issuer> (reads)``),
  so a check is not stuck behind the issuer's own burst. Calls queue per party
  and are served round-robin. A sign waits for its budget here, before
  anything else -- before the sign slot, so a vault out of budget holds no
  slot another vault could use, and before the fence -- and tells the layer
  below it paid. A call whose issuer already has enough waiting on the vault
  fails at once as throttled (code ``BudgetSpent``) with a time to come back,
  which the request flow requeues quietly, so the work queue hands its worker
  to another issuer meanwhile. The time every call waited for budget is
  observed by operation (``akv_issuer_keyvault_budget_wait_seconds``).

The issuer check maps a Key Vault error to an issuer's Ready reason itself
(``core.failures.keyvault_failure``): that names what was read, not "Key Vault".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from akv_issuer.ca import VaultAccess
from akv_issuer.controller.core.checked import CheckedIssuer
from akv_issuer.controller.core.pool import (
    BreakerState,
    BudgetView,
    InFlightBudget,
    MemberRef,
    PoolHealth,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.keyvault import (
    AuthConfig,
    CertificateInfo,
    ErrorKind,
    KeyAttestation,
    KeyInfo,
    KeyVaultError,
    KeyVersion,
    SecretInfo,
    SecretVersion,
    VaultBudgets,
)
from akv_issuer.keyvault.budget import charged_to, cost_of
from akv_issuer.keyvault.retry import each_attempt, failover_elsewhere
from akv_issuer.pki import RemoteSigner, SignatureAlgorithm
from akv_issuer.runtime.leader import no_fence
from akv_issuer.runtime.logs import current_object

T = TypeVar("T")

# KeyVaultError.code of a pool member's sign not sent: its breaker opened meanwhile.
MEMBER_SET_ASIDE = "PoolMemberSetAside"


class KeyVault(VaultAccess, Protocol):
    """What the controller uses of ``akv_issuer.keyvault.KeyVaultAccess``: what
    the CA rules call (:class:`akv_issuer.ca.VaultAccess`, declared once there)
    and what the issuer check reads besides."""

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo: ...

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> KeyAttestation: ...

    def invalidate(self, key: KeyInfo) -> None: ...

    async def close(self) -> None: ...


def keyvault_failure_text(err: KeyVaultError) -> str:
    """A failed Key Vault call as a feature shows it (condition messages, events):
    ``Key Vault: <the first line of the error> (<its code>)``."""
    detail = (err.message or err.kind.value).splitlines()[0]
    if err.code:
        detail += f" ({err.code})"
    return f"Key Vault: {detail}"


class SignSlots:
    """At most ``size`` Key Vault signs in flight, process-wide."""

    def __init__(self, size: int, metrics: Metrics) -> None:
        if size < 1:
            raise ValueError(f"sign concurrency must be at least 1, got {size}")
        self._semaphore = asyncio.Semaphore(size)
        self._in_flight = metrics.signs_in_flight

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._semaphore:
            self._in_flight.inc()
            try:
                yield
            finally:
                self._in_flight.dec()


class KeyVaultGateway:
    """Every Key Vault call of the controller: counted; every sign also holding
    a sign slot and fenced (see the module). Each method takes the arguments of
    ``KeyVaultAccess``'s method of the same name, so the gateway is also the
    ``akv_issuer.ca.VaultAccess`` the CA rules reach Key Vault through."""

    def __init__(
        self,
        keyvault: KeyVault,
        metrics: Metrics,
        *,
        concurrency: int,
        fence: Callable[[], None] = no_fence,
        budgets: VaultBudgets | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = keyvault
        self._calls = metrics.keyvault_calls
        self._slots = SignSlots(concurrency, metrics)
        self._fence = fence
        # None: no budget (every call goes at once, as before issue 26).
        self.budgets = budgets
        self._waited = metrics.budget_wait_seconds
        metrics.budgets.source = budgets
        if budgets is not None:
            budgets.observe_waits(self._observe_wait)
        self._concurrency = concurrency
        # Signs in flight per vault (CA pools choose a member by it when there is no
        # per-vault budget: core.pool.InFlightBudget).
        self._in_flight: collections.Counter[str] = collections.Counter()
        # The circuit breakers of CA pool members (core.pool), shared by every issuer.
        self.pool_health = PoolHealth()
        self.monotonic = monotonic

    def in_flight(self, vault_url: str) -> int:
        """Signs sent to ``vault_url`` (or waiting for a sign slot) and not answered."""
        return self._in_flight[vault_url.rstrip("/").lower()]

    def budget_view(self) -> BudgetView:
        """What CA pools choose a member by: the vaults' throttling budgets
        (:class:`BudgetsView`); with ``--no-keyvault-budget`` signs in flight per
        vault, at most ``--concurrency`` each."""
        if self.budgets is not None:
            return BudgetsView(self.budgets)
        return InFlightBudget(self, self._concurrency)

    def _observe_wait(self, operation: str, waited: float) -> None:
        self._waited.labels(operation).observe(waited)

    async def _read_key(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """A key read, charged (if it reaches Key Vault) to the issuer's reads."""
        with charged_to(f"{_party()} (reads)"):
            return await self._count(operation, call())

    async def _count(self, operation: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except KeyVaultError as err:
            if err.code != MEMBER_SET_ASIDE:  # not sent
                self._calls.labels(operation, err.metric_label).inc()
            raise
        self._calls.labels(operation, "200").inc()
        return result

    # -- keys, secrets, certificates --------------------------------------------

    def forget_key(self, key: KeyInfo) -> None:
        """Drop what the keyvault layer caches about ``key``: its next read asks the
        vault (a CA pool member's probe by the issuer check must reach the vault)."""
        self._kv.invalidate(key)

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        return await self._read_key(
            "get_key", lambda: self._kv.get_key(vault_url, name, version, auth)
        )

    async def list_key_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[KeyVersion, ...]:
        return await self._read_key(
            "list_key_versions",
            lambda: self._kv.list_key_versions(vault_url, name, auth, limit=limit),
        )

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo:
        return await self._count("rotate_key", self._kv.rotate_key(vault_url, name, auth))

    async def create_key(
        self,
        vault_url: str,
        name: str,
        auth: AuthConfig,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
    ) -> KeyInfo:
        return await self._count(
            "create_key",
            self._kv.create_key(vault_url, name, auth, kty=kty, size=size, curve=curve),
        )

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo:
        return await self._count("get_secret", self._kv.get_secret(vault_url, name, version, auth))

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]:
        return await self._count(
            "list_secret_versions",
            self._kv.list_secret_versions(vault_url, name, auth, limit=limit),
        )

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo:
        return await self._count(
            "get_certificate", self._kv.get_certificate(vault_url, name, version, auth)
        )

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> KeyAttestation:
        return await self._count(
            "get_key_attestation", self._kv.get_key_attestation(vault_url, name, version, auth)
        )

    async def set_secret(
        self,
        vault_url: str,
        name: str,
        value: str,
        auth: AuthConfig,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> SecretInfo:
        return await self._count(
            "set_secret",
            self._kv.set_secret(vault_url, name, value, auth, content_type=content_type, tags=tags),
        )

    # -- signs -----------------------------------------------------------------

    def signer(
        self,
        key: KeyInfo,
        auth: AuthConfig,
        *,
        party: str | None = None,
        member: MemberRef | None = None,
    ) -> RemoteSigner:
        """The signer of one key version: every ``sign_digest`` waits for the vault's
        budget (queued as ``party``, by default the issuer the running check is
        about), holds a sign slot for each request it sends, asks the fence (and,
        for a CA pool's ``member``, its breaker), and is counted."""
        return _GatedSigner(self._sign, self._kv.signer(key, auth), key, party or _party(), member)

    def issuer_signer(
        self, checked: CheckedIssuer, *, member: MemberRef | None = None
    ) -> RemoteSigner:
        """The signer of a checked issuer (its key version and identity); ``member``:
        the CA pool member it is (see the module)."""
        return self.signer(checked.key_info, checked.auth, party=str(checked.key), member=member)

    async def _sign(
        self, signer: _GatedSigner, algorithm: SignatureAlgorithm, digest: bytes
    ) -> bytes:
        key = signer.key
        paid = 0.0
        if self.budgets is not None:
            # The first attempt's budget, before the slot and the fence (see the module).
            paid = cost_of(key)
            await self.budgets.acquire(key.vault_url, signer.party, paid, operation="sign")
        vault = key.vault_url.rstrip("/").lower()
        member = signer.member
        self._in_flight[vault] += 1
        try:
            with (
                each_attempt(lambda: self._attempt(member)),
                failover_elsewhere() if member is not None else contextlib.nullcontext(),
                charged_to(signer.party, paid=paid),
            ):
                return await self._count("sign", signer.inner.sign_digest(algorithm, digest))
        finally:
            self._in_flight[vault] -= 1
            if not self._in_flight[vault]:
                del self._in_flight[vault]

    @contextlib.asynccontextmanager
    async def _attempt(self, member: MemberRef | None) -> AsyncIterator[None]:
        """Around each request a sign sends: a sign slot, the fence, a pool member's breaker."""
        async with self._slots.hold():
            self._fence()
            if member is not None:
                now = self.monotonic()
                if self.pool_health.state(member, now) is BreakerState.OPEN:
                    breaker = self.pool_health.breaker(member)
                    raise KeyVaultError(
                        ErrorKind.TRANSIENT,
                        f"set aside, not asked: {breaker.message or 'its vault failed'}",
                        code=MEMBER_SET_ASIDE,
                        retry_after=max(0.0, breaker.open_until - now),
                        operation="sign",
                    )
            yield

    async def close(self) -> None:
        if self.budgets is not None:
            self.budgets.close()
        await self._kv.close()


class BudgetsView:
    """:class:`core.pool.BudgetView` from the vaults' throttling budgets: the share of
    a vault's window free now when a call would go at once, else minus the seconds
    it would wait (so members without budget sort by the shortest wait); None for a
    vault without a budget (a Managed HSM: as if plenty)."""

    def __init__(self, budgets: VaultBudgets) -> None:
        self._budgets = budgets

    def remaining(self, vault_url: str) -> float | None:
        if self._budgets.window(vault_url) is None:
            return None
        wait = self._budgets.estimated_wait(vault_url)
        return -wait if wait > 0 else self._budgets.remaining(vault_url)


def _party() -> str:
    """Whom a call is for when the caller does not say: the object the running
    reconcile is about (an issuer check's issuer), else one shared party."""
    found = current_object()
    return found[1] if found is not None else "controller"


class _GatedSigner:
    def __init__(
        self,
        sign: Callable[[_GatedSigner, SignatureAlgorithm, bytes], Awaitable[bytes]],
        inner: RemoteSigner,
        key: KeyInfo,
        party: str,
        member: MemberRef | None = None,
    ) -> None:
        self._sign = sign
        self.inner = inner
        self.key = key
        self.party = party
        self.member = member

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        return await self._sign(self, algorithm, digest)

    def __repr__(self) -> str:
        return f"gated {self.inner!r}"
