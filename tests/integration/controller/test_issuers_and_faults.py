"""Issuer checks, namespace isolation and Key Vault faults, end to end."""

from __future__ import annotations

import base64
import uuid

from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from akv_issuer.controller.api import CertificateRequest, Issuer
from support.controller_harness import Env, condition, csr_pem, wait_for


async def test_issuer_serves_only_its_own_namespace(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("team-ca", env.issuer_spec(ca))
    other = f"other-{uuid.uuid4().hex[:6]}"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=other)))
    try:
        env.start_controller()
        await env.wait_issuer("team-ca", "True")
        signs_before = env.sign_calls()
        # Same issuer name, but from another namespace: there is no such Issuer there.
        await env.create_request("intruder", csr_pem(), "team-ca", namespace=other)
        await env.approve("intruder", namespace=other)
        pending = await env.wait_request(
            "intruder", "Pending", namespace=other, message="IssuerNotFound"
        )
        assert "certificate" not in pending["status"]
        await env.wait_event("intruder", "WaitingForIssuerExist", namespace=other)

        # A request in the issuer's own namespace is served meanwhile.
        await env.create_request("member", csr_pem(), "team-ca")
        await env.approve("member")
        env.openssl_verify(await env.wait_request("member", "Issued"), ca)
        assert env.sign_calls() - signs_before == 1
        still = await env.get_request("intruder", namespace=other)
        assert condition(still, "Ready")["reason"] == "Pending"
    finally:
        await env.kube.deletecollection(CertificateRequest, namespace=other)
        await env.kube.deletecollection(Issuer, namespace=other)
        await env.kube.delete(Namespace, other)


async def test_cluster_issuer_reads_its_secret_only_from_the_cluster_resource_namespace(
    env: Env,
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    name = f"sp-{ca.name}"
    secret_name = "akv-client-secret"
    spec = env.issuer_spec(
        ca,
        auth={
            "clientSecret": {
                "tenantID": env.emulator.env.tenant_id,
                "clientID": env.emulator.env.sp_client_id,
                "secretRef": {"name": secret_name, "key": "secret"},
            }
        },
    )
    decoy_ns = f"decoy-{uuid.uuid4().hex[:6]}"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=decoy_ns)))
    secret_data = {"secret": base64.b64encode(env.emulator.env.sp_client_secret.encode()).decode()}
    # The right secret, but in a namespace that is not the cluster resource namespace.
    await env.kube.create(
        Secret(metadata=ObjectMeta(name=secret_name, namespace=decoy_ns), data=secret_data)
    )
    await env.create_issuer(name, spec, cluster=True)
    env.start_controller()
    not_ready = await env.wait_issuer(name, "False", "AuthSecretNotFound", cluster=True)
    assert env.cluster_namespace in condition(not_ready, "Ready")["message"]

    await env.kube.create(
        Secret(
            metadata=ObjectMeta(name=secret_name, namespace=env.cluster_namespace), data=secret_data
        )
    )
    await env.wait_issuer(name, "True", "Checked", cluster=True)
    await env.create_request("cr", csr_pem("ec"), name, kind="ClusterIssuer")
    await env.approve("cr")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)
    await env.kube.delete(Namespace, decoy_ns)


async def test_ca_that_does_not_match_the_key_keeps_issuer_not_ready_and_requests_pending(
    env: Env,
) -> None:
    ca = await env.make_ca("RSA", size=2048)
    other = await env.make_ca("RSA", size=2048)
    # The key's CA secret now holds another key's certificate.
    await env.put_secret(ca.name, other.pem.decode())
    await env.create_issuer("mismatch", env.issuer_spec(ca))
    signs_before = env.sign_calls()
    env.start_controller()
    issuer = await env.wait_issuer("mismatch", "False", "CAKeyMismatch")
    assert "caCertificate" not in issuer["status"]
    await env.wait_event("mismatch", "CAKeyMismatch", type_="Warning")

    await env.create_request("cr", csr_pem(), "mismatch")
    await env.approve("cr")
    pending = await env.wait_request("cr", "Pending", message="IssuerNotReady")
    assert "certificate" not in pending["status"]
    assert env.sign_calls() == signs_before

    # Fix the secret: the issuer's backed-off re-check picks it up, with no spec change.
    await env.put_secret(ca.name, ca.pem.decode())
    await env.wait_issuer("mismatch", "True", "Checked")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)


