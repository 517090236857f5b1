"""The issuer's Ready reason for each of Azure's refusals, as a user reads it in the
condition: Entra ID refusing the credential (Entra "error codes" reference), Entra
being busy, a disabled key or CA secret, the vault's firewall (Key Vault "common
error codes": ForbiddenByFirewall), an api-version the vault does not serve
(keys.json: api-version required), and a key name given in another case ("About
keys, secrets and certificates": names are case-insensitive)."""

from __future__ import annotations

import asyncio
import base64

from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from support.controller_harness import Env, condition, csr_pem


async def test_a_wrong_client_secret_is_forbidden_with_the_aadsts_line_and_rechecked_slowly(
    env: Env,
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    emulator = env.emulator
    await env.kube.create(
        Secret(
            metadata=ObjectMeta(name="wrong-sp", namespace=env.namespace),
            data={"secret": base64.b64encode(b"not-the-secret").decode()},
        )
    )
    spec = env.issuer_spec(
        ca,
        auth={
            "clientSecret": {
                "tenantID": emulator.env.tenant_id,
                "clientID": emulator.env.sp_client_id,
                "secretRef": {"name": "wrong-sp", "key": "secret"},
            }
        },
    )
    await env.create_issuer("wrong-secret", spec)
    tokens_before = emulator.admin.counters().get("token", 0)
    controller = env.start_controller()
    obj = await env.wait_issuer("wrong-secret", "False", "Forbidden")
    message = condition(obj, "Ready")["message"]
    assert "AADSTS7000215: Invalid client secret provided" in message
    # The first line of Entra's description only: no trace lines.
    assert "Trace ID" not in message
    assert "Correlation ID" not in message
    assert "not-the-secret" not in message
    # One check, one token request; the next check is minutes away, not seconds.
    await asyncio.sleep(6)
    assert emulator.admin.counters().get("token", 0) - tokens_before == 1
    assert (
        controller.metric(
            "akv_issuer_issuer_not_ready_reason", issuer_name="wrong-secret", reason="Forbidden"
        )
        == 1
    )


async def test_a_busy_entra_is_an_outage_not_a_refusal(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    env.emulator.admin.set_faults({"errors": {"probability": 1.0, "operations": ["token"]}})
    await env.create_issuer("busy", env.issuer_spec(ca))
    env.start_controller()
    obj = await env.wait_issuer("busy", "False", "KeyVaultUnreachable")
    assert "temporarily_unavailable" in condition(obj, "Ready")["message"]
    env.emulator.admin.clear_faults()
    await env.wait_issuer("busy", "True", "Checked")


async def test_a_key_name_in_another_case_is_the_same_key(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    spec = {**env.issuer_spec(ca), "keyName": ca.name.upper()}
    await env.create_issuer("upper", spec)
    env.start_controller()
    obj = await env.wait_issuer("upper", "True", "Checked")
    # The key ID keeps the case the key was created with.
    assert f"/keys/{ca.name}/" in obj["status"]["keyID"]
    await env.create_request("cr", csr_pem(), "upper")
    await env.approve("cr")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)


async def test_a_key_disabled_while_signing_is_key_disabled(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("disabled-key", env.issuer_spec(ca))
    env.start_controller()
    await env.wait_issuer("disabled-key", "True")
    keys = env.kv.clients(env.emulator.env.vault_url, env.kv_auth).keys
    await keys.update_key_properties(ca.name, enabled=False)
    await env.create_request("cr", csr_pem(), "disabled-key")
    await env.approve("cr")
    await env.wait_request("cr", "Pending", message="IssuerNotReady")
    obj = await env.wait_issuer("disabled-key", "False", "KeyDisabled")
    assert "disabled" in condition(obj, "Ready")["message"]


async def test_a_disabled_ca_secret_is_ca_secret_disabled(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-384")
    secrets = env.kv.clients(env.emulator.env.vault_url, env.kv_auth).secrets
    await secrets.update_secret_properties(ca.name, enabled=False)
    await env.create_issuer("disabled-secret", env.issuer_spec(ca))
    env.start_controller()
    obj = await env.wait_issuer("disabled-secret", "False", "CASecretDisabled")
    assert f"CA secret {ca.name!r} is disabled" in condition(obj, "Ready")["message"]


async def test_the_vault_firewall_is_key_vault_network_denied(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    env.emulator.admin.set_vault(firewall=True)
    await env.create_issuer("firewalled", env.issuer_spec(ca))
    env.start_controller()
    obj = await env.wait_issuer("firewalled", "False", "KeyVaultNetworkDenied")
    assert "network rules" in condition(obj, "Ready")["message"]


async def test_an_api_version_the_vault_does_not_serve_is_named(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    env.emulator.admin.set_vault(api_versions=["7.0", "7.1"])
    await env.create_issuer("old-vault", env.issuer_spec(ca))
    env.start_controller()
    obj = await env.wait_issuer("old-vault", "False", "KeyVaultAPIVersionUnsupported")
    message = condition(obj, "Ready")["message"]
    assert "The specified version (2025-07-01) is not recognized" in message
    assert "AKV_KEYVAULT_API_VERSION" in message
