"""What the keyvault layer charges to a vault's throttling budget (issue 26): exactly the
requests it sends to Key Vault. A key read the cache answers, or that joins a read
already in flight, costs nothing; a read that goes out costs its key's weight once;
each attempt of a retried call costs again (Key Vault counts every transaction).

In memory on a fake clock: :class:`keyvault.cache.KeyReads` (``KeyVaultAccess.get_key``
below the SDK call) and :class:`keyvault.retry.Retrying` with the real
:class:`VaultBudgets`; the request is a plain coroutine standing for the SDK call
(the same path against the emulator: tests/keyvault/test_keyvault_budget.py).
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.keyvault import (
    Ambient,
    BudgetConfig,
    ErrorKind,
    KeyInfo,
    KeyVaultError,
    KeyVaultOptions,
    VaultBudgets,
    key_cost,
)
from akv_issuer.keyvault.budget import DEFAULT_PARTY, UNKNOWN_KEY_COST, charged_to
from akv_issuer.keyvault.cache import KeyReads
from akv_issuer.keyvault.retry import Retrying
from support.fakeclock import FakeClock

VAULT = "https://charges.vault.azure.net"
AUTH = Ambient()
EC_HSM = key_cost("EC-HSM")  # 2 units


def key_info(version: str = "v1") -> KeyInfo:
    return KeyInfo(
        vault_url=VAULT,
        name="ca",
        version=version,
        kid=f"{VAULT}/keys/ca/{version}",
        kty="EC-HSM",
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        enabled=True,
        key_ops=("sign", "verify"),
    )


class Vault:
    """The request a read sends: counts what reached "Key Vault"."""

    def __init__(self) -> None:
        self.key = key_info()
        self.requests = 0
        self.gate: asyncio.Event | None = None
        self.failures: list[KeyVaultError] = []

    async def get_key(self) -> KeyInfo:
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return self.key


class Setup:
    def __init__(self, units: float = 400.0, **options: float) -> None:
        self.clock = FakeClock(start=0.0)
        self.budgets = VaultBudgets(
            BudgetConfig(units={VAULT: units}), clock=self.clock, sleep=self.clock.sleep
        )
        self.retrying = Retrying(
            KeyVaultOptions(**options),  # type: ignore[arg-type]
            self.budgets,
            sleep=self.clock.sleep,
        )
        self.reads = KeyReads(KeyVaultOptions(), self.retrying, lambda: RuntimeError("gone"))
        self.vault = Vault()
        self.waits: list[tuple[str, float]] = []
        self.budgets.observe_waits(lambda operation, s: self.waits.append((operation, s)))

    def spent(self) -> float:
        window = self.budgets.window(VAULT)
        assert window is not None
        return window.used(self.clock())

    async def read(self) -> KeyInfo:
        return await self.reads.get(AUTH, VAULT, "ca", None, self.vault.get_key)


async def test_cached_key_reads_spend_no_budget() -> None:
    t = Setup()
    await t.read()
    assert t.spent() == UNKNOWN_KEY_COST  # the type is not known before the first read
    for _ in range(25):
        assert (await t.read()).kid == t.vault.key.kid
    assert t.vault.requests == 1
    assert t.spent() == UNKNOWN_KEY_COST
    assert t.waits == [("get_key", 0.0)]


async def test_a_read_that_misses_the_cache_spends_its_keys_cost_once() -> None:
    t = Setup()
    await t.read()
    t.reads.cache.forget_latest(VAULT, "ca")  # "latest" expired (or the key rotated)
    await t.read()
    assert t.vault.requests == 2
    assert t.spent() == UNKNOWN_KEY_COST + EC_HSM  # the key's own weight once known
    assert t.reads.cost(VAULT, "CA") == EC_HSM


async def test_concurrent_callers_of_one_miss_spend_once() -> None:
    t = Setup()
    t.vault.gate = asyncio.Event()
    readers = [asyncio.create_task(t.read()) for _ in range(8)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert t.vault.requests == 1
    t.vault.gate.set()
    found = await asyncio.gather(*readers)
    assert {info.kid for info in found} == {t.vault.key.kid}
    assert t.vault.requests == 1
    assert t.spent() == UNKNOWN_KEY_COST


async def test_a_read_is_charged_to_the_party_that_names_itself() -> None:
    t = Setup(units=20.0)  # 19 units per window after headroom
    await t.budgets.acquire(VAULT, "another issuer", UNKNOWN_KEY_COST)
    with charged_to("ClusterIssuer a (reads)"):
        first = asyncio.create_task(t.read())
        for _ in range(10):
            await asyncio.sleep(0)
    window = t.budgets.window(VAULT)
    assert window is not None
    assert window.waiting("ClusterIssuer a (reads)") == 1  # 16 more units wait
    assert window.waiting(DEFAULT_PARTY) == 0
    await t.clock.advance(11)  # the window slid (10 s and its slack)
    await asyncio.wait_for(first, 1)
    assert t.vault.requests == 1


async def test_each_attempt_of_a_retried_call_is_charged() -> None:
    t = Setup()
    throttled = KeyVaultError(ErrorKind.THROTTLED, "Too many", status=429, retry_after=1.0)
    t.vault.failures.append(throttled)
    call = asyncio.create_task(t.retrying.call("sign", VAULT, t.vault.get_key, cost=EC_HSM))
    await t.clock.until_sleeping()  # Retry-After
    assert t.spent() == EC_HSM
    await t.clock.advance(1.0)
    await call
    assert t.vault.requests == 2
    assert t.spent() == 2 * EC_HSM
    assert [op for op, _ in t.waits] == ["sign", "sign"]


async def test_a_caller_that_paid_is_not_charged_again_but_its_retry_is() -> None:
    t = Setup()
    with charged_to("ClusterIssuer a", paid=EC_HSM):
        await t.retrying.call("sign", VAULT, t.vault.get_key, cost=EC_HSM)
    assert t.spent() == 0.0  # the caller's own acquire spent it (not here)
    t.vault.failures.append(KeyVaultError(ErrorKind.TRANSIENT, "reset", retry_after=0.5))
    with charged_to("ClusterIssuer a", paid=EC_HSM):
        call = asyncio.create_task(t.retrying.call("sign", VAULT, t.vault.get_key, cost=EC_HSM))
        await t.clock.until_sleeping()
        await t.clock.advance(0.5)
        await call
    assert t.vault.requests == 3
    assert t.spent() == EC_HSM  # the retry alone


async def test_calls_without_a_cost_are_not_budgeted() -> None:
    t = Setup()
    await t.retrying.call("get_secret", VAULT, t.vault.get_key)
    assert t.vault.requests == 1
    assert t.spent() == 0.0
    assert t.waits == []


async def test_a_retry_whose_budget_is_far_away_is_not_sent() -> None:
    # 3.8 units per window, paced: 0.95 at once, then 0.38 per second.
    t = Setup(units=4.0, max_retry_wait=1.0)
    t.vault.failures.append(KeyVaultError(ErrorKind.TRANSIENT, "reset", retry_after=0.5))
    call = asyncio.create_task(t.retrying.call("get_key", VAULT, t.vault.get_key, cost=0.9))
    await t.clock.until_sleeping()  # the first attempt went at once; its retry-after
    await t.clock.advance(0.5)
    with pytest.raises(KeyVaultError) as failed:
        await asyncio.wait_for(call, 1)
    # The retry would wait ~1.7 s for budget, longer than max_retry_wait: not sent, the
    # vault's failure is raised for the caller's work queue to back off.
    assert failed.value.message == "reset"
    assert t.vault.requests == 1
    assert t.spent() == 0.9