async def test_spec_change_is_rechecked_and_reported_with_observed_generation(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("changing", env.issuer_spec(ca))
    env.start_controller()
    await env.wait_issuer("changing", "True")
    await env.kube.patch(
        Issuer,
        "changing",
        {"spec": {"keyName": "no-such-key"}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )
    issuer = await env.wait_issuer("changing", "False", "KeyNotFound")
    assert condition(issuer, "Ready")["observedGeneration"] == issuer["metadata"]["generation"] == 2


async def test_throttling_and_server_errors_end_issued_not_failed(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("flaky", env.issuer_spec(ca))
    controller = env.start_controller()
    await env.wait_issuer("flaky", "True")
    # Without Retry-After (Key Vault does not promise one), then 5xx.
    env.emulator.admin.set_faults(
        {
            "throttle": {"next": 6, "operations": ["sign"]},
            "errors": {"next": 4, "operations": ["sign"], "status": 503},
        }
    )
    names = [f"cr-{i}" for i in range(3)]
    for name in names:
        await env.create_request(name, csr_pem("ec"), "flaky")
        await env.approve(name)
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)
    responses = env.emulator.admin.responses().get("sign", {})
    assert responses.get("429", 0) >= 1
    assert controller.metric("akv_issuer_certificaterequests_failed_total") == 0
    assert controller.metric("akv_issuer_keyvault_requests_total", operation="sign") >= 3


async def test_revoked_tokens_cost_a_new_token_not_a_forbidden_issuer(env: Env) -> None:
    """Key Vault revokes the controller's tokens (CAE: a claims challenge): the
    next request is issued with a fresh token and the issuer never leaves Ready."""
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("revoked", env.issuer_spec(ca))
    env.start_controller()
    await env.wait_issuer("revoked", "True")
    await env.create_request("before", csr_pem("ec"), "revoked")
    await env.approve("before")
    env.openssl_verify(await env.wait_request("before", "Issued"), ca)

    assert env.emulator.admin.revoke_tokens() >= 1
    env.emulator.admin.reset_counters()
    await env.create_request("after", csr_pem("ec"), "revoked")
    await env.approve("after")
    env.openssl_verify(await env.wait_request("after", "Issued"), ca)
    counters = env.emulator.admin.counters()
    assert counters.get("unauthorized") == 1
    assert counters.get("token") == 1
    ready = condition(await env.get_issuer("revoked"), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Checked")


async def test_concurrency_bounds_the_key_vault_signs_in_flight(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("slow-vault", env.issuer_spec(ca))
    controller = env.start_controller("--concurrency", "2")
    await env.wait_issuer("slow-vault", "True")
    # A slow vault: ten approved requests at once, ten workers, two sign slots.
    env.emulator.admin.update_faults({"latency_ms": 500, "latency_operations": ["sign"]})
    env.emulator.admin.reset_counters()
    names = [f"cr-{i}" for i in range(10)]
    for name in names:
        await env.create_request(name, csr_pem("ec"), "slow-vault")
    for name in names:
        await env.approve(name)
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)
    assert env.emulator.admin.counters()["sign"] == len(names)
    assert env.emulator.admin.peak_in_flight()["sign"] == 2
    assert controller.metric("akv_issuer_keyvault_signs_in_flight") == 0


async def test_exhausted_retry_budget_ends_failed_without_invalid_request(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("down", env.issuer_spec(ca))
    env.start_controller("--retry-budget", "6s")
    await env.wait_issuer("down", "True")
    env.emulator.admin.set_faults({"errors": {"probability": 1.0, "operations": ["sign"]}})
    await env.create_request("cr", csr_pem(), "down")
    await env.approve("cr")
    retrying = await env.wait_request("cr", "Pending", message="RetryableError")
    assert "certificate" not in retrying["status"]
    failed = await env.wait_request("cr", "Failed")
    assert failed["status"]["failureTime"]
    assert condition(failed, "InvalidRequest") is None
    assert "retry budget" in condition(failed, "Ready")["message"]
    await env.wait_event("cr", "RetryableError", type_="Warning")
    await env.wait_event("cr", "PermanentError", type_="Warning")


async def test_key_disabled_while_signing_flips_the_issuer_and_requests_wait(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("revoked", env.issuer_spec(ca))
    env.start_controller()
    await env.wait_issuer("revoked", "True")
    # The identity loses the sign permission: Key Vault answers 403.
    env.emulator.admin.set_identity(
        env.emulator.env.workload_client_id, key_permissions=["get"], secret_permissions=["get"]
    )
    await env.create_request("cr", csr_pem(), "revoked")
    await env.approve("cr")
    await env.wait_request("cr", "Pending", message="IssuerNotReady")
    await env.wait_issuer("revoked", "False", "Forbidden")

    async def still_pending() -> bool:
        obj = await env.get_request("cr")
        return condition(obj, "Ready")["reason"] == "Pending"

    await wait_for(still_pending, what="request stays Pending")
