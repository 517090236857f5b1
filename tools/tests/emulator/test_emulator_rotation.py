"""Key Vault's key rotation API in the emulator, driven by the real Azure SDK (aio
KeyClient, as the issuer uses it): rotate_key and the rotation policy, their
permissions, faults and counters, and the admin trigger standing in for a policy
that fires."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential
from azure.keyvault.keys import (
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_emulator.testing import EmulatorProcess
from support.emulator import digest_for, verify_locally


def public_key_of(key: Any) -> Any:
    jwk = key.key
    if jwk.kty in (KeyType.rsa, KeyType.rsa_hsm):
        return rsa.RSAPublicNumbers(
            int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
        ).public_key()
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[jwk.crv]
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
    ).public_key()


@pytest.fixture
async def keys(emulator: EmulatorProcess) -> AsyncIterator[KeyClient]:
    env = emulator.env
    credential = ClientSecretCredential(
        env.tenant_id,
        env.sp_client_id,
        env.sp_client_secret,
        authority=env.authority_host,
        connection_verify=env.ca_file,
    )
    async with (
        credential,
        KeyClient(
            env.vault_url, credential, connection_verify=env.ca_file, retry_total=0
        ) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("kty", "size", "curve", "alg"),
    [
        ("RSA", 3072, None, "PS384"),
        ("RSA-HSM", 2048, None, "RS256"),
        ("EC", None, "P-384", "ES384"),
    ],
)
async def test_rotate_key_makes_a_new_version_of_the_same_shape(
    keys: KeyClient,
    emulator: EmulatorProcess,
    unique_name: str,
    kty: str,
    size: int | None,
    curve: str | None,
    alg: str,
) -> None:
    first = await keys.create_key(
        unique_name, kty, size=size, curve=curve, key_operations=["sign", "verify"], tags={"a": "b"}
    )
    rotated = await keys.rotate_key(unique_name)
    assert rotated.name == unique_name
    assert rotated.properties.version != first.properties.version
    assert rotated.key_type == first.key_type
    assert rotated.key_operations == ["sign", "verify"]
    assert rotated.properties.tags == {"a": "b"}
    assert rotated.properties.enabled
    old_key, new_key = public_key_of(first), public_key_of(rotated)
    assert type(old_key) is type(new_key)
    if isinstance(new_key, rsa.RSAPublicKey):
        assert new_key.key_size == size
        assert new_key.public_numbers().n != old_key.public_numbers().n
    else:
        assert isinstance(new_key, ec.EllipticCurvePublicKey)
        assert new_key.curve.name == old_key.curve.name
    latest = await keys.get_key(unique_name)
    assert latest.properties.version == rotated.properties.version
    versions = [p.version async for p in keys.list_properties_of_key_versions(unique_name)]
    assert sorted(versions) == sorted([first.properties.version, rotated.properties.version])
    crypto = keys.get_cryptography_client(unique_name, key_version=rotated.properties.version)
    async with crypto as c:
        digest = digest_for(alg)
        result = await c.sign(SignatureAlgorithm(alg), digest)
    assert result.key_id == rotated.id
    verify_locally(new_key, alg, digest, result.signature)
    assert emulator.admin.counters()["rotate_key"] == 1


async def test_rotation_policy_default_update_and_expiry_of_rotated_versions(
    keys: KeyClient, emulator: EmulatorProcess, unique_name: str
) -> None:
    await keys.create_ec_key(unique_name)
    default = await keys.get_key_rotation_policy(unique_name)
    # Never set: Key Vault answers its default, a notification 30 days before expiry.
    assert default.id == f"{emulator.env.vault_url}/keys/{unique_name}/rotationpolicy"
    assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P30D")
    ]
    assert default.created_on is None

    policy = KeyRotationPolicy()
    policy.expires_in = "P90D"
    policy.lifetime_actions = [
        KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P60D"),
        KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P10D"),
    ]
    updated = await keys.update_key_rotation_policy(unique_name, policy)
    assert updated.expires_in == "P90D"
    assert [
        (a.action, a.time_after_create, a.time_before_expiry) for a in updated.lifetime_actions
    ] == [
        (KeyRotationPolicyAction.rotate, "P60D", None),
        (KeyRotationPolicyAction.notify, None, "P10D"),
    ]
    assert updated.created_on is not None
    fetched = await keys.get_key_rotation_policy(unique_name)
    assert fetched.expires_in == "P90D"
    assert len(fetched.lifetime_actions) == 2

    # The policy's expiryTime applies to versions made by rotation.
    rotated = await keys.rotate_key(unique_name)
    expires = rotated.properties.expires_on
    assert expires is not None
    assert abs(expires.timestamp() - (time.time() + 90 * 86400)) < 60

    # An empty action list restores the default actions.
    reset = await keys.update_key_rotation_policy(
        unique_name, KeyRotationPolicy(), lifetime_actions=[]
    )
    assert [a.action for a in reset.lifetime_actions] == [KeyRotationPolicyAction.notify]
    counters = emulator.admin.counters()
    assert counters["get_key_rotation_policy"] == 2
    assert counters["update_key_rotation_policy"] == 2


@pytest.mark.parametrize(
    ("expires_in", "actions", "fragment"),
    [
        ("P7D", [], "28 days"),
        ("P1Q", [], "ISO 8601"),
        (None, [("Rotate", "P1D", None)], "7 days"),
        (None, [("Notify", "P30D", None)], "timeBeforeExpiry"),
        (None, [("Rotate", None, "P30D")], "expiryTime"),
        ("P90D", [("Rotate", "P30D", None), ("Rotate", "P40D", None)], "only one Rotate"),
    ],
)
async def test_bad_rotation_policies_are_bad_parameter(
    keys: KeyClient,
    unique_name: str,
    expires_in: str | None,
    actions: list[tuple[str, str | None, str | None]],
    fragment: str,
) -> None:
    await keys.create_ec_key(unique_name)
    policy = KeyRotationPolicy()
    policy.expires_in = expires_in
    policy.lifetime_actions = [
        KeyRotationLifetimeAction(a, time_after_create=after, time_before_expiry=before)
        for a, after, before in actions
    ]
    with pytest.raises(HttpResponseError) as err:
        await keys.update_key_rotation_policy(unique_name, policy)
    assert err.value.status_code == 400
    body = json.loads(err.value.response.text())["error"]
    assert body["code"] == "BadParameter"
    assert fragment in body["message"]


async def test_rotation_needs_its_permissions_and_an_existing_key(
    keys: KeyClient, emulator: EmulatorProcess, unique_name: str
) -> None:
    with pytest.raises(ResourceNotFoundError):
        await keys.rotate_key(unique_name)
    with pytest.raises(ResourceNotFoundError):
        await keys.get_key_rotation_policy(unique_name)
    await keys.create_ec_key(unique_name)
    emulator.admin.set_identity(emulator.env.sp_client_id, key_permissions=["get", "create"])
    for call in (
        keys.rotate_key(unique_name),
        keys.get_key_rotation_policy(unique_name),
        keys.update_key_rotation_policy(unique_name, KeyRotationPolicy()),
    ):
        with pytest.raises(HttpResponseError) as err:
            await call
        assert err.value.status_code == 403
    message = json.loads(err.value.response.text())["error"]["message"]
    # The refused data action, as Azure RBAC names it (the access-policy permission
    # is "setrotationpolicy"; the emulator named that before it knew data actions).
    assert "Action: 'Microsoft.KeyVault/vaults/keyrotationpolicies/write'" in message
    assert emulator.admin.responses()["rotate_key"] == {"404": 1, "403": 1}


async def test_faults_cover_the_rotation_operations(
    keys: KeyClient, emulator: EmulatorProcess, unique_name: str
) -> None:
    await keys.create_ec_key(unique_name)
    emulator.admin.set_faults({"throttle": {"next": 1, "operations": ["rotate_key"]}})
    with pytest.raises(HttpResponseError) as err:
        await keys.rotate_key(unique_name)
    assert err.value.status_code == 429
    # A rule without operations hits the vault data plane, rotation included.
    emulator.admin.set_faults({"errors": {"next": 2, "status": 503}})
    for call in (keys.get_key_rotation_policy(unique_name), keys.rotate_key(unique_name)):
        with pytest.raises(HttpResponseError) as err5:
            await call
        assert err5.value.status_code == 503
    versions = [p async for p in keys.list_properties_of_key_versions(unique_name)]
    assert len(versions) == 1, "a refused rotation must not create a version"


async def test_admin_rotation_stands_in_for_a_policy_that_fires(
    keys: KeyClient, emulator: EmulatorProcess, unique_name: str
) -> None:
    first = await keys.create_rsa_key(unique_name, size=2048)
    version = emulator.admin.rotate_key(unique_name)
    latest = await keys.get_key(unique_name)
    assert latest.properties.version == version != first.properties.version
    assert "rotate_key" not in emulator.admin.counters()
