"""Which member of a CA pool signs a request, and when a member is set aside.

Pure policy, no I/O and no clock of its own (every call takes ``now``, a monotonic
second count), so its unit tests run on a fake clock:

- :class:`BudgetView`: what the selection asks about a vault's signing budget. The
  per-vault throttling budget (``akv_issuer.keyvault.budget``, through the gateway's
  ``BudgetsView``) answers it; with ``--no-keyvault-budget``, :class:`InFlightBudget`
  answers from the gateway's signs in flight per vault.
- :class:`Breaker`: one member's circuit breaker. Closed: it signs. A failure of its
  vault (unreachable, throttled, forbidden) opens it for ``retry_after`` (the vault's
  Retry-After if longer), doubling with every failure in a row up to
  :data:`MAX_RETRY_AFTER`; a throttled call that came with a Retry-After opens it for
  just that Retry-After (a busy vault, not a broken one). Once that passed it is
  half-open: exactly one probe goes to its vault -- a request's sign, or the issuer
  check, which the issuer is requeued for at ``open_until`` so a member comes back
  without signing traffic (:func:`probe_delay`) -- while the others keep going
  elsewhere; success closes it, failure opens it again for longer. No check asks an
  open member's vault.
- :class:`PoolHealth`: the breakers of every member key the process signs with, shared
  by every issuer naming that key (a vault that is down is down for all of them).
- :func:`order_members`: the members a request tries, in order: a half-open member's
  probe first, then the closed members with budget left in an order fixed by the request
  (rendezvous hashing of its uid: a retry or another replica picks the same member
  while the pool is healthy, so it signs the same certificate), then closed members
  without budget by most budget left. Open members are not tried.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The longest a failing member stays out between probes.
MAX_RETRY_AFTER = 600.0


class BudgetView(Protocol):
    """What pool selection asks of a vault's signing budget."""

    def remaining(self, vault_url: str) -> float | None:
        """Signs the vault can take now without waiting (None: unknown, as if plenty)."""
        ...


class InFlight(Protocol):
    def in_flight(self, vault_url: str) -> int: ...


class InFlightBudget:
    """A :class:`BudgetView` from signs in flight per vault (the gateway's count): a vault
    has ``per_vault - in_flight`` left (``--no-keyvault-budget``: no per-vault budget)."""

    def __init__(self, source: InFlight, per_vault: int) -> None:
        self._source = source
        self._per_vault = per_vault

    def remaining(self, vault_url: str) -> float | None:
        return float(self._per_vault - self._source.in_flight(vault_url))


class BreakerState(enum.StrEnum):
    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


@dataclass
class Breaker:
    """One member key's circuit breaker (see the module)."""

    failures: int = 0  # in a row
    open_until: float = 0.0
    probing: bool = False  # a half-open probe is in flight
    reason: str = ""
    message: str = ""

    def state(self, now: float) -> BreakerState:
        if self.failures == 0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.open_until else BreakerState.HALF_OPEN

    def failed(
        self,
        now: float,
        retry_after: float,
        vault_retry_after: float | None,
        *,
        throttled: bool = False,
    ) -> None:
        self.probing = False
        if throttled and vault_retry_after:
            # Throttled with a Retry-After: the vault is busy, not broken, and said
            # when it takes calls again. Out for exactly that, and no doubling: a pool
            # whose survivors each get one 429 under load would otherwise lose them
            # for ``retry_after`` (30 s by default) while they have budget again in
            # a second or two.
            self.failures = max(1, self.failures)
            self.open_until = now + vault_retry_after
            return
        self.failures += 1
        wait = min(MAX_RETRY_AFTER, retry_after * 2 ** (self.failures - 1))
        self.open_until = now + max(wait, vault_retry_after or 0.0)

    def succeeded(self) -> None:
        self.failures = 0
        self.probing = False
        self.open_until = 0.0
        self.reason = self.message = ""


@dataclass(frozen=True, slots=True)
class MemberRef:
    """A pool member as selection sees it: its name in the issuer's pool, and the key
    it signs with (``vault_url`` + ``key_name``, the breaker's identity)."""

    name: str
    vault_url: str
    key_name: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.vault_url.rstrip("/").lower(), self.key_name.lower())


