"""akv_issuer.keyvault loses no caller and misreads no error (issue 22 item 6).

- A key lookup shared by several callers (single-flight) belongs to none of
  them: one caller's cancellation is its own; the others still get the key.
- Only exceptions are Key Vault errors: a ``BaseException`` that is not an
  ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``)
  passes through unchanged.

Against the emulator, as the rest of tests/keyvault; a latency fault holds the
shared lookup in flight while the first caller is cancelled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from akv_issuer.keyvault import (
    ErrorKind,
    FederatedServiceAccount,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    WorkloadIdentity,
)


def wi_auth(env: EmulatorEnv) -> WorkloadIdentity:
    return WorkloadIdentity(
        client_id=env.workload_client_id,
        tenant_id=env.tenant_id,
        token_file=env.federated_token_file,
        authority_host=env.authority_host,
    )


@pytest.fixture
async def access(emulator_env: EmulatorEnv) -> AsyncIterator[KeyVaultAccess]:
    kv = KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator_env.ca_file, backoff=0.05))
    yield kv
    await kv.close()


async def in_flight(emulator: EmulatorProcess, operation: str, count: int = 1) -> None:
    """Until the emulator has received ``count`` requests of ``operation``
    (counted on arrival, before the latency fault holds them)."""
    for _ in range(1000):
        if emulator.admin.counters().get(operation, 0) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {operation} request reached the emulator")


async def slow_lookups(
    access: KeyVaultAccess, emulator: EmulatorProcess, name: str
) -> tuple[KeyInfo, WorkloadIdentity]:
    env = emulator.env
    auth = wi_auth(env)
    created = await access.create_key(env.vault_url, name, auth, kty="EC", curve="P-256")
    emulator.admin.set_faults({"latency_ms": 1500, "latency_operations": ["get_key"]})
    emulator.admin.reset_counters()
    return created, auth


async def test_a_waiter_gets_its_key_when_the_first_caller_is_cancelled(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    created, auth = await slow_lookups(access, emulator, unique_name)
    vault = emulator.env.vault_url
    first = asyncio.create_task(access.get_key(vault, unique_name, None, auth))
    second = asyncio.create_task(access.get_key(vault, unique_name, None, auth))
    await in_flight(emulator, "get_key")

    first.cancel()
    key = await second

    assert key.version == created.version
    assert first.cancelled()
    # The second caller shared the first one's request rather than making its own.
    assert emulator.admin.counters()["get_key"] == 1


async def test_a_lookup_nobody_waits_for_any_more_is_not_left_behind(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    created, auth = await slow_lookups(access, emulator, unique_name)
    vault = emulator.env.vault_url
    alone = asyncio.create_task(access.get_key(vault, unique_name, None, auth))
    await in_flight(emulator, "get_key")
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone

    # A later caller makes a lookup of its own and gets the key.
    emulator.admin.clear_faults()
    key = await access.get_key(vault, unique_name, None, auth)
    assert key.version == created.version


async def test_closing_during_a_lookup_is_a_key_vault_error_for_the_caller(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    kv = KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator.env.ca_file))
    try:
        _, auth = await slow_lookups(kv, emulator, unique_name)
        waiting = asyncio.create_task(kv.get_key(emulator.env.vault_url, unique_name, None, auth))
        await in_flight(emulator, "get_key")
    finally:
        await kv.close()
    with pytest.raises(KeyVaultError) as err:
        await waiting
    assert err.value.code == "Closed"
    assert err.value.kind is ErrorKind.PERMANENT


class Interrupted(BaseException):
    """Stands for SystemExit / KeyboardInterrupt, which a test cannot raise
    inside the event loop without stopping it."""


async def test_a_base_exception_is_not_classified_as_a_key_vault_error(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    async def interrupted(identity: FederatedServiceAccount) -> str:
        raise Interrupted

    identity = FederatedServiceAccount(
        namespace="team",
        name="akv",
        client_id=str(uuid.uuid4()),
        tenant_id=emulator.env.tenant_id,
        authority_host=emulator.env.authority_host,
    )
    async with KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emulator.env.ca_file), assertion_provider=interrupted
    ) as kv:
        vault = emulator.env.vault_url
        with pytest.raises(Interrupted):
            await kv.get_secret(vault, unique_name, None, identity)
        with pytest.raises(Interrupted):
            await kv.get_key(vault, unique_name, None, identity)
