"""A sign whose answer is lost is retried over the same to-be-signed bytes.

Key Vault may carry out a sign and the answer never arrive (the connection
stalls mid-body, is reset, or times out). A retry with a fresh serial would
make that a second certificate for the request, signed by Key Vault but
written nowhere. Regression for issue 15 (scenario 1, stall mid-body): the
emulator's sign log must show only the digests of the certificates written.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from support.controller_harness import Env, csr_pem


def _tbs_digest(certificate: x509.Certificate) -> str:
    algorithm = certificate.signature_hash_algorithm
    assert algorithm is not None
    digest = hashes.Hash(algorithm)
    digest.update(certificate.tbs_certificate_bytes)
    return base64.urlsafe_b64encode(digest.finalize()).decode().rstrip("=")


async def test_sign_cut_off_mid_body_is_retried_over_the_same_certificate(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("lossy", env.issuer_spec(ca))
    env.start_controller("--keyvault-timeout", "3s")
    await env.wait_issuer("lossy", "True")
    admin = env.emulator.admin
    admin.clear_sign_log()
    # The next two signs are carried out, half answered, then hang until reset.
    admin.set_connection_faults(
        {"midbody": {"next": 2, "operations": ["sign"]}, "hang_seconds": 10}
    )
    try:
        names = ["lossy-a", "lossy-b"]
        for name in names:
            await env.create_request(name, csr_pem("ec"), "lossy")
            await env.approve(name)
        written = set()
        for name in names:
            certificate = env.openssl_verify(await env.wait_request(name, "Issued"), ca)
            written.add(_tbs_digest(certificate))
        log = admin.sign_log()
    finally:
        admin.set_connection_faults({})
    cut_off = [r for r in log if not r["delivered"]]
    assert len(cut_off) == 2, log
    # Every signature Key Vault made is one of the two certificates written.
    assert {r["digest"].rstrip("=") for r in log} == written
