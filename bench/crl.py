"""`make bench-crl`: size and time of a large CRL signed with a Key Vault key.

The whole operator path: `akv-issuer ca create` makes a root in the Key Vault
emulator, then `akv-issuer ca crl` signs a CRL of N revoked serials (random,
up to 20 octets, as this issuer makes them; all keyCompromise) through Key
Vault's sign, and `openssl crl -verify` checks it. Prints, per CA key type:
entries, DER and PEM size, the command's wall time (process start, parsing,
Key Vault, signing, writing), the Key Vault sign calls (always 1) and the
verification time. N: BENCH_CRL_ENTRIES (default 100000). A measurement, not
a test: `make test` checks CRLs for correctness only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from akv_emulator.testing import EmulatorProcess

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))


def _run(emulator: EmulatorProcess, *args: str) -> None:
    env = {**os.environ, **emulator.env.values}
    result = subprocess.run(
        [AKV_ISSUER, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"akv-issuer {args[0]} {args[1]} failed: {result.stderr.strip()}")


def measure(emulator: EmulatorProcess, work: Path, kind: str, count: int) -> str:
    key = f"bench-crl-{kind}-{secrets.token_hex(3)}"
    vault = ["--vault-url", emulator.env.vault_url, "--key-name", key]
    ca_pem = work / f"{kind}-ca.pem"
    _run(
        emulator,
        "ca",
        "create",
        *vault,
        "--create-key",
        kind,
        "--common-name",
        f"CRL bench {kind}",
        "--lifetime",
        "30d",
        "--upload-secret",
        "--out",
        str(ca_pem),
    )
    listing = work / f"{kind}-revoked.txt"
    listing.write_text(
        "".join(
            f"{secrets.randbits(159) | 1 << 150:X},2030-05-01T12:00:00Z,keyCompromise\n"
            for _ in range(count)
        )
    )
    crl_path = work / f"{kind}-crl.der"
    emulator.admin.reset_counters()
    started = time.perf_counter()
    _run(
        emulator,
        "ca",
        "crl",
        *vault,
        "--revoked",
        str(listing),
        "--crl-number",
        "1",
        "--der",
        "--out",
        str(crl_path),
    )
    elapsed = time.perf_counter() - started
    signs = emulator.admin.counters().get("sign", 0)
    verify_started = time.perf_counter()
    verified = subprocess.run(
        [
            "openssl",
            "crl",
            "-verify",
            "-inform",
            "DER",
            "-CAfile",
            str(ca_pem),
            "-in",
            str(crl_path),
            "-noout",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    verify_s = time.perf_counter() - verify_started
    if verified.returncode != 0:
        raise SystemExit(f"openssl crl -verify failed: {verified.stderr.strip()}")
    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    return (
        f"| {kind} | {len(crl)} | {crl_path.stat().st_size} | {len(crl.public_bytes(Encoding.PEM))}"
        f" | {elapsed:.2f} | {signs} | {verify_s:.2f} |"
    )


def main() -> int:
    count = int(os.environ.get("BENCH_CRL_ENTRIES", "100000"))
    with tempfile.TemporaryDirectory(prefix="bench-crl-") as tmp:
        work = Path(tmp)
        emulator = EmulatorProcess.start(work / "emulator")
        try:
            print(
                "| CA key | entries | DER bytes | PEM bytes | `ca crl` s | sign calls | verify s |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|")
            for kind in ("rsa-2048", "ec-p256"):
                print(measure(emulator, work, kind, count), flush=True)
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
