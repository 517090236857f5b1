"""The benchmark's baseline: the same Certificates through cert-manager's own
CA issuer (key in a Secret) and through ours, on the same control plane, with
``issue_certificates`` (what ``make bench`` calls)."""

from __future__ import annotations

from akv_devcluster.certmanager import create_ca_issuer, issue_certificates
from support.e2e_harness import E2E, shared_ca

COUNT = 3


async def test_same_certificates_through_cert_managers_ca_issuer_and_ours(e2e: E2E) -> None:
    local_ca = await create_ca_issuer(e2e.kube, e2e.namespace, "baseline-ca")
    await e2e.wait_issuer_cm("baseline-ca")
    baseline = await issue_certificates(
        e2e.kube,
        e2e.namespace,
        {"name": "baseline-ca", "kind": "Issuer", "group": "cert-manager.io"},
        COUNT,
        prefix="builtin",
        wait_seconds=120,
    )
    akv_ca = await shared_ca(e2e.env, "EC", curve="P-256")
    ours = await issue_certificates(
        e2e.kube, e2e.namespace, await e2e.issuer(akv_ca), COUNT, prefix="akv", wait_seconds=120
    )

    for result, ca_pem in ((baseline, local_ca.cert_pem), (ours, akv_ca.pem)):
        assert result.count == COUNT
        assert len(result.latencies) == COUNT
        assert all(latency > 0 for latency in result.latencies)
        assert result.total_seconds >= max(result.latencies) * 0.99
        for name in result.names:
            issued = await e2e.check_secret(name)
            assert issued.ca_pem.strip() == ca_pem.strip()
    summary = ours.summary()
    assert summary["count"] == COUNT
    assert summary["latency_p50"] <= summary["latency_max"]
