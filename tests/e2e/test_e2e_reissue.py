"""Re-issue after a CA change (spec.reissue.onCAChange) with the real cert-manager."""

from __future__ import annotations

from lightkube.types import PatchType

from akv_issuer.controller.api import Issuer
from support.controller_harness import condition
from support.e2e_harness import E2E, shared_ca


async def test_certificates_of_the_previous_ca_are_reissued_once_each(e2e: E2E) -> None:
    old = await e2e.env.make_ca("EC", curve="P-256")
    ref = await e2e.issuer(old, reissue={"onCAChange": True, "perMinute": 600})
    # A Certificate of another issuer in the same namespace is left alone.
    other = await e2e.issuer(await shared_ca(e2e.env, "EC", curve="P-256"))
    await e2e.create_certificate("bystander", other, secretName="bystander-tls")
    await e2e.wait_ready("bystander")
    names = [f"moving-{n}" for n in range(4)]
    for name in names:
        await e2e.create_certificate(name, ref, secretName=f"{name}-tls")
    for name in names:
        await e2e.wait_ready(name)
        assert (await e2e.check_secret(f"{name}-tls")).ca_pem.strip() == old.pem.strip()

    # A new key version and its CA certificate; the operator points the issuer
    # at it (a spec change is checked at once).
    new = await e2e.env.rotate_ca(old.name, "EC", curve="P-256")
    admin = e2e.env.emulator.admin
    admin.reset_counters()
    await e2e.kube.patch(
        Issuer,
        ref["name"],
        {"spec": {"keyVersion": new.key_version}},
        namespace=e2e.namespace,
        patch_type=PatchType.MERGE,
    )

    for name in names:
        await e2e.wait_ready(name, revision=2)
    for name in names:
        issued = await e2e.check_secret(f"{name}-tls")  # openssl verify against ca.crt
        assert issued.ca_pem.strip() == new.pem.strip()
        assert issued.leaf.issuer == new.cert.subject

    async def complete() -> bool:
        issuer = await e2e.get_issuer(ref["name"], "Issuer")
        reissuing = condition(issuer, "Reissuing")
        return reissuing is not None and reissuing["status"] == "False"

    await e2e.wait(complete, "Reissuing=False")
    # Each Certificate cost exactly one Key Vault signature, nothing more.
    assert int(admin.counters().get("sign", 0)) == len(names)
    bystander = await e2e.get_certificate("bystander")
    assert int(bystander["status"]["revision"]) == 1
    controller = e2e.env.controllers[0]
    triggered = controller.metric("akv_issuer_reissue_triggered_total", issuer_name=ref["name"])
    assert triggered == len(names)
