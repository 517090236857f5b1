"""akv_issuer.keyvault against the emulator: real aio SDK clients, TLS verified, faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient, SecretProperties
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from akv_issuer.keyvault import (
    Ambient,
    Cause,
    ClientSecret,
    ErrorKind,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    WorkloadIdentity,
)
from akv_issuer.keyvault.retry import failover_elsewhere
from akv_issuer.pki import SignatureAlgorithm
from support.emulator import digest_for, verify_locally

KEY_CASES = [
    ("RSA", 2048, None, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]),
    ("RSA", 3072, None, ["RS384", "PS384"]),
    ("RSA", 4096, None, ["RS512", "PS512"]),
    ("RSA-HSM", 3072, None, ["RS256", "PS512"]),
    ("EC", None, "P-256", ["ES256"]),
    ("EC", None, "P-384", ["ES384"]),
    ("EC", None, "P-521", ["ES512"]),
    ("EC-HSM", None, "P-384", ["ES384"]),
]


def wi_auth(env: EmulatorEnv) -> WorkloadIdentity:
    return WorkloadIdentity(
        client_id=env.workload_client_id,
        tenant_id=env.tenant_id,
        token_file=env.federated_token_file,
        authority_host=env.authority_host,
    )


def sp_auth(env: EmulatorEnv, secret: str | None = None) -> ClientSecret:
    return ClientSecret(
        tenant_id=env.tenant_id,
        client_id=env.sp_client_id,
        secret=secret or env.sp_client_secret,
        authority_host=env.authority_host,
    )


def options(env: EmulatorEnv, **overrides: Any) -> KeyVaultOptions:
    return KeyVaultOptions(tls_ca_file=env.ca_file, **overrides)


@pytest.fixture
async def access(emulator_env: EmulatorEnv) -> AsyncIterator[KeyVaultAccess]:
    kv = KeyVaultAccess(options(emulator_env, backoff=0.05))
    yield kv
    await kv.close()


async def new_key(access: KeyVaultAccess, env: EmulatorEnv, name: str, **kwargs: Any) -> KeyInfo:
    return await access.create_key(env.vault_url, name, wi_auth(env), **kwargs)


@pytest.mark.parametrize(("kty", "size", "curve", "algorithms"), KEY_CASES)
async def test_get_key_and_sign_every_key_type(
    access: KeyVaultAccess,
    emulator_env: EmulatorEnv,
    unique_name: str,
    kty: str,
    size: int | None,
    curve: str | None,
    algorithms: list[str],
) -> None:
    created = await new_key(access, emulator_env, unique_name, kty=kty, size=size, curve=curve)
    auth = wi_auth(emulator_env)
    key = await access.get_key(emulator_env.vault_url, unique_name, None, auth)
    assert key.kty == kty
    assert key.version == created.version
    assert key.kid == f"{emulator_env.vault_url}/keys/{unique_name}/{created.version}"
    assert key.enabled
    assert "sign" in key.key_ops
    if kty.startswith("RSA"):
        assert isinstance(key.public_key, rsa.RSAPublicKey)
        assert key.public_key.key_size == size
    else:
        assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
    signer = access.signer(key, auth)
    for alg in algorithms:
        digest = digest_for(alg)
        signature = await signer.sign_digest(SignatureAlgorithm(alg), digest)
        verify_locally(key.public_key, alg, digest, signature)


async def test_key_cached_and_one_token_for_many_calls(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    await new_key(access, env, unique_name)
    await access.set_secret(env.vault_url, unique_name, "pem", auth)
    emulator.admin.reset_counters()
    first = await access.get_key(env.vault_url, unique_name, None, auth)
    again = await access.get_key(env.vault_url, unique_name, None, auth)
    pinned = await access.get_key(env.vault_url, unique_name, first.version, auth)
    assert again == first == pinned
    for _ in range(5):
        await access.sign(first, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
        await access.get_secret(env.vault_url, unique_name, None, auth)
    counters = emulator.admin.counters()
    assert counters["get_key"] == 1
    assert counters["sign"] == 5
    assert counters["get_secret"] == 5
    assert counters.get("token", 0) == 0  # the token from create_key is still in use


async def test_fresh_access_gets_exactly_one_token(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    kv = KeyVaultAccess(options(env))
    try:
        key = await new_key(kv, env, unique_name, kty="EC", curve="P-256")
        for _ in range(10):
            await kv.sign(key, SignatureAlgorithm.ES256, digest_for("ES256"), wi_auth(env))
    finally:
        await kv.close()
    assert emulator.admin.counters()["token"] == 1


async def test_concurrent_cold_lookups_hit_the_vault_once(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    await new_key(access, env, unique_name)
    emulator.admin.set_faults({"latency_ms": 200})
    emulator.admin.reset_counters()
    results = await asyncio.gather(
        *(access.get_key(env.vault_url, unique_name, None, wi_auth(env)) for _ in range(20))
    )
    assert len({r.kid for r in results}) == 1
    assert emulator.admin.counters()["get_key"] == 1


async def test_latest_is_refreshed_so_rotation_is_noticed(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    kv = KeyVaultAccess(options(env, latest_ttl=0.3))
    try:
        auth = wi_auth(env)
        old = await new_key(kv, env, unique_name)
        assert (await kv.get_key(env.vault_url, unique_name, None, auth)).version == old.version
        rotated = await new_key(kv, env, unique_name)
        await asyncio.sleep(0.5)
        latest = await kv.get_key(env.vault_url, unique_name, None, auth)
        assert latest.version == rotated.version != old.version
        # The explicit old version stays cached; it needs no request.
        emulator.admin.reset_counters()
        pinned = await kv.get_key(env.vault_url, unique_name, old.version, auth)
        assert pinned.version == old.version
        assert emulator.admin.counters().get("get_key", 0) == 0
    finally:
        await kv.close()


async def test_key_versions_are_listed_newest_first(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    created = [await new_key(access, env, unique_name) for _ in range(3)]
    listed = await access.list_key_versions(env.vault_url, unique_name, wi_auth(env))
    assert [v.version for v in listed] == [k.version for k in reversed(created)]
    assert all(v.enabled for v in listed)
    limited = await access.list_key_versions(env.vault_url, unique_name, wi_auth(env), limit=2)
    assert [v.version for v in limited] == [created[2].version, created[1].version]


async def test_secret_versions_are_listed_newest_first(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    stored = [
        await access.set_secret(env.vault_url, unique_name, f"value {n}", auth) for n in range(3)
    ]
    listed = await access.list_secret_versions(env.vault_url, unique_name, auth)
    assert [v.version for v in listed] == [s.version for s in reversed(stored)]
    assert all(v.enabled for v in listed)
    limited = await access.list_secret_versions(env.vault_url, unique_name, auth, limit=1)
    assert [v.version for v in limited] == [stored[2].version]


async def test_rotate_key_is_the_new_latest_at_once(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    """The latest pointer is cached for a minute; a rotation through this layer must not
    leave it on the old version (the CLI reads "latest" right after rotating)."""
    env = emulator.env
    auth = wi_auth(env)
    old = await new_key(access, env, unique_name, kty="EC", curve="P-384", key_ops=["sign"])
    assert (await access.get_key(env.vault_url, unique_name, None, auth)).version == old.version
    rotated = await access.rotate_key(env.vault_url, unique_name, auth)
    assert rotated.version != old.version
    assert (rotated.kty, rotated.key_ops) == ("EC", ("sign",))
    assert isinstance(rotated.public_key, ec.EllipticCurvePublicKey)
    assert rotated.public_key.curve.name == "secp384r1"
    assert (await access.get_key(env.vault_url, unique_name, None, auth)).version == rotated.version
    signature = await access.sign(rotated, SignatureAlgorithm.ES384, digest_for("ES384"), auth)
    verify_locally(rotated.public_key, "ES384", digest_for("ES384"), signature)
    listed = await access.list_key_versions(env.vault_url, unique_name, auth)
    assert [v.version for v in listed] == [rotated.version, old.version]


async def test_create_key_on_an_existing_name_is_the_new_latest_at_once(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    await new_key(access, env, unique_name)
    await access.get_key(env.vault_url, unique_name, None, auth)
    again = await new_key(access, env, unique_name)
    assert (await access.get_key(env.vault_url, unique_name, None, auth)).version == again.version


async def test_rotate_key_errors_are_classified_and_not_retried_when_ambiguous(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    with pytest.raises(KeyVaultError) as missing:
        await access.rotate_key(env.vault_url, unique_name, auth)
    assert missing.value.kind is ErrorKind.NOT_FOUND
    await new_key(access, env, unique_name, kty="EC", curve="P-256")
    # Throttled: Key Vault did nothing, so the layer retries.
    emulator.admin.set_faults({"throttle": {"next": 1, "operations": ["rotate_key"]}})
    await access.rotate_key(env.vault_url, unique_name, auth)
    assert emulator.admin.responses()["rotate_key"] == {"404": 1, "429": 1, "200": 1}
    # A 503 might hide a rotation done: not retried, so no surprise extra version.
    emulator.admin.set_faults({"errors": {"next": 1, "operations": ["rotate_key"]}})
    with pytest.raises(KeyVaultError) as unavailable:
        await access.rotate_key(env.vault_url, unique_name, auth)
    assert unavailable.value.kind is ErrorKind.TRANSIENT
    assert emulator.admin.responses()["rotate_key"]["503"] == 1
    emulator.admin.clear_faults()
    emulator.admin.set_identity(env.workload_client_id, key_permissions=["get", "sign"])
    with pytest.raises(KeyVaultError) as forbidden:
        await access.rotate_key(env.vault_url, unique_name, auth)
    assert forbidden.value.kind is ErrorKind.FORBIDDEN
    assert "keys/rotate" in forbidden.value.message
    assert len(await _versions(access, env, unique_name)) == 2


async def _versions(access: KeyVaultAccess, env: EmulatorEnv, name: str) -> list[str]:
    emulator_auth = sp_auth(env)
    return [v.version for v in await access.list_key_versions(env.vault_url, name, emulator_auth)]


async def test_sign_429_without_retry_after_is_retried(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name)
    emulator.admin.set_faults({"throttle": {"next": 1, "operations": ["sign"]}})
    signature = await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    verify_locally(key.public_key, "RS256", digest_for("RS256"), signature)
    assert emulator.admin.responses()["sign"] == {"429": 1, "200": 1}


async def test_sign_429_with_short_retry_after_is_retried(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name)
    emulator.admin.set_faults({"throttle": {"next": 1, "retry_after": 0.2}})
    await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    assert emulator.admin.responses()["sign"] == {"429": 1, "200": 1}


async def test_long_retry_after_is_surfaced_not_slept(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name)
    emulator.admin.set_faults({"throttle": {"probability": 1.0, "retry_after": 30}})
    started = time.monotonic()
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    assert err.value.kind is ErrorKind.THROTTLED
    assert (err.value.status, err.value.code, err.value.retry_after) == (429, "Throttled", 30)
    assert emulator.admin.counters()["sign"] == 1
    assert time.monotonic() - started < 10


async def test_persistent_429_without_retry_after_gives_throttled(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name)
    emulator.admin.set_faults({"throttle": {"probability": 1.0}})
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    assert err.value.kind is ErrorKind.THROTTLED
    assert err.value.retry_after is None
    assert emulator.admin.counters()["sign"] == 1 + access.options.max_retries


async def test_5xx_once_is_retried_and_persistent_5xx_is_transient(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    key = await new_key(access, env, unique_name)
    emulator.admin.set_faults({"errors": {"next": 1, "status": 500}})
    await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
    emulator.admin.set_faults({"errors": {"probability": 1.0, "status": 503}})
    with pytest.raises(KeyVaultError) as err:
        await access.get_secret(env.vault_url, unique_name, None, auth)
    assert err.value.kind is ErrorKind.TRANSIENT
    assert (err.value.status, err.value.code) == (503, "ServiceUnavailable")
    assert err.value.retryable
    assert err.value.metric_label == "503"
    assert err.value.unreachable  # answered before the vault did anything


async def test_an_unreachable_vault_is_not_retried_when_the_caller_can_go_elsewhere(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    key = await new_key(access, env, unique_name)
    emulator.admin.reset_counters()
    # A CA pool member's sign: a 503 is raised at once, for the next member to sign.
    emulator.admin.set_faults({"errors": {"next": 1, "status": 503, "operations": ["sign"]}})
    with failover_elsewhere(), pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
    assert (err.value.status, err.value.unreachable) == (503, True)
    assert emulator.admin.responses()["sign"] == {"503": 1}
    # A single key's sign has nowhere else to go: the same 503 is retried and signs.
    emulator.admin.set_faults({"errors": {"next": 1, "status": 503, "operations": ["sign"]}})
    await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
    assert emulator.admin.responses()["sign"] == {"503": 2, "200": 1}
    # A 500 may have done something: retried in the layer even for a pool member.
    emulator.admin.set_faults({"errors": {"next": 1, "status": 500, "operations": ["sign"]}})
    with failover_elsewhere():
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
    assert emulator.admin.responses()["sign"] == {"503": 2, "500": 1, "200": 2}


async def test_stalled_connection_times_out_as_transient(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    kv = KeyVaultAccess(options(env, timeout=1.5))
    try:
        key = await new_key(kv, env, unique_name)
        emulator.admin.set_faults({"stall": {"next": 1}})
        started = time.monotonic()
        with pytest.raises(KeyVaultError) as err:
            await kv.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
        assert err.value.kind is ErrorKind.TRANSIENT
        assert err.value.code == "Timeout"
        assert err.value.retryable
        assert err.value.metric_label == "transient"  # no HTTP status to count by
        assert err.value.unreachable  # its outcome unknown: a pool signs elsewhere
        assert time.monotonic() - started < 10  # bounded: no retries multiplying the timeout
        # The stall is over; the same access keeps working.
        await kv.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    finally:
        await kv.close()


async def test_missing_sign_permission_is_permanent_forbidden(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name)
    emulator.admin.set_identity(env.workload_client_id, key_permissions=["get"])
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert not err.value.retryable
    assert (err.value.status, err.value.code, err.value.inner_code) == (
        403,
        "Forbidden",
        "ForbiddenByRbac",
    )
    assert "keys/sign" in err.value.message


async def test_disabled_key_is_reported_and_refused(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    auth = wi_auth(env)
    key = await new_key(access, env, unique_name)
    sync_credential = env.sp_credential()
    KeyClient(env.vault_url, sync_credential, connection_verify=env.ca_file).update_key_properties(
        unique_name, key.version, enabled=False
    )
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), auth)
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert (err.value.status, err.value.inner_code) == (403, "KeyDisabled")
    # A refused sign drops the cached key, so the next lookup shows the new state.
    refreshed = await access.get_key(env.vault_url, unique_name, key.version, auth)
    assert refreshed.enabled is False


async def test_key_without_sign_operation(
    access: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    key = await new_key(access, emulator_env, unique_name, key_ops=["verify"])
    assert key.key_ops == ("verify",)
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(emulator_env))
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert err.value.inner_code == "KeyOperationForbidden"


async def test_wrong_algorithm_is_refused_before_any_request(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    key = await new_key(access, env, unique_name, kty="EC", curve="P-256")
    emulator.admin.reset_counters()
    with pytest.raises(KeyVaultError) as err:
        await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    assert err.value.kind is ErrorKind.PERMANENT
    assert "needs an RSA key" in err.value.message
    with pytest.raises(KeyVaultError) as short:
        await access.sign(key, SignatureAlgorithm.ES256, b"short", wi_auth(env))
    assert "32-byte digest" in short.value.message
    assert emulator.admin.counters().get("sign", 0) == 0


async def test_not_found_is_its_own_kind_with_code(
    access: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    auth = wi_auth(emulator_env)
    with pytest.raises(KeyVaultError) as key_err:
        await access.get_key(emulator_env.vault_url, unique_name, None, auth)
    with pytest.raises(KeyVaultError) as secret_err:
        await access.get_secret(emulator_env.vault_url, unique_name, None, auth)
    assert (key_err.value.kind, key_err.value.status, key_err.value.code) == (
        ErrorKind.NOT_FOUND,
        404,
        "KeyNotFound",
    )
    assert (secret_err.value.kind, secret_err.value.status, secret_err.value.code) == (
        ErrorKind.NOT_FOUND,
        404,
        "SecretNotFound",
    )
    assert not key_err.value.retryable
    assert key_err.value.metric_label == "404"


def _secret_versions(env: EmulatorEnv, name: str) -> list[SecretProperties]:
    """The versions the vault holds, read with the SDK itself (production never lists them)."""
    credential = env.sp_credential()
    client = SecretClient(env.vault_url, credential, connection_verify=env.ca_file)
    return list(client.list_properties_of_secret_versions(name))


async def test_secrets_round_trip_and_versions(
    access: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    auth = sp_auth(emulator_env)
    vault = emulator_env.vault_url
    first = await access.set_secret(vault, unique_name, "one", auth, content_type="text/plain")
    second = await access.set_secret(
        vault, unique_name, "two", auth, content_type="application/x-pem-file"
    )
    latest = await access.get_secret(vault, unique_name, None, auth)
    assert (latest.value, latest.version, latest.content_type) == (
        "two",
        second.version,
        "application/x-pem-file",
    )
    old = await access.get_secret(vault, unique_name, first.version, auth)
    assert (old.value, old.content_type) == ("one", "text/plain")
    versions = _secret_versions(emulator_env, unique_name)
    assert {v.version for v in versions} == {first.version, second.version}
    assert "two" not in repr(latest)


async def test_wrong_client_secret_is_refused_not_transient_and_never_shown(
    access: KeyVaultAccess, emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # Entra ID error codes reference: AADSTS7000215 (invalid_client) needs a new secret;
    # retrying cannot help, so it is FORBIDDEN with the AADSTS line and no trace lines.
    auth = sp_auth(emulator_env, secret="wrong-secret-value")
    assert "wrong-secret-value" not in repr(auth)
    with pytest.raises(KeyVaultError) as err:
        await access.get_secret(emulator_env.vault_url, unique_name, None, auth)
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert err.value.cause is Cause.CREDENTIAL_REFUSED
    assert err.value.code == "invalid_client"
    assert "AADSTS7000215: Invalid client secret provided" in err.value.message
    assert "Trace ID" not in str(err.value)
    assert "Correlation ID" not in str(err.value)
    assert err.value.metric_label == "credential_refused"
    assert "wrong-secret-value" not in str(err.value)


async def test_token_endpoint_outage_is_transient(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    emulator.admin.set_faults({"errors": {"probability": 1.0, "operations": ["token"]}})
    with pytest.raises(KeyVaultError) as err:
        await access.get_key(env.vault_url, unique_name, None, wi_auth(env))
    # Entra's temporarily_unavailable (503) is an outage, not a refusal.
    assert err.value.kind is ErrorKind.TRANSIENT
    assert err.value.code == "temporarily_unavailable"
    assert err.value.cause is None


async def test_revoked_token_is_replaced_through_the_cae_claims_challenge(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    """Key Vault answers a revoked CAE token (the SDK always asks for CAE tokens)
    with a claims challenge; the SDK then gets a fresh token past its cache and
    the call succeeds: a revocation costs one token request, not a Forbidden."""
    env = emulator.env
    key = await new_key(access, env, unique_name)
    assert emulator.admin.revoke_tokens() >= 1
    emulator.admin.reset_counters()
    signature = await access.sign(key, SignatureAlgorithm.RS256, digest_for("RS256"), wi_auth(env))
    verify_locally(key.public_key, SignatureAlgorithm.RS256, digest_for("RS256"), signature)
    counters = emulator.admin.counters()
    assert counters.get("unauthorized") == 1  # the revoked token, answered with the challenge
    assert counters.get("token") == 1  # one fresh token
    assert counters.get("sign") == 1  # signed with the new token


async def test_a_deleted_identitys_token_is_forbidden_401(
    access: KeyVaultAccess, emulator: EmulatorProcess, unique_name: str
) -> None:
    """A token the vault refuses without a claims challenge (its identity is gone)
    is no revocation a fresh token would cure: FORBIDDEN, not retried."""
    env = emulator.env
    await new_key(access, env, unique_name)
    emulator.admin.delete_identity(env.workload_client_id)
    with pytest.raises(KeyVaultError) as err:
        await access.get_key(env.vault_url, unique_name, None, wi_auth(env))
    assert (err.value.kind, err.value.status) == (ErrorKind.FORBIDDEN, 401)
    assert not err.value.retryable


async def test_ambient_credential_from_environment(
    emulator_env: EmulatorEnv, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulator_env.azure_environ().items():
        monkeypatch.setenv(name, value)
    kv = KeyVaultAccess(KeyVaultOptions.from_env())
    try:
        assert kv.options.tls_ca_file == emulator_env.ca_file
        key = await kv.create_key(emulator_env.vault_url, unique_name, Ambient(), kty="EC")
        fetched = await kv.get_key(emulator_env.vault_url, unique_name, None, Ambient())
        assert fetched.kid == key.kid
    finally:
        await kv.close()


async def test_tls_is_verified_without_the_ca_file(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    kv = KeyVaultAccess(KeyVaultOptions(tls_ca_file=None, max_retries=0))
    try:
        with pytest.raises(KeyVaultError) as err:
            await kv.get_key(emulator_env.vault_url, unique_name, None, wi_auth(emulator_env))
        assert err.value.kind is ErrorKind.TRANSIENT
        assert "certificate" in err.value.message.lower()
    finally:
        await kv.close()


@pytest.mark.parametrize(
    ("vault_url", "fragment"),
    [
        ("http://127.0.0.1:1", "must be an https URL"),
        ("https://vault.example/keys", "must not have a path"),
    ],
)
async def test_bad_vault_url_is_permanent(
    access: KeyVaultAccess, emulator_env: EmulatorEnv, vault_url: str, fragment: str
) -> None:
    with pytest.raises(KeyVaultError) as err:
        await access.get_key(vault_url, "k", None, wi_auth(emulator_env))
    assert err.value.kind is ErrorKind.PERMANENT
    assert fragment in err.value.message


async def test_missing_ca_file_is_a_clear_configuration_error(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        KeyVaultAccess(KeyVaultOptions(tls_ca_file=str(tmp_path / "missing.pem")))


def test_without_a_ca_file_the_system_trust_store_verifies_the_vault(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    """No --tls-ca-file: the token and the vault calls both trust the system store
    (here OpenSSL's SSL_CERT_FILE naming the emulator's CA, read when the process
    starts, as a CA added to the image's store would be)."""
    code = f"""
import asyncio
from akv_issuer.keyvault import KeyVaultAccess, KeyVaultOptions, WorkloadIdentity
async def main():
    kv = KeyVaultAccess(KeyVaultOptions(tls_ca_file=None, max_retries=0))
    auth = WorkloadIdentity(client_id={emulator_env.workload_client_id!r},
        tenant_id={emulator_env.tenant_id!r}, token_file={emulator_env.federated_token_file!r},
        authority_host={emulator_env.authority_host!r})
    try:
        key = await kv.create_key({emulator_env.vault_url!r}, {unique_name!r}, auth, kty="EC")
        again = await kv.get_key({emulator_env.vault_url!r}, {unique_name!r}, None, auth)
        print(again.kid == key.kid)
    finally:
        await kv.close()
asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AKV_"))}
    env["SSL_CERT_FILE"] = emulator_env.ca_file
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
