"""How akv_issuer.keyvault reads Azure's answers, against the emulator through the real aio
SDK: each refusal's kind and cause, and the key cache under names given in another case."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from akv_issuer.keyvault import (
    Cause,
    ClientSecret,
    ErrorKind,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
)
from akv_issuer.pki import SignatureAlgorithm
from support.emulator import digest_for


def sp_auth(env: EmulatorEnv, **changes: str) -> ClientSecret:
    values = {
        "tenant_id": env.tenant_id,
        "client_id": env.sp_client_id,
        "secret": env.sp_client_secret,
        "authority_host": env.authority_host,
        **changes,
    }
    return ClientSecret(**values)


@pytest.fixture
async def kv(emulator_env: EmulatorEnv) -> AsyncIterator[KeyVaultAccess]:
    access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator_env.ca_file, backoff=0.05))
    yield access
    await access.close()


@pytest.mark.parametrize(
    ("change", "code", "aadsts"),
    [
        # The vault's challenge names its tenant: azure-identity refuses another one
        # itself (AADSTS90002 is the token endpoint's answer, tests/emulator).
        (
            {"tenant_id": "00000000-0000-4000-8000-0000000000ff"},
            "TenantMismatch",
            "7e3a1f00-0000-4000-8000-00000000e1a0",
        ),
        (
            {"client_id": "00000000-0000-4000-8000-00000000dead"},
            "unauthorized_client",
            "AADSTS700016",
        ),
        ({"secret": "not-the-secret"}, "invalid_client", "AADSTS7000215"),
    ],
    ids=["unknown-tenant", "unknown-client", "wrong-secret"],
)
async def test_entra_refusals_need_an_administrator(
    kv: KeyVaultAccess,
    emulator_env: EmulatorEnv,
    unique_name: str,
    change: dict[str, str],
    code: str,
    aadsts: str,
) -> None:
    # Entra ID error codes reference: these need the identity fixed, not a retry. The
    # message keeps the AADSTS line and drops the Trace ID / Correlation ID / Timestamp lines.
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator_env.vault_url, unique_name, None, sp_auth(emulator_env, **change))
    assert (err.value.kind, err.value.cause, err.value.code) == (
        ErrorKind.FORBIDDEN,
        Cause.CREDENTIAL_REFUSED,
        code,
    )
    assert aadsts in err.value.message  # the AADSTS code, or the vault's tenant
    assert "Trace ID" not in str(err.value)
    assert "\n" not in str(err.value)


async def test_entra_throttling_is_throttled_with_retry_after(
    kv: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    # An Entra 429 (temporarily_unavailable) is waited out, not reported as a refusal.
    emulator.admin.set_faults(
        {"throttle": {"probability": 1.0, "operations": ["token"], "retry_after": 1}}
    )
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator.env.vault_url, unique_name, None, sp_auth(emulator.env))
    assert err.value.kind is ErrorKind.THROTTLED
    assert err.value.retry_after == 1


async def test_disabled_key_at_sign_time_is_disabled_not_a_permission_problem(
    kv: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    auth = sp_auth(emulator_env)
    key = await kv.create_key(emulator_env.vault_url, unique_name, auth, kty="EC")
    clients = kv.clients(emulator_env.vault_url, auth)
    await clients.keys.update_key_properties(unique_name, enabled=False)
    with pytest.raises(KeyVaultError) as err:
        await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), auth)
    assert (err.value.kind, err.value.cause, err.value.inner_code) == (
        ErrorKind.FORBIDDEN,
        Cause.DISABLED,
        "KeyDisabled",
    )
    # Expired beyond the vault's clock-skew leeway: the same cause, not a permission.
    await clients.keys.update_key_properties(
        unique_name, enabled=True, expires_on=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    with pytest.raises(KeyVaultError) as err:
        await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), auth)
    assert (err.value.cause, err.value.inner_code) == (Cause.DISABLED, "KeyExpired")


async def test_disabled_secret_is_disabled(
    kv: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    auth = sp_auth(emulator_env)
    await kv.set_secret(emulator_env.vault_url, unique_name, "pem", auth)
    clients = kv.clients(emulator_env.vault_url, auth)
    await clients.secrets.update_secret_properties(unique_name, enabled=False)
    with pytest.raises(KeyVaultError) as err:
        await kv.get_secret(emulator_env.vault_url, unique_name, None, auth)
    assert (err.value.cause, err.value.inner_code) == (Cause.DISABLED, "SecretDisabled")


async def test_firewall_and_access_policy_refusals(
    kv: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    # Key Vault common error codes: ForbiddenByFirewall (network rules), AccessDenied
    # (access policy): both FORBIDDEN, only the firewall has its own cause.
    env = emulator.env
    emulator.admin.set_vault(firewall=True)
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(env.vault_url, unique_name, None, sp_auth(env))
    assert (err.value.kind, err.value.cause) == (ErrorKind.FORBIDDEN, Cause.NETWORK_RULES)
    emulator.admin.set_vault(firewall=False, permission_model="access_policy")
    emulator.admin.set_identity(env.sp_client_id, key_permissions=["sign"])
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(env.vault_url, unique_name, None, sp_auth(env))
    assert (err.value.kind, err.value.cause, err.value.inner_code) == (
        ErrorKind.FORBIDDEN,
        None,
        "AccessDenied",
    )


async def test_a_missing_permission_is_named_in_one_line(
    kv: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    # Azure RBAC names the refused data action in its 403 (over several lines); an
    # access policy names its permission. Either way the error says which, in one line.
    env = emulator.env
    key = await kv.create_key(env.vault_url, unique_name, sp_auth(env), kty="EC", curve="P-256")
    emulator.admin.set_role_assignments(
        env.sp_client_id,
        [
            {
                "scope": f"/keys/{unique_name}",
                "data_actions": ["Microsoft.KeyVault/vaults/keys/read"],
            }
        ],
    )
    kv.invalidate(key)
    await kv.get_key(env.vault_url, unique_name, None, sp_auth(env))
    with pytest.raises(KeyVaultError) as err:
        await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), sp_auth(env))
    assert (err.value.kind, err.value.cause, err.value.inner_code) == (
        ErrorKind.FORBIDDEN,
        None,
        "ForbiddenByRbac",
    )
    assert err.value.missing_permission == "Microsoft.KeyVault/vaults/keys/sign/action"
    assert len(str(err.value).splitlines()) == 1
    assert "missing permission: Microsoft.KeyVault/vaults/keys/sign/action" in str(err.value)
    with pytest.raises(KeyVaultError) as err:
        await kv.get_secret(env.vault_url, unique_name, None, sp_auth(env))
    assert err.value.missing_permission == "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    emulator.admin.set_vault(permission_model="access_policy")
    emulator.admin.set_identity(env.sp_client_id, secret_permissions=["list"])
    with pytest.raises(KeyVaultError) as err:
        await kv.get_secret(env.vault_url, unique_name, None, sp_auth(env))
    assert (err.value.inner_code, err.value.missing_permission) == ("AccessDenied", "secrets get")
    # A refusal that is not about a permission names none.
    emulator.admin.set_vault(permission_model="rbac", firewall=True)
    with pytest.raises(KeyVaultError) as err:
        await kv.get_secret(env.vault_url, unique_name, None, sp_auth(env))
    assert err.value.missing_permission is None


async def test_unsupported_api_version_is_permanent_and_named(
    kv: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    # keys.json: api-version is required; a vault without the SDK's default answers 400.
    emulator.admin.set_vault(api_versions=["7.0", "7.1"])
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator.env.vault_url, unique_name, None, sp_auth(emulator.env))
    assert (err.value.kind, err.value.cause, err.value.status) == (
        ErrorKind.PERMANENT,
        Cause.API_VERSION,
        400,
    )
    async with KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emulator.env.ca_file, api_version="7.1")
    ) as older:
        await older.create_key(emulator.env.vault_url, unique_name, sp_auth(emulator.env), kty="EC")


async def test_a_soft_deleted_name_is_permanent_until_recovered_or_purged(
    kv: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # Soft-delete overview: the name is reserved while the object is soft-deleted (409).
    auth = sp_auth(emulator_env)
    await kv.set_secret(emulator_env.vault_url, unique_name, "pem", auth)
    secrets = kv.clients(emulator_env.vault_url, auth).secrets
    await secrets.delete_secret(unique_name)
    assert await kv.is_soft_deleted(emulator_env.vault_url, "secret", unique_name, auth)
    with pytest.raises(KeyVaultError) as err:
        await kv.set_secret(emulator_env.vault_url, unique_name, "again", auth)
    assert (err.value.kind, err.value.cause, err.value.status) == (
        ErrorKind.PERMANENT,
        Cause.SOFT_DELETED,
        409,
    )
    assert not await kv.is_soft_deleted(emulator_env.vault_url, "key", unique_name, auth)


async def test_the_key_cache_follows_a_name_given_in_another_case(
    kv: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # "About keys, secrets and certificates": names compare case-insensitively; the key ID
    # carries the stored case. A refusal under the stored name must drop what was cached
    # under the requested one.
    auth = sp_auth(emulator_env)
    name = f"Case-{unique_name}"
    await kv.create_key(emulator_env.vault_url, name, auth, kty="EC")
    key = await kv.get_key(emulator_env.vault_url, name.lower(), None, auth)
    assert key.name == name
    assert f"/keys/{name}/" in key.kid
    clients = kv.clients(emulator_env.vault_url, auth)
    await clients.keys.update_key_properties(name, enabled=False)
    with pytest.raises(KeyVaultError):
        await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), auth)
    again = await kv.get_key(emulator_env.vault_url, name.upper(), None, auth)
    assert not again.enabled


async def test_a_conflict_with_a_concurrent_operation_is_retried(
    kv: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    # Key Vault common error codes: ConflictError (409) for concurrent operations on one
    # item, "implement retry logic": TRANSIENT, and the layer's own retry gets through.
    auth = sp_auth(emulator.env)
    await kv.create_key(emulator.env.vault_url, unique_name, auth, kty="EC")
    emulator.admin.set_faults({"errors": {"next": 1, "status": 409, "operations": ["get_key"]}})
    key = await kv.get_key(emulator.env.vault_url, unique_name, None, auth)
    assert key.name == unique_name
    assert emulator.admin.responses()["get_key"] == {"409": 1, "200": 1}
    emulator.admin.set_faults(
        {"errors": {"probability": 1.0, "status": 409, "operations": ["get_secret"]}}
    )
    with pytest.raises(KeyVaultError) as err:
        await kv.get_secret(emulator.env.vault_url, unique_name, None, auth)
    assert (err.value.kind, err.value.status, err.value.cause) == (ErrorKind.TRANSIENT, 409, None)
