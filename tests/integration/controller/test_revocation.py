"""Revocation in the cluster and CRLs per issuer (issue 13, points 2-4).

Real kube-apiserver, the controller under the shipped manager role, the Key
Vault emulator; relying parties are ``openssl crl`` / ``openssl verify``.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from akv_issuer.controller.api import CertificateRequest
from akv_issuer.controller.revocation.store import ANNOTATION_REVOKE, ANNOTATION_REVOKED
from support.controller_harness import Env, condition, csr_pem, wait_for


async def _issue(env: Env, name: str, issuer: str) -> x509.Certificate:
    await env.create_request(name, csr_pem("ec", cn=f"{name}.example.com"), issuer)
    await env.approve(name)
    request = await env.wait_request(name, "Issued")
    return x509.load_pem_x509_certificates(base64.b64decode(request["status"]["certificate"]))[0]


async def _annotate(env: Env, name: str, value: str) -> None:
    await env.kube.patch(
        CertificateRequest,
        name,
        {"metadata": {"annotations": {ANNOTATION_REVOKE: value}}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )


async def _served_crl(
    env: Env, path: str, *, serial: int | None = None, number: int | None = None
) -> x509.CertificateRevocationList:
    found: list[x509.CertificateRevocationList] = []

    async def check() -> bool:
        status, body, content_type = env.controllers[-1].crl(path)
        if status != 200:
            return False
        assert content_type == "application/pkix-crl"
        crl = x509.load_der_x509_crl(body)
        found[:] = [crl]
        if number is not None:
            n = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            if n < number:
                return False
        return serial is None or crl.get_revoked_certificate_by_serial_number(serial) is not None

    await wait_for(check, what=f"CRL at {path} with serial {serial}", env=env)
    return found[0]


def _openssl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, cwd=tmp)


async def test_revoke_is_durable_and_served_in_a_verified_crl(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    path = f"/crl/issuer/{env.namespace}/crl-issuer.crl"
    url = f"http://crl.example.com{path}"
    await env.create_issuer(
        "crl-issuer",
        env.issuer_spec(ca, crl={"enabled": True, "validity": "1h", "url": url}),
    )
    controller = env.start_controller()
    await env.wait_issuer("crl-issuer", "True")
    # An empty CRL first; certificates carry the URL.
    await _served_crl(env, path)
    leaf = await _issue(env, "victim", "crl-issuer")
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in (p.full_name or [])] == [url]
    keep = await _issue(env, "bystander", "crl-issuer")

    signs_before = env.sign_calls()
    started = time.monotonic()
    await _annotate(env, "victim", "superseded")
    crl = await _served_crl(env, path, serial=leaf.serial_number)
    latency = time.monotonic() - started
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.superseded
    )
    assert crl.get_revoked_certificate_by_serial_number(keep.serial_number) is None
    assert env.sign_calls() - signs_before == 1, "one Key Vault sign per CRL"
    print(f"\nrevoke->served {latency:.2f}s, sign calls per CRL 1")

    request = await env.get_request("victim")
    assert (
        f"serial={leaf.serial_number:x}" in request["metadata"]["annotations"][ANNOTATION_REVOKED]
    )
    await env.wait_event("victim", "Revoked", type_="Normal")
    await env.wait_event("crl-issuer", "Revoked", type_="Normal")
    issuer = await env.get_issuer("crl-issuer")
    current = condition(issuer, "CRLCurrent")
    assert current is not None
    assert current["status"] == "True", current
    assert condition(issuer, "Ready")["status"] == "True"  # type: ignore[index]

    # openssl: the CRL verifies against the CA; the revoked leaf fails, the other passes.
    tmp = env.tmp
    (tmp / "ca.pem").write_bytes(ca.pem)
    (tmp / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (tmp / "revoked.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "kept.pem").write_bytes(keep.public_bytes(serialization.Encoding.PEM))
    checked = _openssl(tmp, "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify")
    assert checked.returncode == 0, checked
    assert "verify OK" in checked.stdout + checked.stderr, checked
    common = ["verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem"]
    revoked = _openssl(tmp, *common, "revoked.pem")
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    assert _openssl(tmp, *common, "kept.pem").returncode == 0

    # Durable: the request is deleted, the controller restarts; the record and
    # the CRL are still there, with no new sign (nothing changed).
    await env.kube.delete(CertificateRequest, "victim", namespace=env.namespace)
    controller.terminate()
    signs_before = env.sign_calls()
    env.start_controller()
    await env.wait_ready(env.controllers[-1])
    again = await _served_crl(env, path, serial=leaf.serial_number)
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    stored: Any = await env.kube.get(
        ConfigMap, "akv-revocations-issuer-crl-issuer", namespace=env.namespace
    )
    assert f"{leaf.serial_number:x} superseded " in stored.data["revocations"]
    assert env.sign_calls() == signs_before


async def test_refusals_and_twice(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    other = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("mine", env.issuer_spec(ca, crl={"enabled": True}))
    await env.create_issuer("theirs", env.issuer_spec(other))
    env.start_controller()
    await env.wait_issuer("mine", "True")
    await env.wait_issuer("theirs", "True")
    leaf = await _issue(env, "issued", "mine")

    # Pending: not approved yet.
    await env.create_request("pending", csr_pem("ec"), "mine")
    await _annotate(env, "pending", "true")
    _, _, message = await env.wait_event("pending", "RevocationRefused", type_="Warning")
    assert "not Issued" in message
    # Unknown reason name.
    await _annotate(env, "issued", "lostIt")
    _, _, message = await env.wait_event("issued", "RevocationRefused", type_="Warning")
    assert "lostIt" in message
    # A request naming another issuer whose certificate came from ours: its
    # status (as forged by whoever may write it) does not verify against theirs.
    await _issue(env, "foreign", "theirs")
    forged = await env.get_request("issued")
    await env.kube.patch(
        CertificateRequest.Status,
        "foreign",
        {"status": {"certificate": forged["status"]["certificate"]}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )
    await _annotate(env, "foreign", "")
    _, _, message = await env.wait_event("foreign", "RevocationRefused", type_="Warning")
    assert "was not signed by the current CA" in message
    # Unknown issuer.
    await env.create_request("orphan", csr_pem("ec"), "nobody")
    await _annotate(env, "orphan", "")
    await env.wait_event("orphan", "RevocationRefused", type_="Warning")

    # Twice: the second annotation (a new value) keeps the first record.
    await _annotate(env, "issued", "keyCompromise")
    await env.wait_event("issued", "Revoked", type_="Normal")
    stored: Any = await env.kube.get(
        ConfigMap, "akv-revocations-issuer-mine", namespace=env.namespace
    )
    assert stored.data["revocations"].count(f"{leaf.serial_number:x} ") == 1
    await env.kube.patch(
        CertificateRequest,
        "issued",
        {"metadata": {"annotations": {ANNOTATION_REVOKED: None}}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )

    async def repeated() -> bool:
        request = await env.get_request("issued")
        return ANNOTATION_REVOKED in (request["metadata"].get("annotations") or {})

    await wait_for(repeated, what="revoked annotation written again", env=env)
    stored = await env.kube.get(ConfigMap, "akv-revocations-issuer-mine", namespace=env.namespace)
    assert stored.data["revocations"].count(f"{leaf.serial_number:x} ") == 1
    issuer_ref = await env.get_issuer("theirs")
    assert condition(issuer_ref, "CRLCurrent") is None  # CRLs not enabled there


async def test_keyvault_down_when_the_crl_is_due(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    path = f"/crl/issuer/{env.namespace}/due.crl"
    # A 1-minute CRL, re-signed 50 s before nextUpdate: due every 10 s.
    await env.create_issuer(
        "due", env.issuer_spec(ca, crl={"enabled": True, "validity": "1m", "renewBefore": "50s"})
    )
    env.start_controller()
    await env.wait_issuer("due", "True")
    first = await _served_crl(env, path)
    env.emulator.admin.set_faults({"errors": {"probability": 1.0, "operations": ["sign"]}})

    async def failing() -> bool:
        current = condition(await env.get_issuer("due"), "CRLCurrent")
        return current is not None and current.get("reason") == "ResignFailing"

    await wait_for(failing, what="CRLCurrent=False/ResignFailing", env=env)
    status, body, _ = env.controllers[-1].crl(path)
    assert status == 200
    assert body == first.public_bytes(serialization.Encoding.DER)
    await env.wait_event("due", "CRLSignFailed", type_="Warning")

    async def expired() -> bool:
        current = condition(await env.get_issuer("due"), "CRLCurrent")
        return current is not None and current.get("reason") == "Expired"

    await wait_for(expired, what="CRLCurrent=False/Expired", limit=120, env=env)
    assert env.controllers[-1].metric("akv_issuer_crl_signs_total", result="Failed") >= 1
    env.emulator.admin.clear_faults()
    number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    await _served_crl(env, path, number=number + 1)

    async def current_again() -> bool:
        current = condition(await env.get_issuer("due"), "CRLCurrent")
        return current is not None and current.get("status") == "True"

    await wait_for(current_again, what="CRLCurrent=True", env=env)
