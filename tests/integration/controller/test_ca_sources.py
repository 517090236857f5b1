"""CA certificates kept elsewhere than the key's vault, and vaults in other clouds,
with the controller as a subprocess against the real API server and the emulator.

The emulator plays an Azure China vault (``akvit.vault.azure.cn``, tokens from
``login.chinacloudapi.cn``) and a Managed HSM (``akvit.managedhsm.azure.net``),
reached through its own CONNECT proxy (HTTPS_PROXY), so host names, TLS names,
challenge resources and authorities are the clouds' own. AZURE_AUTHORITY_HOST
points at the emulator's loopback name: a token asked of login.chinacloudapi.cn
shows the controller derived the authority from the vault's host.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from akv_devcluster import DevCluster
from akv_emulator.testing import EmulatorProcess
from akv_issuer.pki import build_root_ca, default_algorithm, sign_certificate
from support.controller_harness import CA, Env, csr_pem, open_env
from support.emulator import import_certificate

CHINA = "https://akvit.vault.azure.cn"
HSM = "https://akvit.managedhsm.azure.net"
NAMES = ["akvit.vault.azure.cn", "login.chinacloudapi.cn", "akvit.managedhsm.azure.net",
         "login.microsoftonline.com"]  # fmt: skip


@pytest.fixture(scope="module")
def cloud_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    args = ["--proxy", *(arg for name in NAMES for arg in ("--tls-name", name))]
    process = EmulatorProcess.start(tmp_path_factory.mktemp("akv-it-clouds"), extra_args=args)
    try:
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture
async def cenv(
    kube_client: AsyncClient,
    namespace: str,
    manager_role: str,
    devcluster: DevCluster,
    cloud_emulator: EmulatorProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Env]:
    cloud_emulator.admin.reset()
    # Both this process (setup through the keyvault layer) and the controller,
    # which inherits os.environ, reach the cloud names through the proxy.
    monkeypatch.setenv("HTTPS_PROXY", cloud_emulator.env.values["AKV_EMULATOR_PROXY_URL"])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    env, binding = await open_env(
        kube_client, devcluster, cloud_emulator, namespace, manager_role, tmp_path
    )
    try:
        yield env
    finally:
        for controller in env.controllers:
            controller.kill()
        await env.kv.close()
        for name in env.cluster_issuers:
            from akv_issuer.controller.api import ClusterIssuer

            await kube_client.delete(ClusterIssuer, name)
        await kube_client.delete(ClusterRoleBinding, binding)


async def hsm_ca(env: Env, kty: str = "EC-HSM") -> CA:
    """A key in the Managed HSM and a root CA certificate for it, signed by it (not stored:
    an HSM holds no secrets)."""
    name = f"hsm-{uuid.uuid4().hex[:10]}"
    key = await env.kv.create_key(HSM, name, env.kv_auth, kty=kty, curve="P-256")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    plan = build_root_ca(key.public_key, f"HSM CA {name}", lifetime=dt.timedelta(days=30), now=now)
    algorithm = default_algorithm(key.public_key)
    cert = await sign_certificate(
        plan.builder, key.public_key, algorithm, env.kv.signer(key, env.kv_auth)
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return CA(name=name, key_version=key.version, pem=pem, cert=cert, algorithm=algorithm)


async def issue_one(env: Env, issuer: str, ca: CA, *, kind: str = "Issuer") -> None:
    cluster = kind == "ClusterIssuer"
    ready = await env.wait_issuer(issuer, "True", "Checked", cluster=cluster)
    assert base64.b64decode(ready["status"]["caCertificate"]).strip() == ca.pem.strip()
    await env.create_request(f"cr-{issuer}", csr_pem("ec", "app.example.com"), issuer, kind=kind)
    await env.approve(f"cr-{issuer}")
    done = await env.wait_request(f"cr-{issuer}", "Issued")
    env.openssl_verify(done, ca)


async def test_certificate_object_in_a_china_vault_is_the_ca_and_no_secret_is_read(
    cenv: Env,
) -> None:
    env = cenv
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "China certificate-object CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    bundle = pem + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    name = f"cert-{uuid.uuid4().hex[:10]}"
    await import_certificate(env.emulator, CHINA, name, bundle)
    algorithm = default_algorithm(key.public_key())
    ca = CA(name=name, key_version="", pem=pem, cert=cert, algorithm=algorithm)
    env.emulator.admin.reset_counters()

    await env.create_issuer(
        "cert-object",
        {"keyVaultBaseURL": CHINA, "keyName": name,
         "caSource": {"keyVaultCertificate": {"name": name}}},
    )  # fmt: skip
    controller = env.start_controller()
    await env.wait_ready(controller)
    await issue_one(env, "cert-object", ca)

    requests = env.emulator.admin.counters()
    assert requests.get("get_certificate", 0) >= 1, requests
    assert not requests.get("get_secret"), f"the controller read a secret: {requests}"
    assert requests.get("token@login.chinacloudapi.cn", 0) >= 1, requests
    assert requests.get("token_audience@https://vault.azure.cn", 0) >= 1, requests
    assert not [k for k in requests if k.startswith("token@127.0.0.1")], requests


async def test_managed_hsm_keys_with_the_ca_in_a_kubernetes_secret_or_another_vault(
    cenv: Env,
) -> None:
    env = cenv
    ca = await hsm_ca(env)
    # The CA in a Kubernetes Secret of the Issuer's namespace.
    await env.kube.create(
        Secret(
            metadata=ObjectMeta(name="hsm-ca", namespace=env.namespace),
            data={"ca.crt": base64.b64encode(ca.pem).decode()},
        )
    )
    await env.create_issuer(
        "hsm-k8s", {"keyVaultBaseURL": HSM, "keyName": ca.name,
                    "caSource": {"secret": {"name": "hsm-ca"}}}
    )  # fmt: skip
    # The same CA as a secret in a China vault, for a ClusterIssuer.
    await env.kv.set_secret(CHINA, ca.name, ca.pem.decode(), env.kv_auth)
    cluster_name = f"hsm-vault-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(
        cluster_name,
        {"keyVaultBaseURL": HSM, "keyName": ca.name,
         "caSource": {"keyVaultSecret": {"vaultBaseURL": CHINA, "name": ca.name}}},
        cluster=True,
    )  # fmt: skip
    # Without caSource an HSM key has no CA: InvalidSpec says what to set.
    await env.create_issuer("hsm-bare", {"keyVaultBaseURL": HSM, "keyName": ca.name})
    # A Secret that does not exist: CASecretNotFound names namespace and Secret.
    await env.create_issuer(
        "hsm-missing", {"keyVaultBaseURL": HSM, "keyName": ca.name,
                        "caSource": {"secret": {"name": "nope"}}}
    )  # fmt: skip
    controller = env.start_controller()
    await env.wait_ready(controller)

    await issue_one(env, "hsm-k8s", ca)
    await issue_one(env, cluster_name, ca, kind="ClusterIssuer")
    bare = await env.wait_issuer("hsm-bare", "False", "InvalidSpec")
    assert "Managed HSM" in bare["status"]["conditions"][0]["message"]
    missing = await env.wait_issuer("hsm-missing", "False", "CASecretNotFound")
    message = next(c for c in missing["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert f"{env.namespace}/nope" in message

    requests = env.emulator.admin.counters()
    assert requests.get("token_audience@https://managedhsm.azure.net", 0) >= 1, requests
    assert requests.get("token@login.microsoftonline.com", 0) >= 1, requests
    assert requests.get("token@login.chinacloudapi.cn", 0) >= 1, requests
