"""Key Vault's per-vault throttling budget, kept on the client side, so that
callers wait for budget instead of running into HTTP 429.

The figures: Azure Key Vault service limits, "Key transactions (maximum
transactions allowed in 10 seconds, per vault per region)", column "All other
transactions" (sign, get, ...), https://learn.microsoft.com/azure/key-vault/general/service-limits
(checked 2026-12; BRIEF section 8)::

    key              software   HSM
    RSA 2,048-bit      4,000   2,000
    RSA 3,072-bit      1,000     500
    RSA 4,096-bit        500     250
    EC (any curve)     4,000   2,000

"The throttling thresholds are weighted, and enforcement is on their sum": one
transaction on a key uses 1/limit of the vault's 10-second window, whatever else
runs on the vault, and a read of a key (GET) counts like its sign. The budget
counts in *units* of one software RSA-2048 transaction: a vault has 4,000 units
per 10 s and a transaction costs ``4000 / limit`` (:func:`key_cost`: software
RSA-2048 and EC 1, HSM RSA-2048 and EC 2, RSA-3072 4 and 8, RSA-4096 8 and 16).
A vault whose subscription has other limits is given its own figure in units per
10 s (:class:`BudgetConfig`, the controller's ``--keyvault-budget-units VAULT=UNITS``);
the weights stay.

Not budgeted: secrets and certificates (their own 4,000 per 10 s, read once per
issuer check), key creation (its own 10/20 per 10 s, ``akv-issuer ca``), and
Managed HSM (``*.managedhsm.*``: no per-operation throttling; one key on one
partition signs roughly 150/s RSA-4096, which the controller's sign concurrency
bounds instead).

How it works (:class:`VaultWindow`, pure, every method takes ``now``):

- a sliding window of the grants of the last 10 s (plus ``slack``: the vault
  stamps a call later than we grant it), at most ``(1 - headroom)`` of the
  capacity, so a vault that saw our calls late does not throttle the next one;
- paced: at most a quarter of the window at once (``burst``), the rest as a
  token bucket refills at the window's rate -- a burst spreads over the window
  instead of taking all of it in its first second and leaving every other
  issuer to wait for the window to slide;
- waiters queue per *party* (an issuer), served round-robin, one call per turn,
  the party served longest ago first: one issuer's burst does not starve
  another's trickle; the call whose turn it is blocks the others until it fits
  (no cheap call overtakes an expensive one forever);
- a 429 (:meth:`VaultWindow.throttled`; the budget cannot see other clients of
  the vault) cuts the capacity by a quarter (at most once a second, never below
  a quarter of the figure; each window without a 429 gives a tenth back) and,
  when it says Retry-After, pauses every grant on the vault until then.

:class:`VaultBudgets` is the process-wide, asyncio side: ``acquire`` waits for
budget (a call that would make a party's queue longer than ``max_waiting`` is
refused at once with a THROTTLED :class:`~.errors.KeyVaultError`, code
:data:`BUDGET_SPENT`, whose ``retry_after`` says when to come back -- the
estimated wait, and for the next refused calls of the party times spaced at the
vault's rate -- so its caller's work queue can hand the worker to another issuer
meanwhile).

Queries for choosing among vaults (e.g. a CA pool's members), by vault URL:

- ``remaining(vault) -> float``: the fraction of the window free now (0..1;
  0 while paused by a 429's Retry-After; 1.0 for a vault without a budget);
- ``estimated_wait(vault, cost) -> float``: seconds a call of ``cost`` units
  (:func:`key_cost`) asked for now would wait, the calls queued ahead included
  (0.0 for a vault without a budget);
- ``in_use()``: the used fraction per budgeted vault (the metrics).

What is charged, and to whom: exactly the requests that reach Key Vault. The
keyvault layer charges each one where it sends it (:meth:`.retry.Retrying.call`,
with the cost its caller gives: a sign or read of a key, :func:`cost_of`), so a key
read answered from the key cache, or shared with a lookup already in flight
(:class:`.cache.SingleFlight`), costs nothing. Every attempt is charged, a retried
one too: Key Vault counts every transaction it receives (whether it counts one it
answered 429 is not documented; counting it errs on the safe side). The party a
request queues as is the one named by :func:`charged_to` around the call (the
controller's gateway names the issuer), else :data:`DEFAULT_PARTY`; a lookup shared
by several callers is charged to the one that started it. A caller that must wait
for budget before something else (the gateway takes a sign slot and asks the
leader fence only once a sign has its budget) acquires it itself and says so with
``charged_to(party, paid=cost)``: the next request is then not charged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .cloud import is_managed_hsm
from .errors import ErrorKind, KeyVaultError
from .models import KeyInfo, normalize_vault_url

# KeyVaultError.code of a call refused at once because its party has enough waiting.
BUDGET_SPENT = "BudgetSpent"
# The party of a request made outside every charged_to().
DEFAULT_PARTY = "default"
WINDOW_SECONDS = 10.0
# Units per window of a vault: software RSA-2048 transactions per 10 s.
DEFAULT_UNITS = 4000.0
LIMITS_SOURCE = "https://learn.microsoft.com/azure/key-vault/general/service-limits"
# (key class, HSM) -> transactions per 10 s, per vault and region ("All other transactions").
KEY_LIMITS: Mapping[tuple[str, bool], int] = {
    ("RSA-2048", False): 4000,
    ("RSA-2048", True): 2000,
    ("RSA-3072", False): 1000,
    ("RSA-3072", True): 500,
    ("RSA-4096", False): 500,
    ("RSA-4096", True): 250,
    ("EC", False): 4000,
    ("EC", True): 2000,
}
# The cost of a read of a key whose type is not known yet: the dearest class.
UNKNOWN_KEY_COST = DEFAULT_UNITS / min(KEY_LIMITS.values())
# Capacity kept free (a share of the figure) and the time added to the window.
HEADROOM = 0.05
SLACK_SECONDS = 0.25
# Pacing: at most this share of the window at once, the rest as it refills.
BURST = 0.25
# After a 429: the capacity cut (at most once per THROTTLE_CUT_EVERY s: the 429s of
# one batch of calls are one signal), never below the floor, and regained per window.
THROTTLE_CUT_EVERY = 1.0
THROTTLE_CUT = 0.75
THROTTLE_FLOOR = 0.25
THROTTLE_REGAIN = 0.1


def key_class(kty: str, size: int | None) -> tuple[str, bool]:
    """The row of :data:`KEY_LIMITS` for a JWK key type (RSA, RSA-HSM, EC, EC-HSM)
    and RSA size; RSA sizes between the published ones count as the next larger."""
    hsm = kty.upper().endswith("-HSM")
    if kty.upper().startswith("EC"):
        return "EC", hsm
    bits = size or 2048
    name = "RSA-2048" if bits <= 2048 else "RSA-3072" if bits <= 3072 else "RSA-4096"
    return name, hsm


def key_cost(kty: str, size: int | None = None) -> float:
    """Units one transaction on such a key uses (software RSA-2048 = 1)."""
    return DEFAULT_UNITS / KEY_LIMITS[key_class(kty, size)]


def cost_of(key: KeyInfo) -> float:
    """Units one sign or read of ``key`` uses."""
    size = key.public_key.key_size if isinstance(key.public_key, rsa.RSAPublicKey) else None
    return key_cost(key.kty, size)


@dataclass
class Payer:
    """Whom the requests of a context are charged to (:func:`charged_to`), and the units
    its caller acquired already for the next request."""

    party: str
    paid: float = 0.0


_payer: contextvars.ContextVar[Payer | None] = contextvars.ContextVar(
    "akv_issuer_keyvault_budget_payer", default=None
)


@contextlib.contextmanager
def charged_to(party: str, *, paid: float = 0.0) -> Iterator[Payer]:
    """Charge the Key Vault requests made in this block (and in the tasks it starts) to
    ``party``; ``paid``: units the caller acquired for the first of them already."""
    payer = Payer(party, paid)
    token = _payer.set(payer)
    try:
        yield payer
    finally:
        _payer.reset(token)


@dataclass(eq=False)
class Ticket:
    """One call waiting for (or granted) budget."""

    party: str
    cost: float
    asked: float
    granted: bool = False
    waker: Any = None  # what VaultBudgets resolves when granted


class VaultWindow:
    """One vault's budget: the sliding window, the parties' queues, the 429 feedback.
    Pure: no clock of its own, no I/O."""

    def __init__(
        self,
        units: float = DEFAULT_UNITS,
        *,
        window: float = WINDOW_SECONDS,
        slack: float = SLACK_SECONDS,
        headroom: float = HEADROOM,
        burst: float = BURST,
    ) -> None:
        if not math.isfinite(units) or units <= 0:
            raise ValueError(f"a vault's budget must be a positive number of units, got {units}")
        if not 0 < burst <= 1:
            raise ValueError(f"burst must be a share of the window in (0, 1], got {burst}")
        self.units = units
        self.window = window
        self.slack = slack
        self.headroom = headroom
        self.burst = burst
        # Pacing: a token bucket of burst x capacity, refilled at capacity per window.
        self._tokens = math.nan  # full on first use
        self._refilled = -math.inf
        self.factor = 1.0
        self.paused_until = -math.inf
        self._regain_at = math.inf
        self._cut_at = -math.inf
        self._grants: deque[tuple[float, float]] = deque()  # (granted at, cost)
        self._used = 0.0
        self._queues: OrderedDict[str, deque[Ticket]] = OrderedDict()
        # The turn each party was last served in (round-robin by "served longest ago").
        self._served: dict[str, int] = {}
        self._turn = 0

    # -- state -------------------------------------------------------------------------

    @property
    def capacity(self) -> float:
        """Units grantable per window now (after headroom and 429 cuts)."""
        return self.units * self.factor * (1.0 - self.headroom)

    def _expire(self, now: float) -> None:
        horizon = now - self.window - self.slack
        while self._grants and self._grants[0][0] <= horizon:
            self._used -= self._grants.popleft()[1]
        if not self._grants:
            self._used = 0.0
        while now >= self._regain_at:
            self.factor = min(1.0, self.factor + THROTTLE_REGAIN)
            self._regain_at = self._regain_at + self.window if self.factor < 1.0 else math.inf

    def used(self, now: float) -> float:
        """Units granted in the window ending now."""
        self._expire(now)
        return self._used

    @property
    def _depth(self) -> float:
        return self.capacity * self.burst

    @property
    def rate(self) -> float:
        """Units per second the window grants in the long run."""
        return self.capacity / self.window

    def _refill(self, now: float) -> None:
        if math.isnan(self._tokens):
            self._tokens = self._depth
        elif now > self._refilled:
            self._tokens = min(self._depth, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = max(self._refilled, now)

    def waiting(self, party: str | None = None) -> int:
        """Calls queued (of one party, or of all)."""
        if party is not None:
            queue = self._queues.get(party)
            return len(queue) if queue else 0
        return sum(len(q) for q in self._queues.values())

    def remaining(self, now: float) -> float:
        """The fraction of the window free now (0 while a 429's Retry-After runs)."""
        if now < self.paused_until:
            return 0.0
        free = self.capacity - self.used(now)
        return max(0.0, min(1.0, free / self.units))

    # -- waiting -------------------------------------------------------------------------

    def enqueue(self, party: str, cost: float, now: float) -> Ticket:
        """Queue a call (:meth:`grant` grants what fits)."""
        if not math.isfinite(cost) or cost <= 0:
            raise ValueError(f"a call's cost must be positive, got {cost}")
        ticket = Ticket(party, cost, now)
        queue = self._queues.get(party)
        if queue is None:
            self._queues[party] = deque([ticket])
        else:
            queue.append(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Forget a call that stopped waiting (cancelled); a granted one keeps its cost."""
        queue = self._queues.get(ticket.party)
        if queue is None or ticket.granted:
            return
        try:
            queue.remove(ticket)
        except ValueError:
            return
        if not queue:
            del self._queues[ticket.party]

    def grant(self, now: float) -> list[Ticket]:
        """Grant queued calls while they fit, one per party per turn, the party served
        longest ago first (a party new to the vault before all)."""
        granted: list[Ticket] = []
        if now < self.paused_until:
            return granted
        self._expire(now)
        self._refill(now)
        capacity = self.capacity
        while self._queues:
            party = self._next_party()
            queue = self._queues[party]
            ticket = queue[0]
            cost = min(ticket.cost, capacity)  # a call dearer than the window goes alone
            if self._used + cost > capacity + 1e-9:
                break
            if self._tokens < min(cost, self._depth) - 1e-9:
                break
            self._tokens -= min(cost, self._depth)
            queue.popleft()
            if not queue:
                del self._queues[party]
            self._turn += 1
            self._served[party] = self._turn
            ticket.granted = True
            self._grants.append((now, cost))
            self._used += cost
            granted.append(ticket)
        return granted

    def _next_party(self) -> str:
        return min(self._queues, key=lambda party: self._served.get(party, 0))

    def next_change(self, now: float) -> float | None:
        """When the call first in line may fit (None: nobody waits)."""
        if not self._queues:
            return None
        return self._fits_at(self._queues[self._next_party()][0].cost, 0.0, now)

    def _fits_at(self, cost: float, ahead: float, now: float) -> float:
        """When ``ahead`` units queued before it and ``cost`` fit in the window."""
        self._expire(now)
        self._refill(now)
        capacity = self.capacity
        need = self._used + ahead + min(cost, capacity) - capacity
        start = max(now, self.paused_until)
        # The pacing alone: tokens for everything ahead and this call.
        short = ahead + min(cost, self._depth) - self._tokens
        if short > 1e-9:
            start = max(start, max(now, self._refilled) + short / self.rate)
        if need <= 1e-9:
            return start
        freed = 0.0
        for at, spent in self._grants:
            freed += spent
            if freed >= need - 1e-9:
                return max(start, at + self.window + self.slack)
        # More queued than the window holds now: whole windows more.
        rest = need - freed
        last = self._grants[-1][0] if self._grants else now
        period = self.window + self.slack
        return max(start, last + period + math.ceil(rest / capacity - 1e-9) * period)

    def estimated_wait(self, cost: float, now: float) -> float:
        """Seconds a call of ``cost`` asked for now would wait (queued calls first)."""
        ahead = sum(t.cost for q in self._queues.values() for t in q)
        return max(0.0, self._fits_at(cost, ahead, now) - now)

    # -- feedback ------------------------------------------------------------------------

    def throttled(self, now: float, retry_after: float | None) -> None:
        """The vault answered 429: cut the capacity (regained per window) and, when the
        vault said Retry-After, grant nothing until then."""
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + retry_after)
        if now >= self._cut_at:
            self.factor = max(THROTTLE_FLOOR, self.factor * THROTTLE_CUT)
            self._cut_at = now + THROTTLE_CUT_EVERY
        self._regain_at = now + self.window


@dataclass(frozen=True)
class BudgetConfig:
    """Which vaults get a budget, of how many units per 10 s.

    enabled: False turns every budget off (``--no-keyvault-budget``).
    units: per vault URL (normalized), the units per 10 s instead of 4,000.
    max_waiting: calls one party may have queued per vault before more are refused
        at once (THROTTLED, ``retry_after`` = the estimated wait).
    """

    enabled: bool = True
    units: Mapping[str, float] = field(default_factory=dict)
    max_waiting: int = 4

    def __post_init__(self) -> None:
        if self.max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, got {self.max_waiting}")
        for vault, units in self.units.items():
            if not math.isfinite(units) or units <= 0:
                raise ValueError(
                    f"the budget of {vault} must be a positive number of units per 10 s, "
                    f"got {units:g}"
                )

    @classmethod
    def parse(cls, items: list[str], *, enabled: bool = True, max_waiting: int = 4) -> BudgetConfig:
        """``VAULT_URL=UNITS`` items (``--keyvault-budget-units``); ValueError says which
        is wrong."""
        units: dict[str, float] = {}
        for item in items:
            vault, sep, raw = item.rpartition("=")
            if not sep or not vault:
                raise ValueError(f"--keyvault-budget-units {item!r}: expected VAULT_URL=UNITS")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(
                    f"--keyvault-budget-units {item!r}: {raw!r} is not a number of units per 10 s"
                ) from None
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"--keyvault-budget-units {item!r}: the units per 10 s must be positive"
                )
            try:
                url = normalize_vault_url(vault)
            except KeyVaultError as err:
                raise ValueError(f"--keyvault-budget-units {item!r}: {err.message}") from None
            units[url] = value
        return cls(enabled=enabled, units=units, max_waiting=max_waiting)


@dataclass
class VaultStats:
    """What happened to one vault's budget (for the metrics)."""

    throttled: int = 0  # 429s the vault answered
    refused: int = 0  # calls refused at once: their party's queue was full
    waited: float = 0.0  # seconds callers waited in total


class VaultBudgets:
    """Every vault's budget in this process (see the module). ``clock`` (monotonic
    seconds) and ``sleep`` are injectable; a vault with calls waiting has one task
    that sleeps until the first in line may fit and grants what does."""

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or BudgetConfig()
        self._clock = clock
        self._sleep = sleep
        self._windows: dict[str, VaultWindow | None] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        # (vault, party) -> when the next call refused at once should come back: refused
        # calls get times spaced at the vault's rate, not all the same estimate.
        self._next_return: dict[tuple[str, str], float] = {}
        self.stats: dict[str, VaultStats] = {}
        # Told (operation, seconds) of every wait for budget (the metrics).
        self._wait_observers: list[Callable[[str, float], None]] = []

    def observe_waits(self, observer: Callable[[str, float], None]) -> None:
        """Have ``observer(operation, seconds)`` called after every granted acquire."""
        self._wait_observers.append(observer)

    def now(self) -> float:
        return self._clock()

    def window(self, vault_url: str) -> VaultWindow | None:
        """The vault's budget; None when it has none (off, Managed HSM)."""
        try:
            vault = normalize_vault_url(vault_url)
        except KeyVaultError:
            return None
        if vault in self._windows:
            return self._windows[vault]
        found: VaultWindow | None = None
        if self.config.enabled and not is_managed_hsm(vault):
            found = VaultWindow(self.config.units.get(vault, DEFAULT_UNITS))
            self.stats[vault] = VaultStats()
        self._windows[vault] = found
        return found

    # -- queries -------------------------------------------------------------------------

    def remaining(self, vault_url: str) -> float:
        window = self.window(vault_url)
        return 1.0 if window is None else window.remaining(self.now())

    def estimated_wait(self, vault_url: str, cost: float = 1.0) -> float:
        window = self.window(vault_url)
        return 0.0 if window is None else window.estimated_wait(cost, self.now())

    def in_use(self) -> dict[str, float]:
        """The used fraction of each budgeted vault's window (of its figure)."""
        now = self.now()
        return {
            vault: window.used(now) / window.units
            for vault, window in self._windows.items()
            if window is not None
        }

    # -- waiting and feedback ------------------------------------------------------------

    async def charge(self, vault_url: str, operation: str, cost: float) -> float:
        """Wait for the budget of one request about to be sent (see the module): charged
        to the context's party (:func:`charged_to`), unless its caller paid already."""
        payer = _payer.get()
        if payer is not None and payer.paid >= cost - 1e-9:
            payer.paid = 0.0
            return 0.0
        party = payer.party if payer is not None else DEFAULT_PARTY
        return await self.acquire(vault_url, party, cost, operation=operation)

    async def acquire(
        self, vault_url: str, party: str, cost: float, *, operation: str = "call"
    ) -> float:
        """Wait until the vault's budget has room for ``cost`` units; the seconds waited.
        Raises THROTTLED KeyVaultError at once when ``party`` has ``max_waiting`` calls
        queued on the vault already."""
        waited = await self._acquire(vault_url, party, cost)
        for observer in self._wait_observers:
            observer(operation, waited)
        return waited

    async def _acquire(self, vault_url: str, party: str, cost: float) -> float:
        window = self.window(vault_url)
        if window is None:
            return 0.0
        vault = normalize_vault_url(vault_url)
        now = self.now()
        if window.waiting(party) >= self.config.max_waiting:
            wait = window.estimated_wait(cost, now)
            at = max(now + wait, self._next_return.get((vault, party), now))
            self._next_return[(vault, party)] = at + cost / window.rate
            self.stats[vault].refused += 1
            raise KeyVaultError(
                ErrorKind.THROTTLED,
                f"the vault's throttling budget is spent for now ({window.waiting(party)} "
                f"calls of {party} wait for it already); come back in {at - now:.1f} s",
                code=BUDGET_SPENT,
                retry_after=at - now,
                operation="budget",
            )
        ticket = window.enqueue(party, cost, now)
        ticket.waker = asyncio.get_running_loop().create_future()
        self._grant(window)
        if ticket.granted:
            return 0.0
        self._pump(vault, window)
        try:
            await ticket.waker
        except BaseException:
            window.cancel(ticket)
            raise
        waited = self.now() - now
        self.stats[vault].waited += waited
        return waited

    def throttled(self, vault_url: str, retry_after: float | None) -> None:
        """The vault answered 429 (a client the budget cannot see used it)."""
        window = self.window(vault_url)
        if window is None:
            return
        window.throttled(self.now(), retry_after)
        self.stats[normalize_vault_url(vault_url)].throttled += 1

    def close(self) -> None:
        """Stop the vaults' timers (the process ends; waiting callers are cancelled)."""
        for pump in self._pumps.values():
            pump.cancel()
        self._pumps.clear()

    def _grant(self, window: VaultWindow) -> None:
        for ticket in window.grant(self.now()):
            if ticket.waker is not None and not ticket.waker.done():
                ticket.waker.set_result(None)

    def _pump(self, vault: str, window: VaultWindow) -> None:
        running = self._pumps.get(vault)
        if running is None or running.done():
            self._pumps[vault] = asyncio.get_running_loop().create_task(
                self._run_pump(window), name=f"keyvault-budget {vault}"
            )

    async def _run_pump(self, window: VaultWindow) -> None:
        while True:
            at = window.next_change(self.now())
            if at is None:
                return
            await self._sleep(max(0.0, at - self.now()) + 0.001)
            self._grant(window)
