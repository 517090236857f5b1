"""The vault's throttling budget (keyvault.budget, issue 26) with the keyvault layer,
against the emulator enforcing Key Vault's weighted 10-second limits, through the real
aio SDK: a burst that waits for the budget gets no 429 where the same burst without it
does; a 429 the budget could not foresee (another client of the vault) reaches it and
holds the vault's callers back; only requests that reach the vault are charged (key
reads the cache answers, or that join a read in flight, cost nothing), also through
the controller's gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from akv_issuer.controller.core import KeyVaultGateway
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.keyvault import (
    BudgetConfig,
    ClientSecret,
    ErrorKind,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    VaultBudgets,
    cost_of,
    normalize_vault_url,
)
from akv_issuer.keyvault.budget import UNKNOWN_KEY_COST, charged_to
from akv_issuer.pki import SignatureAlgorithm
from support.emulator import digest_for

# The emulator's figure for P-256 software keys, per 10 s (Key Vault's is 4,000).
EC_LIMIT = 10
BURST = 12
# A budget this many times the vault's figure holds nothing back.
LOOSE = 100


def sp_auth(env: EmulatorEnv) -> ClientSecret:
    return ClientSecret(
        tenant_id=env.tenant_id,
        client_id=env.sp_client_id,
        secret=env.sp_client_secret,
        authority_host=env.authority_host,
    )


@pytest.fixture
async def budgets(emulator_env: EmulatorEnv) -> VaultBudgets:
    # The same figure in units: P-256 software costs 1 unit per transaction.
    return VaultBudgets(BudgetConfig(units={emulator_env.vault_url: EC_LIMIT}, max_waiting=BURST))


@pytest.fixture
async def kv(emulator_env: EmulatorEnv, budgets: VaultBudgets) -> AsyncIterator[KeyVaultAccess]:
    # No retries: every 429 the vault answers reaches the caller.
    access = KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emulator_env.ca_file, max_retries=0), budgets=budgets
    )
    yield access
    await access.close()


async def ec_key(kv: KeyVaultAccess, env: EmulatorEnv, name: str) -> KeyInfo:
    return await kv.create_key(env.vault_url, name, sp_auth(env), kty="EC", curve="P-256")


async def burst(kv: KeyVaultAccess, env: EmulatorEnv, key: KeyInfo) -> list[bytes | KeyVaultError]:
    auth = sp_auth(env)

    async def one(n: int) -> bytes:
        # The keyvault layer charges each sign it sends to the party named here.
        with charged_to(f"issuer {n % 2}"):
            return await kv.sign(
                key, SignatureAlgorithm.ES256, digest_for("ES256", bytes([n])), auth
            )

    results = await asyncio.gather(*(one(n) for n in range(BURST)), return_exceptions=True)
    return [r if isinstance(r, bytes | KeyVaultError) else _raise(r) for r in results]


def _raise(exc: BaseException) -> bytes:
    raise exc


def limit_ec(emulator: EmulatorProcess) -> None:
    emulator.admin.set_faults({"throttle": {"limits": {"EC": EC_LIMIT}, "window_seconds": 10}})


async def test_a_burst_that_waits_for_the_budget_gets_no_429(
    emulator: EmulatorProcess, kv: KeyVaultAccess, budgets: VaultBudgets, unique_name: str
) -> None:
    env = emulator.env
    key = await ec_key(kv, env, unique_name)
    limit_ec(emulator)
    results = await burst(kv, env, key)
    assert all(isinstance(r, bytes) and len(r) == 64 for r in results)
    assert emulator.admin.responses()["sign"] == {"200": BURST}
    stats = budgets.stats[normalize_vault_url(env.vault_url)]
    assert stats.throttled == 0
    assert stats.waited > 0, "the calls beyond the figure waited for the window"


async def test_the_same_burst_without_the_budget_runs_into_429(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    # A budget far above the vault's figure: nothing waits, every 429 still reaches it.
    budgets = VaultBudgets(BudgetConfig(units={env.vault_url: LOOSE * EC_LIMIT}, max_waiting=BURST))
    kv = KeyVaultAccess(KeyVaultOptions(tls_ca_file=env.ca_file, max_retries=0), budgets=budgets)
    try:
        key = await ec_key(kv, env, unique_name)
        limit_ec(emulator)
        results = await burst(kv, env, key)
    finally:
        await kv.close()
    throttled = [r for r in results if isinstance(r, KeyVaultError)]
    assert len(throttled) == BURST - EC_LIMIT
    assert all(err.kind is ErrorKind.THROTTLED and err.code == "Throttled" for err in throttled)
    assert emulator.admin.responses()["sign"] == {"200": EC_LIMIT, "429": BURST - EC_LIMIT}
    # Each 429 reached the budget: it shrinks (no Retry-After here, so no pause).
    vault = normalize_vault_url(env.vault_url)
    assert budgets.stats[vault].throttled == BURST - EC_LIMIT
    window = budgets.window(vault)
    assert window is not None
    assert window.capacity < LOOSE * EC_LIMIT * 0.95


async def test_a_429s_retry_after_pauses_the_vaults_budget(
    emulator: EmulatorProcess, kv: KeyVaultAccess, budgets: VaultBudgets, unique_name: str
) -> None:
    env = emulator.env
    key = await ec_key(kv, env, unique_name)
    # Another client used the vault: one sign per 10 s, and the vault says when to retry.
    emulator.admin.set_faults(
        {"throttle": {"limits": {"EC": 1}, "window_seconds": 10, "retry_after": 0}}
    )
    auth = sp_auth(env)
    await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), auth)
    with pytest.raises(KeyVaultError) as err:
        await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), auth)
    assert err.value.retry_after is not None
    assert 5 <= err.value.retry_after <= 10
    vault = normalize_vault_url(env.vault_url)
    assert budgets.remaining(vault) == 0.0
    assert budgets.estimated_wait(vault) >= err.value.retry_after - 1


# -- what is charged: the requests that reach the vault -------------------------------


@pytest.fixture
async def roomy(emulator_env: EmulatorEnv) -> AsyncIterator[tuple[KeyVaultAccess, VaultBudgets]]:
    """The keyvault layer with a budget far above its use (no charge is capped)."""
    budgets = VaultBudgets(BudgetConfig(units={emulator_env.vault_url: 1000}))
    access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator_env.ca_file), budgets=budgets)
    yield access, budgets
    await access.close()


def spent(budgets: VaultBudgets, env: EmulatorEnv) -> float:
    window = budgets.window(env.vault_url)
    assert window is not None
    return window.used(budgets.now())


async def test_cached_key_reads_through_the_gateway_spend_no_budget(
    emulator: EmulatorProcess, roomy: tuple[KeyVaultAccess, VaultBudgets], unique_name: str
) -> None:
    env = emulator.env
    kv, budgets = roomy
    key = await ec_key(kv, env, unique_name)
    emulator.admin.reset_counters()
    gateway = KeyVaultGateway(kv, Metrics(), concurrency=4, budgets=budgets)
    auth = sp_auth(env)
    for _ in range(10):
        found = await gateway.get_key(env.vault_url, unique_name, None, auth)
        assert found.kid == key.kid
    # One GET reached the vault: charged once, at the dearest class (its type unknown).
    assert emulator.admin.responses()["get_key"] == {"200": 1}
    assert spent(budgets, env) == UNKNOWN_KEY_COST
    # A read of a version the cache holds is answered without a request either.
    await gateway.get_key(env.vault_url, unique_name, key.version, auth)
    assert emulator.admin.responses()["get_key"] == {"200": 1}
    assert spent(budgets, env) == UNKNOWN_KEY_COST
    # Signs are charged once each, at the key's weight (P-256 software: 1 unit).
    signer = gateway.signer(found, auth, party="ClusterIssuer a")
    await signer.sign_digest(SignatureAlgorithm.ES256, digest_for("ES256"))
    assert spent(budgets, env) == UNKNOWN_KEY_COST + cost_of(key)


async def test_concurrent_readers_of_one_key_spend_its_cost_once(
    emulator: EmulatorProcess, roomy: tuple[KeyVaultAccess, VaultBudgets], unique_name: str
) -> None:
    env = emulator.env
    kv, budgets = roomy
    key = await ec_key(kv, env, unique_name)
    emulator.admin.reset_counters()
    auth = sp_auth(env)
    found = await asyncio.gather(
        *(kv.get_key(env.vault_url, unique_name, None, auth) for _ in range(8))
    )
    assert {info.kid for info in found} == {key.kid}
    assert emulator.admin.responses()["get_key"] == {"200": 1}
    assert spent(budgets, env) == UNKNOWN_KEY_COST
