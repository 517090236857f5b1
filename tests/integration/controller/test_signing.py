"""End-to-end signing: issuers become Ready, approved requests are Issued and
verify with openssl, and every terminal outcome follows cert-manager's contract."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509

from akv_issuer.pki.usages import key_usage_bits
from support.controller_harness import Env, condition, csr_pem


@pytest.mark.parametrize(
    ("kty", "size", "curve"),
    [("RSA", 2048, None), ("EC", None, "P-256"), ("EC-HSM", None, "P-384")],
    ids=["rsa", "ec-p256", "ec-hsm-p384"],
)
async def test_issuer_signs_rsa_ec_and_ed25519_requests_after_approval(
    env: Env, kty: str, size: int | None, curve: str | None
) -> None:
    ca = await env.make_ca(kty, size=size, curve=curve)
    await env.create_issuer("vault-ca", env.issuer_spec(ca))
    signs_before = env.sign_calls()
    controller = env.start_controller()
    await env.wait_ready(controller)

    issuer = await env.wait_issuer("vault-ca", "True", "Checked")
    status = issuer["status"]
    assert base64.b64decode(status["caCertificate"]).strip() == ca.pem.strip()
    assert status["keyVersion"] == ca.key_version
    assert status["signatureAlgorithm"] == str(ca.algorithm)

    for key_type in ("rsa", "ec", "ed25519"):
        await env.create_request(
            f"cr-{key_type}", csr_pem(key_type, f"{key_type}.example.com"), "vault-ca"
        )
    await env.create_request("cr-unapproved", csr_pem("ec"), "vault-ca")

    for key_type in ("rsa", "ec", "ed25519"):
        await env.approve(f"cr-{key_type}")
    for key_type in ("rsa", "ec", "ed25519"):
        done = await env.wait_request(f"cr-{key_type}", "Issued")
        leaf = env.openssl_verify(done, ca)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [f"{key_type}.example.com"]
        assert condition(done, "Ready")["status"] == "True"
        event = await env.wait_event(f"cr-{key_type}", "Issued")
        # The event names the certificate by its serial, as the audit record does.
        assert event == ("Normal", "Issued", f"Certificate issued (serial {leaf.serial_number:x})")

    # Never signs an unapproved request: it has no Ready condition at all.
    waiting = await env.get_request("cr-unapproved")
    assert condition(waiting, "Ready") is None
    assert "certificate" not in (waiting.get("status") or {})
    assert env.sign_calls() - signs_before == 3
    assert controller.metric("akv_issuer_certificaterequests_issued_total") == 3


_LEAF_BITS = {
    "rsa": {"digital_signature", "key_encipherment"},
    "ec": {"digital_signature"},
    "ed25519": {"digital_signature"},
}
_CA_BITS = {"digital_signature", "key_cert_sign", "crl_sign"}


async def test_pss_ca_signs_with_pss_and_key_usages_fit_each_key(env: Env) -> None:
    """Requests as cert-manager makes them with its default usages (none in
    spec.usages, digital signature + key encipherment in the CSR, for every
    key type): issued, keyEncipherment only for RSA keys (RFC 8813, RFC
    8410/9295), a CA certificate with keyCertSign, cRLSign and
    digitalSignature only (RFC 3279), all PSS-signed like the issuer's CA."""
    ca = await env.make_ca("RSA", size=2048, pss=True)
    await env.create_issuer("pss-ca", env.issuer_spec(ca, policy={"allowCA": True}))
    env.start_controller()
    issuer = await env.wait_issuer("pss-ca", "True", "Checked")
    assert issuer["status"]["signatureAlgorithm"] == "PS256"

    for key_type in _LEAF_BITS:
        csr = csr_pem(key_type, f"{key_type}.example.com", default_usages_in_csr=True)
        await env.create_request(f"cr-{key_type}", csr, "pss-ca")
    sub_ca = csr_pem("ec", "Sub CA", is_ca=True, default_usages_in_csr=True)
    await env.create_request("cr-sub-ca", sub_ca, "pss-ca", isCA=True)
    for name in [*(f"cr-{k}" for k in _LEAF_BITS), "cr-sub-ca"]:
        await env.approve(name)

    expected = {**{f"cr-{k}": bits for k, bits in _LEAF_BITS.items()}, "cr-sub-ca": _CA_BITS}
    for name, bits in expected.items():
        cert = env.openssl_verify(await env.wait_request(name, "Issued"), ca)
        assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS, name
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert key_usage_bits(usage) == bits, name


async def test_cluster_issuer_serves_every_namespace(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    name = f"cluster-{ca.name}"
    await env.create_issuer(name, env.issuer_spec(ca), cluster=True)
    env.start_controller()
    await env.wait_issuer(name, "True", "Checked", cluster=True)
    await env.create_request("cr", csr_pem("rsa"), name, kind="ClusterIssuer")
    await env.approve("cr")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)


async def test_denied_malformed_and_policy_requests_end_with_failure_time(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("strict", env.issuer_spec(ca))
    await env.create_issuer("lenient", env.issuer_spec(ca, policy={"allowCA": True}))
    signs_before = env.sign_calls()
    env.start_controller()
    await env.wait_issuer("strict", "True")
    await env.wait_issuer("lenient", "True")

    await env.create_request("denied", csr_pem(), "strict")
    await env.deny("denied")
    await env.create_request(
        "garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
        "strict",
    )
    await env.approve("garbage")
    await env.create_request("ca-refused", csr_pem(is_ca=True), "strict", isCA=True)
    await env.approve("ca-refused")
    await env.create_request("ca-allowed", csr_pem(is_ca=True), "lenient", isCA=True)
    await env.approve("ca-allowed")

    denied = await env.wait_request("denied", "Denied")
    assert condition(denied, "Ready")["status"] == "False"
    assert denied["status"]["failureTime"]
    assert condition(denied, "InvalidRequest") is None

    for name in ("garbage", "ca-refused"):
        failed = await env.wait_request(name, "Failed")
        assert failed["status"]["failureTime"]
        assert condition(failed, "InvalidRequest")["status"] == "True"
        assert "certificate" not in failed["status"]
        assert (await env.wait_event(name, "PermanentError"))[0] == "Warning"

    allowed = await env.wait_request("ca-allowed", "Issued")
    leaf = env.openssl_verify(allowed, ca)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # Only the one valid request reached Key Vault.
    assert env.sign_calls() - signs_before == 1


async def test_seed_format_issuer_manifest_works_unchanged(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    # Exactly the Go version's shape: keyVaultBaseURL with a slash, keyVersion set.
    spec = {
        "keyVaultBaseURL": env.emulator.env.vault_url + "/",
        "keyName": ca.name,
        "keyVersion": ca.key_version,
    }
    await env.create_issuer("keyvault-issuer", spec)
    env.start_controller()
    await env.wait_issuer("keyvault-issuer", "True", "Checked")
    await env.create_request("cr", csr_pem("rsa"), "keyvault-issuer")
    await env.approve("cr")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)
