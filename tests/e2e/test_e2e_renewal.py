"""Renewal end to end: timed by cert-manager, triggered like ``cmctl renew``,
and through a Key Vault outage."""

from __future__ import annotations

from akv_devcluster.certmanager import Certificate
from support.controller_harness import condition
from support.e2e_harness import E2E, shared_ca


async def test_timed_renewal_issues_a_new_certificate(e2e: E2E) -> None:
    """A real, unassisted renewal. The smallest values cert-manager's webhook
    accepts are duration 1h and renewBefore 5m; renewBefore 59m50s makes the
    renewal time fall ~10 s after issuance, so cert-manager's own trigger
    controller renews on its own schedule without the test waiting minutes."""
    ca = await shared_ca(e2e.env, "RSA", size=2048)
    ref = await e2e.issuer(ca)
    await e2e.create_certificate(
        "short", ref, secretName="short-tls", duration="1h", renewBefore="59m50s"
    )
    await e2e.wait_ready("short")
    first = await e2e.check_secret("short-tls")
    # The Secret is written before the revision is bumped, so the Secret just
    # read is at most this revision.
    seen = await e2e.get_certificate("short")
    assert seen["status"].get("renewalTime")

    renewed_cert = await e2e.wait_ready("short", revision=int(seen["status"]["revision"]) + 1)
    # Stop the churn (it would renew every ~10 s) before checking.
    await e2e.kube.delete(Certificate, "short", namespace=e2e.namespace)
    second = await e2e.check_secret("short-tls")
    assert second.leaf.serial_number != first.leaf.serial_number
    assert second.leaf.not_valid_before_utc >= first.leaf.not_valid_before_utc
    assert renewed_cert["status"].get("lastFailureTime") is None


async def test_manual_renewal_survives_a_key_vault_outage(e2e: E2E) -> None:
    """Key Vault answers 503 to every sign for a while during a renewal: the
    request stays Pending and is retried, the Certificate never goes Failed,
    and the renewal completes once the vault is back."""
    ca = await shared_ca(e2e.env, "RSA", size=2048)
    ref = await e2e.issuer(ca)
    await e2e.create_certificate("steady", ref, secretName="steady-tls")
    await e2e.wait_ready("steady")
    first = await e2e.check_secret("steady-tls")

    admin = e2e.env.emulator.admin
    admin.reset_counters()
    admin.set_faults({"errors": {"probability": 1.0, "status": 503, "operations": ["sign"]}})
    await e2e.trigger_renewal("steady")

    async def retried_through_outage() -> bool:
        answered = admin.responses().get("sign", {})
        return int(answered.get("503", 0)) >= 3

    await e2e.wait(retried_through_outage, "three 503 answers to sign during the outage")
    # cert-manager keeps one old request by default (revisionHistoryLimit), so
    # look for the one of revision 2.
    requests = await e2e.requests_for("steady")
    annotations = requests[-1]["metadata"]["annotations"]
    assert annotations["cert-manager.io/certificate-revision"] == "2"
    ready = condition(requests[-1], "Ready")
    assert ready is not None
    assert ready["reason"] == "Pending", ready
    cert = await e2e.get_certificate("steady")
    issuing = condition(cert, "Issuing")
    assert issuing is not None
    assert issuing["status"] == "True", issuing
    assert not cert["status"].get("lastFailureTime")
    assert not cert["status"].get("failedIssuanceAttempts")

    admin.clear_faults()
    renewed = await e2e.wait_ready("steady", revision=2)
    second = await e2e.check_secret("steady-tls")
    assert second.leaf.serial_number != first.leaf.serial_number
    assert not renewed["status"].get("lastFailureTime")
    assert not renewed["status"].get("failedIssuanceAttempts")
    assert condition((await e2e.requests_for("steady"))[-1], "Ready")["reason"] == "Issued"
