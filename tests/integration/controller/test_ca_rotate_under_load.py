"""`akv-issuer ca rotate` while requests are in flight: the running issuer
(``keyVersion`` unset, ``--issuer-recheck-interval 2s``) switches to the new CA
without failing a request, and every certificate verifies against exactly one
of the two CAs.

The same test measures the switch at scale: set ``AKV_ROTATION_REQUESTS`` (e.g.
500) and, optionally, ``AKV_ROTATION_REPORT=FILE`` for the numbers as JSON;
they are printed either way (``-s`` shows them):

    AKV_ROTATION_REQUESTS=500 AKV_ROTATION_REPORT=/tmp/rotation.json \\
        .venv/bin/pytest -q -s tests/integration/controller/test_ca_rotate_under_load.py

Load: half of the requests are created and approved at once and the rotation
starts with them; the other half arrive evenly over the recheck interval plus
three seconds after the new secret version is stored, so some are certainly
served after the switch. Times are wall clock on this machine: "new secret
version" is when ``ca rotate`` reports it stored, "first certificate from the
new CA" is when a watch sees that request Issued.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube.models.meta_v1 import ObjectMeta

from akv_issuer.controller.api import GROUP, CertificateRequest
from support.controller_harness import Env, csr_pem, wait_for

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))
RECHECK_SECONDS = 2.0
REQUESTS = int(os.environ.get("AKV_ROTATION_REQUESTS", "40"))


def _ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


async def _rotate(env: Env, key_name: str, out: Path) -> float:
    """Run `akv-issuer ca rotate`; return the wall time it reported the secret stored."""
    process = await asyncio.create_subprocess_exec(
        AKV_ISSUER,
        "ca",
        "rotate",
        "--vault-url",
        env.emulator.env.vault_url,
        "--key-name",
        key_name,
        "--out",
        str(out),
        env={**os.environ, **env.emulator.env.values},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stored_at: float | None = None
    lines: list[str] = []
    async for raw in process.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if stored_at is None and line.startswith("stored in secret"):
            stored_at = time.time()
    assert await process.wait() == 0, "".join(lines)
    assert stored_at is not None, "".join(lines)
    return stored_at


def _report(report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, sort_keys=True)
    print(f"\nrotation under load: {text}")
    if os.environ.get("AKV_ROTATION_REPORT"):
        Path(os.environ["AKV_ROTATION_REPORT"]).write_text(text + "\n")


def _verifies(ca: Path, leaf: Path) -> bool:
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca), str(leaf)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


async def test_requests_in_flight_during_ca_rotate_all_issue_by_exactly_one_ca(
    env: Env,
) -> None:
    old = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("rotating", env.issuer_spec(old))
    controller = env.start_controller("--issuer-recheck-interval", f"{RECHECK_SECONDS:g}s")
    await env.wait_issuer("rotating", "True")
    request_b64 = base64.b64encode(csr_pem("ec")).decode()

    issued_at: dict[str, float] = {}
    watch_ready = asyncio.Event()

    async def watch() -> None:
        stream = env.kube.watch(CertificateRequest, namespace=env.namespace)
        watch_ready.set()
        async for _, obj in stream:
            found = dict(obj)
            ready = _ready(found)
            name = found["metadata"]["name"]
            if ready and ready.get("reason") == "Issued" and name not in issued_at:
                issued_at[name] = time.time()

    watcher = asyncio.create_task(watch())
    await watch_ready.wait()
    env.emulator.admin.reset_counters()
    slots = asyncio.Semaphore(32)

    async def create(index: int) -> None:
        async with slots:
            name = f"load-{index:04d}"
            await env.kube.create(
                CertificateRequest(
                    apiVersion="cert-manager.io/v1",
                    kind="CertificateRequest",
                    metadata=ObjectMeta(name=name, namespace=env.namespace),
                    spec={
                        "request": request_b64,
                        "issuerRef": {
                            "name": "rotating",
                            "kind": "Issuer",
                            "group": GROUP,
                        },
                    },
                )
            )
            await env.approve(name)

    first_half = REQUESTS // 2
    new_pem_path = env.tmp / "new-ca.pem"
    rotation = asyncio.create_task(_rotate(env, old.name, new_pem_path))
    await asyncio.gather(*(create(i) for i in range(first_half)))
    stored_at = await rotation
    rest = REQUESTS - first_half
    spread = RECHECK_SECONDS + 3.0
    for i in range(rest):
        await create(first_half + i)
        await asyncio.sleep(spread / rest)

    async def all_done() -> bool:
        done = 0
        async for cr in env.kube.list(CertificateRequest, namespace=env.namespace):
            ready = _ready(dict(cr))
            if ready is not None and ready.get("reason") in ("Issued", "Failed", "Denied"):
                done += 1
        return done >= REQUESTS

    await wait_for(all_done, what=f"{REQUESTS} requests finished", limit=120, env=env)
    watcher.cancel()
    counters = env.emulator.admin.counters()

    old_path = env.tmp / "old-ca.pem"
    old_path.write_bytes(old.pem)
    new_pem = new_pem_path.read_bytes()
    new = x509.load_pem_x509_certificate(new_pem)
    assert new.subject == old.cert.subject
    by_ca = {"old": 0, "new": 0}
    failed: list[str] = []
    first_new: float | None = None
    leaf_path = env.tmp / "leaf.pem"
    async for cr in env.kube.list(CertificateRequest, namespace=env.namespace):
        obj = dict(cr)
        name = obj["metadata"]["name"]
        ready = _ready(obj)
        if ready is None or ready.get("reason") != "Issued":
            failed.append(f"{name}: {ready}")
            continue
        status = obj["status"]
        chain = x509.load_pem_x509_certificates(base64.b64decode(status["certificate"]))
        assert len(chain) == 1, name
        leaf_path.write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
        verdict = (_verifies(old_path, leaf_path), _verifies(new_pem_path, leaf_path))
        assert verdict in ((True, False), (False, True)), f"{name} verifies as {verdict}"
        which = "old" if verdict[0] else "new"
        by_ca[which] += 1
        ca_pem = base64.b64decode(status["ca"]).strip()
        assert ca_pem == (old.pem if which == "old" else new_pem).strip(), name
        if which == "new" and name in issued_at:
            first_new = min(first_new or issued_at[name], issued_at[name])

    issued = by_ca["old"] + by_ca["new"]
    signs = counters.get("sign", 0)
    vault_calls = sum(n for op, n in counters.items() if op not in ("challenge", "unauthorized"))
    report = {
        "requests": REQUESTS,
        "issued_by_old_ca": by_ca["old"],
        "issued_by_new_ca": by_ca["new"],
        "failed": len(failed),
        "sign_calls": signs,
        "sign_calls_for_ca_rotate": 1,
        "sign_calls_per_issued_certificate": round((signs - 1) / issued, 3) if issued else None,
        "key_vault_calls_per_issued_certificate": round(vault_calls / issued, 3)
        if issued
        else None,
        "counters": counters,
        "seconds_from_new_secret_version_to_first_new_ca_certificate": round(
            first_new - stored_at, 3
        )
        if first_new is not None
        else None,
        "issuer_recheck_interval_seconds": RECHECK_SECONDS,
    }
    _report(report)

    assert failed == []
    assert by_ca["old"] > 0
    assert by_ca["new"] > 0
    # One sign per certificate (a retried sign would show here), plus the new root's.
    assert signs == issued + 1
    assert first_new is not None
    assert first_new - stored_at < RECHECK_SECONDS + 3.0
    assert "Traceback" not in controller.log()
