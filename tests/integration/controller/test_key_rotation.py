"""A new key version never stops issuance (keyVersion unset)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from support.controller_harness import CA, Env, condition, csr_pem, wait_for


async def _key_version_pending(env: Env, name: str, status: str) -> dict:
    found: dict = {}

    async def check() -> bool:
        obj = await env.get_issuer(name)
        found.clear()
        found.update(obj)
        pending = condition(obj, "KeyVersionPending")
        return pending is not None and pending["status"] == status

    await wait_for(check, what=f"issuer {name} KeyVersionPending={status}", env=env)
    return found


def _pem(ca: CA) -> bytes:
    return ca.cert.public_bytes(serialization.Encoding.PEM)


async def test_new_key_version_without_ca_keeps_signing_with_the_ca_key_then_switches(
    env: Env,
) -> None:
    old = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("rotating", env.issuer_spec(old))
    controller = env.start_controller("--issuer-recheck-interval", "2s")
    await env.wait_issuer("rotating", "True")
    await env.create_request("before", csr_pem(), "rotating")
    await env.approve("before")
    env.openssl_verify(await env.wait_request("before", "Issued"), old)
    labels = {"issuer_name": "rotating", "issuer_namespace": env.namespace}
    assert controller.metric("akv_issuer_key_version_pending", **labels) == 0

    # A new key version, as Key Vault's rotation policy makes it: no CA for it yet.
    new = await env.rotate_ca(old.name, "EC", curve="P-256", store=False)
    issuer = await _key_version_pending(env, "rotating", "True")
    ready = condition(issuer, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    pending = condition(issuer, "KeyVersionPending")
    assert pending is not None
    assert pending["reason"] == "NoCAForNewKeyVersion"
    assert new.key_version in pending["message"]
    assert old.key_version in pending["message"]
    assert f"CA secret {old.name!r}" in pending["message"]
    assert issuer["status"]["keyVersion"] == old.key_version
    await env.wait_event("rotating", "NewKeyVersionWithoutCA", type_="Warning")
    assert controller.metric("akv_issuer_key_version_pending", **labels) == 1

    await env.create_request("during", csr_pem(), "rotating")
    await env.approve("during")
    env.openssl_verify(await env.wait_request("during", "Issued"), old)

    # The new CA certificate is stored: the issuer switches at its next check.
    await env.put_secret(old.name, _pem(new).decode())
    issuer = await _key_version_pending(env, "rotating", "False")
    assert issuer["status"]["keyVersion"] == new.key_version
    assert condition(issuer, "KeyVersionPending")["reason"] == "CAMatchesLatestKeyVersion"
    await env.wait_event("rotating", "KeyVersionChanged", type_="Normal")
    assert controller.metric("akv_issuer_key_version_pending", **labels) == 0

    await env.create_request("after", csr_pem(), "rotating")
    await env.approve("after")
    env.openssl_verify(await env.wait_request("after", "Issued"), new)
    assert "Traceback" not in controller.log()


async def test_pinned_key_version_still_reports_a_mismatch(env: Env) -> None:
    old = await env.make_ca("EC", curve="P-256")
    new = await env.rotate_ca(old.name, "EC", curve="P-256", store=False)
    # Pinned to the new version, whose CA certificate is missing: as documented.
    await env.create_issuer("pinned", env.issuer_spec(old, keyVersion=new.key_version))
    env.start_controller()
    await env.wait_issuer("pinned", "False", "CAKeyMismatch")


async def test_no_version_matching_the_ca_is_a_mismatch(env: Env) -> None:
    old = await env.make_ca("EC", curve="P-256")
    # A CA certificate for a key that is not in the vault at all.
    stranger = await env.make_ca("EC", curve="P-256")
    await env.put_secret(old.name, _pem(stranger).decode())
    await env.create_issuer("lost", env.issuer_spec(old))
    env.start_controller()
    await env.wait_issuer("lost", "False", "CAKeyMismatch")
