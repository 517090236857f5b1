"""`python -m bench.micro`: the controller's per-certificate PKI work, in-process.

What :class:`akv_issuer.controller.requests.signing.RequestSigner` does for each request
apart from the Key Vault call: parse and check the CSR, build the certificate,
sign it through a remote signer (here a local RSA-2048 key, whose own time is
subtracted: Key Vault spends it, not the controller), verify the signature and
split the chain into ``status.certificate`` / ``status.ca``.

A step-by-step check on a shared machine: the CPU time of one process doing a
fixed amount of work moves far less with the load than wall-clock figures, and
under ``valgrind --tool=callgrind`` the instruction count is repeatable
(``--callgrind``: fewer rounds, prints the command to use). Works on older
commits too (``PYTHONPATH=<export>/src``), so before and after use the same
script.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa, utils

from akv_issuer import pki
from bench.csrs import csr_pems


class _TimedLocalSigner:
    """Signs digests with a local RSA key; counts the CPU the key itself takes."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.own_cpu = 0.0

    async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        started = time.process_time()
        signature = self.key.sign(
            digest, algorithm.rsa_padding(), utils.Prehashed(algorithm.hash_algorithm)
        )
        self.own_cpu += time.process_time() - started
        return signature


async def _ca(key: rsa.RSAPrivateKey) -> x509.Certificate:
    plan = pki.build_root_ca(
        key.public_key(),
        "bench micro CA",
        lifetime=dt.timedelta(days=365),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    algorithm = pki.default_algorithm(key.public_key())
    return await pki.sign_certificate(
        plan.builder, key.public_key(), algorithm, _TimedLocalSigner(key)
    )


async def _round(
    csrs: list[bytes], chain: pki.CAChain, key: rsa.RSAPrivateKey, signer: _TimedLocalSigner
) -> None:
    algorithm = pki.default_algorithm(key.public_key())
    profile = pki.IssuerProfile()
    request = pki.IssuanceRequest()
    now = dt.datetime.now(dt.UTC)
    for pem in csrs:
        csr = pki.parse_csr(pem)
        plan = pki.build_certificate(csr, request, chain.ca, profile, now)
        cert = await pki.sign_certificate(plan.builder, key.public_key(), algorithm, signer)
        if hasattr(chain, "split"):
            chain.split(cert)
        else:  # commits before CAChain.split
            pki.split_chain(cert, list(chain.certificates))


async def main_async(count: int, rounds: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    chain = pki.CAChain((await _ca(key),))
    csrs = csr_pems(count)
    signer = _TimedLocalSigner(key)
    await _round(csrs[:10], chain, key, signer)  # warm-up
    per_cert = []
    for _ in range(rounds):
        signer.own_cpu = 0.0
        started = time.process_time()
        await _round(csrs, chain, key, signer)
        spent = time.process_time() - started - signer.own_cpu
        per_cert.append(spent * 1000 / count)
    print(
        f"pki per certificate (CPU, local RSA signature excluded): median "
        f"{statistics.median(per_cert):.3f} ms, min {min(per_cert):.3f}, max "
        f"{max(per_cert):.3f} over {rounds} rounds of {count}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="certificates per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.n, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
