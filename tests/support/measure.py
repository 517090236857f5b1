"""Rough measurements of the controller (not a test; the formal benchmark is later).

    AKV_DEVCLUSTER_DIR=/tmp/akvdev PYTHONPATH=tests .venv/bin/python -m support.measure \
        --finished 10000 --latency-samples 50

Needs a running dev cluster (``akv-devcluster up --dir DIR``) with our CRDs;
starts its own Key Vault emulator. Reports the controller's RSS when idle,
after it has watched N finished CertificateRequests arrive, after a restart
that lists them, and the median time from approval to Issued as seen by a
watching client. The controller runs with the admin kubeconfig here: RBAC is
covered by the tests, this only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from akv_devcluster import DevCluster
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import API_VERSION, GROUP, CertificateRequest, Issuer
from akv_issuer.keyvault import ClientSecret, KeyVaultAccess, KeyVaultOptions
from akv_issuer.pki import build_root_ca, default_algorithm, sign_certificate
from support.controller_harness import REPO, csr_pem, free_port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def apply_status(
    kube: AsyncClient,
    ns: str,
    name: str,
    conditions: list[dict[str, Any]],
    manager: str,
    extra: dict[str, Any] | None = None,
) -> None:
    body = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": ns},
        "status": {"conditions": conditions, **(extra or {})},
    }
    await kube.patch(
        CertificateRequest.Status,
        name,
        body,
        namespace=ns,
        patch_type=PatchType.APPLY,
        field_manager=manager,
        force=True,
    )


def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": reason,
        "lastTransitionTime": now_text(),
    }


async def make_ca(kv: KeyVaultAccess, auth: ClientSecret, vault: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    key = await kv.create_key(vault, name, auth, kty="EC", curve="P-256")
    plan = build_root_ca(
        key.public_key,
        "bench CA",
        lifetime=dt.timedelta(days=30),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    cert = await sign_certificate(
        plan.builder, key.public_key, default_algorithm(key.public_key), kv.signer(key, auth)
    )
    from cryptography.hazmat.primitives import serialization

    await kv.set_secret(vault, name, cert.public_bytes(serialization.Encoding.PEM).decode(), auth)
    return name


def start_controller(
    cluster: DevCluster, emu: EmulatorProcess, ns: str, log: Path, concurrency: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **emu.env.azure_environ()}
    cmd = [
        sys.executable,
        "-m",
        "akv_issuer.controller",
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        "--cluster-resource-namespace",
        ns,
        "--metrics-bind-address",
        f"127.0.0.1:{free_port()}",
        "--health-probe-bind-address",
        f"127.0.0.1:{free_port()}",
        "--tls-ca-file",
        emu.env.ca_file,
        "--concurrency",
        str(concurrency),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--finished", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    cluster = DevCluster.attach(os.environ["AKV_DEVCLUSTER_DIR"])
    cluster.install_crds(sorted((REPO / "config/crd/bases").glob("*.yaml")))
    tmp = Path(tempfile.mkdtemp(prefix="akv-measure-"))
    emu = EmulatorProcess.start(tmp / "emulator")
    kube = AsyncClient(config=KubeConfig.from_file(cluster.kubeconfig_path), field_manager="bench")
    kv = KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emu.env.ca_file, verify_challenge_resource=False)
    )
    auth = ClientSecret(
        emu.env.tenant_id,
        emu.env.sp_client_id,
        emu.env.sp_client_secret,
        authority_host=emu.env.authority_host,
    )
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    await kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    key_name = await make_ca(kv, auth, emu.env.vault_url)
    await kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name="bench", namespace=ns),
            spec={"keyVaultBaseURL": emu.env.vault_url, "keyName": key_name},
        )
    )
    ref = {"name": "bench", "kind": "Issuer", "group": GROUP}
    request_b64 = base64.b64encode(csr_pem("ec")).decode()
    log = tmp / "controller.log"
    proc = start_controller(cluster, emu, ns, log, args.concurrency)
    try:
        await asyncio.sleep(8)
        idle = rss_mib(proc.pid)
        print(f"RSS idle: {idle:.1f} MiB", flush=True)

        sem = asyncio.Semaphore(32)

        async def finished(i: int) -> None:
            async with sem:
                name = f"done-{i}"
                await kube.create(
                    CertificateRequest(
                        apiVersion="cert-manager.io/v1",
                        kind="CertificateRequest",
                        metadata=ObjectMeta(name=name, namespace=ns),
                        spec={"request": request_b64, "issuerRef": ref},
                    )
                )
                # Finished as if issued long ago (by another controller).
                await apply_status(
                    kube,
                    ns,
                    name,
                    [cond("Approved", "True", "cert-manager.io"), cond("Ready", "True", "Issued")],
                    "bench-old",
                )

        started = time.monotonic()
        await asyncio.gather(*(finished(i) for i in range(args.finished)))
        print(
            f"created {args.finished} finished requests in {time.monotonic() - started:.0f}s",
            flush=True,
        )
        await asyncio.sleep(10)
        print(
            f"RSS after watching {args.finished} finished requests: {rss_mib(proc.pid):.1f} MiB",
            flush=True,
        )
        proc.terminate()
        proc.wait(60)
        proc = start_controller(cluster, emu, ns, log, args.concurrency)
        await asyncio.sleep(15)
        print(
            f"RSS after a restart listing {args.finished} finished requests: "
            f"{rss_mib(proc.pid):.1f} MiB",
            flush=True,
        )

        latencies: list[float] = []
        for i in range(args.latency_samples):
            name = f"lat-{i}"
            await kube.create(
                CertificateRequest(
                    apiVersion="cert-manager.io/v1",
                    kind="CertificateRequest",
                    metadata=ObjectMeta(name=name, namespace=ns),
                    spec={"request": request_b64, "issuerRef": ref},
                )
            )
            approved_at = time.monotonic()
            await apply_status(
                kube, ns, name, [cond("Approved", "True", "cert-manager.io")], "test-approver"
            )
            while True:
                obj = await kube.get(CertificateRequest, name, namespace=ns)
                conds = (obj.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c.get("reason") == "Issued" for c in conds):
                    break
                await asyncio.sleep(0.005)
            latencies.append(time.monotonic() - approved_at)
        latencies.sort()
        p90 = latencies[int(len(latencies) * 0.9) - 1]
        print(
            f"approval -> Issued over {len(latencies)} sequential requests: median "
            f"{statistics.median(latencies) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
            f"(client-side, 5 ms polling)",
            flush=True,
        )
        print(f"RSS at the end: {rss_mib(proc.pid):.1f} MiB", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
        # Deleting 10,000 objects takes longer than the default 10 s timeout.
        async with AsyncClient(
            config=KubeConfig.from_file(cluster.kubeconfig_path), timeout=httpx2.Timeout(600.0)
        ) as slow:
            await slow.deletecollection(CertificateRequest, namespace=ns)
        await kube.delete(Issuer, "bench", namespace=ns)
        await kube.delete(Namespace, ns)
        await kube.close()
        await kv.close()
        emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
