"""A leader that dies between Key Vault's signature and the status write:
the replica that takes over signs the *same* certificate, not a second one.

The first leader talks to the API server through a TCP proxy
(akv_devcluster.faultproxy). It is cut off while its sign is at Key Vault,
so the signature arrives and the Issued write cannot; it loses its Lease and
exits, and the standby finishes the request. Regression for issue 15
(scenarios 2, 3 and 5): each replica used to build the certificate with a
fresh random serial and the current time, so every such takeover left a
second certificate signed for the request. The emulator's sign log shows
both signatures over one to-be-signed digest, the written certificate's.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from akv_devcluster.faultproxy import FaultProxy
from support.controller_harness import Env, csr_pem, wait_for

FAST_LEASE = ("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")


def _tbs_digest(certificate: x509.Certificate) -> str:
    algorithm = certificate.signature_hash_algorithm
    assert algorithm is not None
    digest = hashes.Hash(algorithm)
    digest.update(certificate.tbs_certificate_bytes)
    return base64.urlsafe_b64encode(digest.finalize()).decode().rstrip("=")


async def test_standby_signs_the_same_certificate_after_the_leader_died_mid_issue(
    env: Env,
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("takeover", env.issuer_spec(ca))
    config = yaml.safe_load(env.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.hostname is not None
    assert server.port is not None
    proxy = FaultProxy(server.hostname, server.port)
    proxy.start()
    try:
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied = env.tmp / "kubeconfig-proxied"
        proxied.write_text(yaml.safe_dump(config))
        first = env.start_controller(
            "--kubeconfig",
            str(proxied),
            "--leader-elect",
            "--leader-election-identity",
            "first",
            *FAST_LEASE,
        )

        async def leading() -> bool:
            return first.metric("akv_issuer_leader") == 1

        await wait_for(leading, what="first to lead", env=env)
        await env.wait_issuer("takeover", "True")
        second = env.start_controller(
            "--leader-elect", "--leader-election-identity", "second", *FAST_LEASE
        )
        await env.wait_ready(second)
        admin = env.emulator.admin
        admin.update_faults({"latency_ms": 2000, "latency_operations": ["sign"]})
        admin.clear_sign_log()
        await env.create_request("orphan", csr_pem("ec"), "takeover")
        await env.approve("orphan")

        async def signing() -> bool:
            return admin.counters().get("sign", 0) >= 1

        await wait_for(signing, what="the first sign to reach Key Vault", env=env)
        proxy.blackhole()  # the signature will arrive; the Issued write will not
        admin.update_faults({"latency_ms": 0})
        issued = await env.wait_request("orphan", "Issued")
        certificate = env.openssl_verify(issued, ca)
        # The first leader gave up its lost lease (exit 2) without writing.
        assert first.process.wait(30) == 2
        log = admin.sign_log()
    finally:
        proxy.stop()
    assert len(log) == 2, log  # the first leader's signature and the standby's
    assert {record["digest"].rstrip("=") for record in log} == {_tbs_digest(certificate)}