@dataclass
class PoolHealth:
    """The breakers of every member key, by (vault URL, key name)."""

    breakers: dict[tuple[str, str], Breaker] = field(default_factory=dict)

    def breaker(self, member: MemberRef) -> Breaker:
        return self.breakers.setdefault(member.key, Breaker())

    def state(self, member: MemberRef, now: float) -> BreakerState:
        found = self.breakers.get(member.key)
        return found.state(now) if found is not None else BreakerState.CLOSED

    def try_probe(self, member: MemberRef, now: float) -> bool:
        """Take the half-open member's one probe (False: not half-open, or taken)."""
        breaker = self.breaker(member)
        if breaker.state(now) is not BreakerState.HALF_OPEN or breaker.probing:
            return False
        breaker.probing = True
        return True

    def release_probe(self, member: MemberRef) -> None:
        """A probe that never reached the vault (the request was refused before)."""
        self.breaker(member).probing = False

    def failed(
        self,
        member: MemberRef,
        now: float,
        *,
        retry_after: float,
        vault_retry_after: float | None,
        reason: str,
        message: str,
        throttled: bool = False,
    ) -> bool:
        """The member's vault failed: open its breaker. True: it was closed (news).
        ``throttled``: the vault answered 429 (or the budget refused the call): the
        member is out only for the vault's Retry-After when it gave one."""
        breaker = self.breaker(member)
        was_closed = breaker.failures == 0
        breaker.failed(now, retry_after, vault_retry_after, throttled=throttled)
        breaker.reason, breaker.message = reason, message
        return was_closed

    def succeeded(self, member: MemberRef) -> bool:
        """The member signed: close its breaker. True: it was not closed (news)."""
        breaker = self.breakers.get(member.key)
        if breaker is None or breaker.failures == 0:
            return False
        breaker.succeeded()
        return True


def _rank(request_key: str, member: MemberRef) -> bytes:
    return hashlib.sha256(f"{request_key}\0{member.vault_url}\0{member.key_name}".encode()).digest()


def order_members(
    members: Sequence[MemberRef],
    request_key: str,
    health: PoolHealth,
    budget: BudgetView,
    now: float,
) -> list[MemberRef]:
    """The members a request tries, in order (see the module); a half-open member's probe
    is taken here (the caller releases it if the request never reaches the vault)."""
    probes: list[MemberRef] = []
    with_budget: list[MemberRef] = []
    without: list[tuple[float, MemberRef]] = []
    for member in members:
        state = health.state(member, now)
        if state is BreakerState.OPEN:
            continue
        if state is BreakerState.HALF_OPEN:
            if health.try_probe(member, now):
                probes.append(member)
            continue
        left = budget.remaining(member.vault_url)
        if left is None or left > 0:
            with_budget.append(member)
        else:
            without.append((left, member))
    with_budget.sort(key=lambda m: _rank(request_key, m), reverse=True)
    without.sort(key=lambda pair: pair[0], reverse=True)
    return [*probes, *with_budget, *(m for _, m in without)]


def soonest_retry(members: Sequence[MemberRef], health: PoolHealth, now: float) -> float:
    """Seconds until the first open member may be probed (0: one may be now)."""
    waits = [
        max(0.0, health.breaker(m).open_until - now)
        for m in members
        if health.state(m, now) is not BreakerState.CLOSED
    ]
    return min(waits, default=0.0)


def probe_delay(
    members: Sequence[MemberRef], health: PoolHealth, now: float, *, probing: float
) -> float | None:
    """Seconds until the issuer check should come back to probe a member that is not
    closed (None: every member is closed): the soonest ``open_until``; for a member
    whose probe a request holds now, ``probing`` (that request's outcome brings the
    check forward when the member signs again)."""
    delays: list[float] = []
    for member in members:
        found = health.breakers.get(member.key)
        if found is None:
            continue
        state = found.state(now)
        if state is BreakerState.OPEN:
            delays.append(found.open_until - now)
        elif state is BreakerState.HALF_OPEN:
            delays.append(probing if found.probing else 0.0)
    return min(delays, default=None)
