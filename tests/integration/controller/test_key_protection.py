"""The key stays in the HSM (issue 24, docs/api.md "Key protection"): an exportable key,
or one with a release policy, is refused unless ``spec.allowExportableKey``; a Managed
HSM key's attestation is fetched, checked and summarised in ``status.keyAttestation``
and in the audit records; an HSM that serves no attestation is KeyAttestationFailed.

The emulator plays a Managed HSM (``akvkp.managedhsm.azure.net``) through its own
CONNECT proxy (as tests/integration/controller/test_ca_sources.py), next to the
loopback vault, and signs its attestations with its own throwaway attestation CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from cryptography.hazmat.primitives import serialization
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from akv_devcluster import DevCluster
from akv_emulator.testing import EmulatorProcess
from akv_issuer.pki import build_root_ca, default_algorithm, sign_certificate
from support.controller_harness import CA, Controller, Env, condition, csr_pem, open_env, wait_for

HSM = "https://akvkp.managedhsm.azure.net"
NAMES = ["akvkp.managedhsm.azure.net", "login.microsoftonline.com"]
POLICY = KeyReleasePolicy(json.dumps({"version": "1.0.0", "anyOf": []}).encode())


@pytest.fixture(scope="module")
def hsm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    args = ["--proxy", *(arg for name in NAMES for arg in ("--tls-name", name))]
    process = EmulatorProcess.start(tmp_path_factory.mktemp("akv-it-hsm"), extra_args=args)
    try:
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture
async def henv(
    kube_client: AsyncClient,
    namespace: str,
    manager_role: str,
    devcluster: DevCluster,
    hsm_emulator: EmulatorProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Env]:
    hsm_emulator.admin.reset()
    monkeypatch.setenv("HTTPS_PROXY", hsm_emulator.env.values["AKV_EMULATOR_PROXY_URL"])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    env, binding = await open_env(
        kube_client, devcluster, hsm_emulator, namespace, manager_role, tmp_path
    )
    try:
        yield env
    finally:
        for controller in env.controllers:
            controller.kill()
        await env.kv.close()
        await kube_client.delete(ClusterRoleBinding, binding)


def _sdk(env: Env, vault: str) -> KeyClient:
    emulator = env.emulator.env
    return KeyClient(vault, emulator.sp_credential(), connection_verify=emulator.ca_file)


async def _ca_for(env: Env, vault: str, name: str) -> CA:
    """A root CA certificate for the existing key ``name`` (signed by it), kept in a
    Kubernetes Secret of the same name in the test namespace."""
    key = await env.kv.get_key(vault, name, None, env.kv_auth)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    plan = build_root_ca(key.public_key, f"CA {name}", lifetime=dt.timedelta(days=30), now=now)
    algorithm = default_algorithm(key.public_key)
    cert = await sign_certificate(
        plan.builder, key.public_key, algorithm, env.kv.signer(key, env.kv_auth)
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    await env.kube.create(
        Secret(
            metadata=ObjectMeta(name=name, namespace=env.namespace),
            data={"ca.crt": base64.b64encode(pem).decode()},
        )
    )
    return CA(name=name, key_version=key.version, pem=pem, cert=cert, algorithm=algorithm)


def _spec(vault: str, ca: CA, **extra: Any) -> dict[str, Any]:
    return {
        "keyVaultBaseURL": vault,
        "keyName": ca.name,
        "caSource": {"secret": {"name": ca.name}},
        **extra,
    }


def _ready_message(obj: dict[str, Any]) -> str:
    ready = condition(obj, "Ready")
    assert ready is not None
    return str(ready["message"])


def _audit_records(controller: Controller) -> list[dict[str, Any]]:
    return [
        json.loads(line)["audit"]
        for line in controller.log().splitlines()
        if line.startswith("{") and json.loads(line).get("logger") == "akv_issuer.audit"
    ]


async def test_keys_that_can_leave_are_refused_and_hsm_keys_are_attested(henv: Env) -> None:
    env = henv
    loopback = env.emulator.env.vault_url
    tag = uuid.uuid4().hex[:8]
    hsm = _sdk(env, HSM)
    hsm.create_ec_key(f"attested-{tag}", hardware_protected=True, curve="P-256")
    hsm.create_ec_key(
        f"hsm-exportable-{tag}", hardware_protected=True, exportable=True, release_policy=POLICY
    )
    vault = _sdk(env, loopback)
    vault.create_rsa_key(f"vault-policy-{tag}", size=2048)
    vault.update_key_properties(f"vault-policy-{tag}", release_policy=POLICY)

    attested = await _ca_for(env, HSM, f"attested-{tag}")
    exportable = await _ca_for(env, HSM, f"hsm-exportable-{tag}")
    with_policy = await _ca_for(env, loopback, f"vault-policy-{tag}")
    await env.create_issuer("attested", _spec(HSM, attested))
    await env.create_issuer("hsm-exportable", _spec(HSM, exportable))
    await env.create_issuer(
        "hsm-exportable-allowed", _spec(HSM, exportable, allowExportableKey=True)
    )
    await env.create_issuer("vault-policy", _spec(loopback, with_policy))
    controller = env.start_controller("--log-format", "json")
    await env.wait_ready(controller)

    # An HSM key: attested, summarised, signing.
    ready = await env.wait_issuer("attested", "True", "Checked")
    assert "Managed HSM attestation checked" in _ready_message(ready)
    summary = ready["status"]["keyAttestation"]
    assert summary["result"] == "Checked"
    assert summary["keyID"] == ready["status"]["keyID"]
    fetched = hsm.get_key_attestation(attested.name, attested.key_version).properties.attestation
    assert fetched is not None
    assert fetched.private_key_attestation is not None
    assert fetched.public_key_attestation is not None
    assert (
        summary["privateKeyAttestationSHA256"]
        == hashlib.sha256(fetched.private_key_attestation).hexdigest()
    )
    assert (
        summary["publicKeyAttestationSHA256"]
        == hashlib.sha256(fetched.public_key_attestation).hexdigest()
    )
    assert summary["formatVersion"] == "1.0.0"
    assert summary["certificates"] == 2
    (root,) = summary["rootCertificates"]
    assert "akv-emulator attestation root" in root["subject"]
    await env.create_request("cr-attested", csr_pem(), "attested")
    await env.approve("cr-attested")
    env.openssl_verify(await env.wait_request("cr-attested", "Issued"), attested)

    async def audited() -> bool:
        return any(r["request"]["name"] == "cr-attested" for r in _audit_records(controller))

    await wait_for(audited, what="audit record of cr-attested", env=env)
    (record,) = [r for r in _audit_records(controller) if r["request"]["name"] == "cr-attested"]
    protection = record["ca"]["key_protection"]
    assert (protection["exportable"], protection["release_policy"]) == (False, False)
    assert protection["attestation"]["result"] == "Checked"
    assert (
        protection["attestation"]["private_key_attestation_sha256"]
        == (summary["privateKeyAttestationSHA256"])
    )
    assert protection["attestation"]["root_sha256"] == [root["sha256"]]

    # Exportable (with its release policy): refused, whatever its attestation says.
    refused = await env.wait_issuer("hsm-exportable", "False", "KeyExportable")
    message = _ready_message(refused)
    assert "is exportable and has a release policy" in message
    assert "spec.allowExportableKey: true" in message
    assert "keyAttestation" not in refused["status"]
    # ... unless the issuer allows it: signing, with the attestation's failure recorded.
    allowed = await env.wait_issuer("hsm-exportable-allowed", "True", "Checked")
    assert "WARNING: the key is exportable and has a release policy" in _ready_message(allowed)
    failed = allowed["status"]["keyAttestation"]
    assert failed["result"] == "Failed"
    assert "says the key is exportable" in failed["message"]
    # A vault key with a release policy only: refused as well; no attestation asked.
    refused = await env.wait_issuer("vault-policy", "False", "KeyExportable")
    assert "has a release policy" in _ready_message(refused)
    assert "is exportable" not in _ready_message(refused)

    # An HSM that serves no attestation: nothing shows the key stays in it.
    env.emulator.admin.set_vault(key_attestation=False)
    hsm.create_ec_key(f"unattested-{tag}", hardware_protected=True, curve="P-256")
    plain = await _ca_for(env, HSM, f"unattested-{tag}")
    await env.create_issuer("unattested", _spec(HSM, plain))
    failed_issuer = await env.wait_issuer("unattested", "False", "KeyAttestationFailed")
    message = _ready_message(failed_issuer)
    assert "attestation could not be fetched" in message
    assert "HTTP 400" in message
    assert "spec.allowExportableKey: true" in message
    calls = env.emulator.admin.responses()["get_key_attestation"]
    assert calls.get("400", 0) >= 1, calls
