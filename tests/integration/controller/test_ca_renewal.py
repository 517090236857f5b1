"""The CA certificate renewed before it expires (spec.caRenewal), or reported."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_issuer.controller.api import parse_issuer_spec
from akv_issuer.controller.ca_lifecycle.renewal import renew_if_due
from akv_issuer.controller.core import KeyVaultGateway
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.pki import load_ca_chain
from akv_issuer.runtime.leader import NotLeading
from support.controller_harness import Env, condition, csr_pem, wait_for


async def _condition_is(env: Env, name: str, type_: str, status: str) -> dict:
    found: dict = {}

    async def check() -> bool:
        obj = await env.get_issuer(name)
        found.clear()
        found.update(obj)
        cond = condition(obj, type_)
        return cond is not None and cond["status"] == status

    await wait_for(check, what=f"issuer {name} {type_}={status}", env=env)
    return found


def _issuer_ca(issuer: dict) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(issuer["status"]["caCertificate"]))


async def test_a_root_in_its_renewal_window_is_renewed_with_the_same_key(env: Env) -> None:
    old = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(hours=1))
    # Due at once (renewBefore = the whole lifetime); the renewed certificate
    # lives 3h, so it is not due again.
    spec = env.issuer_spec(
        old, caRenewal={"automatic": True, "renewBefore": "1h", "lifetime": "3h"}
    )
    await env.create_issuer("renewing", spec)
    controller = env.start_controller()
    issuer = await env.wait_issuer("renewing", "True")
    await env.wait_event("renewing", "CARenewed", type_="Normal")

    renewed = _issuer_ca(issuer)
    assert renewed.subject == old.cert.subject
    assert renewed.public_key() == old.cert.public_key()
    assert renewed.serial_number != old.cert.serial_number
    lifetime = renewed.not_valid_after_utc - renewed.not_valid_before_utc
    assert lifetime == dt.timedelta(hours=3)
    secret = await env.kv.get_secret(env.emulator.env.vault_url, old.name, None, env.kv_auth)
    assert x509.load_pem_x509_certificate(secret.value.encode()) == renewed
    labels = {"issuer_name": "renewing", "result": "Renewed"}
    assert controller.metric("akv_issuer_ca_renewals_total", **labels) == 1
    assert condition(issuer, "CARenewalDue") is None  # renewed, so never due

    # A leaf verifies against the renewed root and, same key and subject,
    # against the old one that relying parties may still hold.
    await env.create_request("leaf", csr_pem(), "renewing")
    await env.approve("leaf")
    done = await env.wait_request("leaf", "Issued")
    env.openssl_verify_against(done, renewed.public_bytes(serialization.Encoding.PEM))
    env.openssl_verify_against(done, old.pem)


async def test_a_failed_renewal_is_reported_and_issuance_goes_on(env: Env) -> None:
    old = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(hours=1))
    # The controller's identity may read the CA secret but not write it.
    env.emulator.admin.set_identity(
        env.emulator.env.workload_client_id,
        key_permissions=["get", "list", "sign"],
        secret_permissions=["get"],
    )
    spec = env.issuer_spec(
        old, caRenewal={"automatic": True, "renewBefore": "1h", "lifetime": "3h"}
    )
    await env.create_issuer("stuck", spec)
    controller = env.start_controller("--issuer-recheck-interval", "2s")
    issuer = await _condition_is(env, "stuck", "CARenewalDue", "True")
    due = condition(issuer, "CARenewalDue")
    assert due is not None
    assert due["reason"] == "RenewalFailed"
    assert "(Forbidden)" in due["message"]
    assert "\n" not in due["message"]
    assert condition(issuer, "Ready")["status"] == "True"
    await env.wait_event("stuck", "CARenewalFailed", type_="Warning")
    assert controller.metric("akv_issuer_ca_renewal_due", issuer_name="stuck") == 1

    await env.create_request("still", csr_pem(), "stuck")
    await env.approve("still")
    env.openssl_verify(await env.wait_request("still", "Issued"), old)

    # Once the identity may set the secret, the next check renews, and the
    # issuer says that it signs with another CA certificate now.
    env.emulator.admin.set_identity(
        env.emulator.env.workload_client_id,
        key_permissions=["get", "list", "sign"],
        secret_permissions=["get", "set"],
    )
    issuer = await _condition_is(env, "stuck", "CARenewalDue", "False")
    assert condition(issuer, "CARenewalDue")["reason"] == "Renewed"
    await env.wait_event("stuck", "CARenewed", type_="Normal")
    await env.wait_event("stuck", "CACertificateChanged", type_="Normal")
    assert _issuer_ca(issuer) != old.cert
    assert controller.metric("akv_issuer_ca_renewal_due", issuer_name="stuck") == 0


async def test_without_automatic_renewal_a_due_root_is_reported(env: Env) -> None:
    old = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(hours=1))
    await env.create_issuer("manual", env.issuer_spec(old, caRenewal={"renewBefore": "1h"}))
    controller = env.start_controller()
    issuer = await _condition_is(env, "manual", "CARenewalDue", "True")
    due = condition(issuer, "CARenewalDue")
    assert due is not None
    assert due["reason"] == "AutomaticRenewalOff"
    assert "akv-issuer ca create" in due["message"]
    assert _issuer_ca(issuer) == old.cert  # nothing was renewed
    await env.wait_event("manual", "CARenewalDue", type_="Warning")
    assert controller.metric("akv_issuer_ca_renewal_due", issuer_name="manual") == 1


async def test_a_replica_whose_lease_may_have_passed_does_not_renew(env: Env) -> None:
    """The renewal's sign is fenced like a request's: a replica that may no
    longer lead stops before Key Vault signs, and stores nothing."""
    old = await env.make_ca("EC", curve="P-256", lifetime=dt.timedelta(hours=1))
    spec = parse_issuer_spec(
        env.issuer_spec(old, caRenewal={"automatic": True, "renewBefore": "1h", "lifetime": "3h"})
    )
    vault = env.emulator.env.vault_url
    key = await env.kv.get_key(vault, old.name, old.key_version, env.kv_auth)
    now = dt.datetime.now(dt.UTC)
    chain = load_ca_chain(old.pem.decode(), key.public_key, now)

    def fence() -> None:
        raise NotLeading("not the leader any more (test)")

    fenced = KeyVaultGateway(env.kv, Metrics(), concurrency=1, fence=fence)
    signs = len(env.emulator.admin.sign_log())
    with pytest.raises(NotLeading):
        await renew_if_due(fenced, spec, env.kv_auth, key, old.algorithm, chain, now)
    assert len(env.emulator.admin.sign_log()) == signs
    secret = await env.kv.get_secret(vault, old.name, None, env.kv_auth)
    assert x509.load_pem_x509_certificate(secret.value.encode()) == old.cert

    # The same call on the leader renews: the fence was what stopped it.
    leading = KeyVaultGateway(env.kv, Metrics(), concurrency=1, fence=lambda: None)
    renewed, renewal = await renew_if_due(
        leading, spec, env.kv_auth, key, old.algorithm, chain, now
    )
    assert renewal is not None
    assert renewal.reason == "Renewed", renewal.message
    assert renewed.ca.public_key() == old.cert.public_key()
