"""The real Azure SDK clients (sync and aio) against the emulator, TLS and challenge checks on."""

from __future__ import annotations

import concurrent.futures
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from azure.identity import WorkloadIdentityCredential
from azure.identity.aio import WorkloadIdentityCredential as AioWorkloadIdentityCredential
from azure.keyvault.keys import KeyClient, KeyType
from azure.keyvault.keys.aio import KeyClient as AioKeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient as AioCryptographyClient
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets.aio import SecretClient as AioSecretClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from support.emulator import digest_for, verify_locally

# (kty, size, curve, algorithms that key can sign with)
KEY_CASES = [
    ("RSA", 2048, None, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]),
    ("RSA", 3072, None, ["RS384", "PS384"]),
    ("RSA", 4096, None, ["RS512", "PS512"]),
    ("RSA-HSM", 2048, None, ["RS256", "PS256"]),
    ("EC", None, "P-256", ["ES256"]),
    ("EC", None, "P-384", ["ES384"]),
    ("EC", None, "P-521", ["ES512"]),
    ("EC-HSM", None, "P-256", ["ES256"]),
]


def wi_credential(env: EmulatorEnv) -> WorkloadIdentityCredential:
    return WorkloadIdentityCredential(
        tenant_id=env.tenant_id,
        client_id=env.workload_client_id,
        token_file_path=env.federated_token_file,
        authority=env.authority_host,
        connection_verify=env.ca_file,
    )


def public_key_of(key: Any) -> Any:
    jwk = key.key
    if jwk.kty in (KeyType.rsa, KeyType.rsa_hsm):
        return rsa.RSAPublicNumbers(
            int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
        ).public_key()
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk.crv]
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
    ).public_key()


@pytest.mark.parametrize(("kty", "size", "curve", "algorithms"), KEY_CASES)
def test_sync_clients_sign_and_verify_every_key_type(
    emulator_env: EmulatorEnv,
    unique_name: str,
    kty: str,
    size: int | None,
    curve: str | None,
    algorithms: list[str],
) -> None:
    credential = emulator_env.sp_credential()
    keys = KeyClient(emulator_env.vault_url, credential, connection_verify=emulator_env.ca_file)
    key = keys.create_key(unique_name, KeyType(kty), size=size, curve=curve)
    assert key.key_type == kty
    assert key.id.startswith(f"{emulator_env.vault_url}/keys/{unique_name}/")
    fetched = keys.get_key(unique_name, key.properties.version)
    assert fetched.id == key.id
    assert keys.get_key(unique_name).id == key.id  # latest
    crypto = CryptographyClient(key, credential, connection_verify=emulator_env.ca_file)
    public_key = public_key_of(fetched)
    for alg in algorithms:
        digest = digest_for(alg)
        result = crypto.sign(SignatureAlgorithm(alg), digest)
        assert result.key_id == key.id
        verify_locally(public_key, alg, digest, result.signature)


def test_emulator_verify_endpoint_answers_true_and_false(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    credential = env.sp_credential()
    key = KeyClient(env.vault_url, credential, connection_verify=env.ca_file).create_rsa_key(
        unique_name
    )
    signer = CryptographyClient(key, credential, connection_verify=env.ca_file)
    digest = digest_for("RS256")
    signature = signer.sign(SignatureAlgorithm.rs256, digest).signature
    # Without keys/get the SDK cannot verify locally and must ask the vault.
    emulator.admin.set_identity(
        env.sp_client_id, key_permissions=["sign", "verify"], secret_permissions=["get"]
    )
    remote = CryptographyClient(key.id, credential, connection_verify=env.ca_file)
    assert remote.verify(SignatureAlgorithm.rs256, digest, signature).is_valid
    other = digest_for("RS256", b"other")
    assert not remote.verify(SignatureAlgorithm.rs256, other, signature).is_valid
    assert emulator.admin.counters()["verify"] == 2


def test_secrets_set_get_versions_content_type(emulator_env: EmulatorEnv, unique_name: str) -> None:
    client = SecretClient(
        emulator_env.vault_url, wi_credential(emulator_env), connection_verify=emulator_env.ca_file
    )
    first = client.set_secret(unique_name, "one", content_type="application/x-pem-file")
    second = client.set_secret(unique_name, "two")
    assert client.get_secret(unique_name).value == "two"
    old = client.get_secret(unique_name, first.properties.version)
    assert old.value == "one"
    assert old.properties.content_type == "application/x-pem-file"
    versions = {p.version for p in client.list_properties_of_secret_versions(unique_name)}
    assert versions == {first.properties.version, second.properties.version}


def test_missing_key_and_secret_have_key_vault_error_codes(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    credential = emulator_env.sp_credential()
    keys = KeyClient(emulator_env.vault_url, credential, connection_verify=emulator_env.ca_file)
    secrets = SecretClient(
        emulator_env.vault_url, credential, connection_verify=emulator_env.ca_file
    )
    with pytest.raises(HttpResponseError) as key_err:
        keys.get_key(unique_name)
    with pytest.raises(HttpResponseError) as secret_err:
        secrets.get_secret(unique_name)
    assert key_err.value.status_code == 404
    assert json.loads(key_err.value.response.text())["error"]["code"] == "KeyNotFound"
    assert secret_err.value.status_code == 404
    assert json.loads(secret_err.value.response.text())["error"]["code"] == "SecretNotFound"


def test_permission_denied_is_403_forbidden(emulator: EmulatorProcess, unique_name: str) -> None:
    env = emulator.env
    emulator.admin.set_identity(env.sp_client_id, key_permissions=["get"])
    keys = KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file)
    with pytest.raises(HttpResponseError) as err:
        keys.create_rsa_key(unique_name)
    assert err.value.status_code == 403
    body = json.loads(err.value.response.text())["error"]
    assert body["code"] == "Forbidden"
    assert "keys/create" in body["message"]


def test_challenge_names_authority_and_a_resource_the_sdk_accepts(
    emulator_env: EmulatorEnv,
) -> None:
    context = ssl.create_default_context(cafile=emulator_env.ca_file)
    request = urllib.request.Request(f"{emulator_env.vault_url}/keys/any?api-version=2025-07-01")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert err.value.code == 401
    header = err.value.headers["WWW-Authenticate"]
    port = emulator_env.vault_url.rsplit(":", 1)[1]
    assert header == (
        f'Bearer authorization="{emulator_env.vault_url}/{emulator_env.tenant_id}", '
        f'resource="https://0.0.1:{port}"'
    )


def test_tls_is_verified_without_the_emulator_ca(emulator_env: EmulatorEnv) -> None:
    context = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(f"{emulator_env.vault_url}/keys", context=context, timeout=10)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_wrong_client_secret_is_refused(emulator_env: EmulatorEnv) -> None:
    credential = emulator_env.sp_credential(client_secret="not-the-secret")
    with pytest.raises(ClientAuthenticationError) as err:
        credential.get_token("https://vault.azure.net/.default")
    assert "AADSTS7000215" in str(err.value)


def test_assertion_for_another_subject_is_refused(emulator: EmulatorProcess, tmp_path: Any) -> None:
    env = emulator.env
    emulator.admin.set_identity("other-app", federated_subject="system:serviceaccount:x:y")
    token_file = tmp_path / "token"
    token_file.write_text(emulator.admin.mint_assertion("other-app"))
    credential = WorkloadIdentityCredential(
        tenant_id=env.tenant_id,
        client_id=env.workload_client_id,
        token_file_path=str(token_file),
        authority=env.authority_host,
        connection_verify=env.ca_file,
    )
    with pytest.raises(ClientAuthenticationError) as err:
        credential.get_token("https://vault.azure.net/.default")
    assert "AADSTS70021" in str(err.value)


async def test_aio_clients_with_workload_identity(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    async with (
        AioWorkloadIdentityCredential(
            tenant_id=env.tenant_id,
            client_id=env.workload_client_id,
            token_file_path=env.federated_token_file,
            authority=env.authority_host,
            connection_verify=env.ca_file,
        ) as credential,
        AioKeyClient(env.vault_url, credential, connection_verify=env.ca_file) as keys,
        AioSecretClient(env.vault_url, credential, connection_verify=env.ca_file) as secrets,
    ):
        key = await keys.create_ec_key(unique_name, curve="P-384")
        async with AioCryptographyClient(key, credential, connection_verify=env.ca_file) as crypto:
            digest = digest_for("ES384")
            result = await crypto.sign(SignatureAlgorithm.es384, digest)
        verify_locally(public_key_of(key), "ES384", digest, result.signature)
        await secrets.set_secret(unique_name, "pem", content_type="application/x-pem-file")
        secret = await secrets.get_secret(unique_name)
        assert (secret.value, secret.properties.content_type) == ("pem", "application/x-pem-file")
    counters = emulator.admin.counters()
    # The aio credential asks with a CAE claims parameter; one token serves every call.
    assert counters["token"] == 1
    assert counters["sign"] == 1


def test_throttle_and_error_faults_and_counters(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    keys = KeyClient(
        env.vault_url, env.sp_credential(), connection_verify=env.ca_file, retry_total=0
    )
    keys.create_rsa_key(unique_name)
    emulator.admin.set_faults({"throttle": {"next": 1, "retry_after": 7}})
    with pytest.raises(HttpResponseError) as err:
        keys.get_key(unique_name)
    assert err.value.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert json.loads(err.value.response.text())["error"]["code"] == "Throttled"
    emulator.admin.set_faults({"errors": {"next": 1, "status": 500}})
    with pytest.raises(HttpResponseError) as err5:
        keys.get_key(unique_name)
    assert err5.value.status_code == 500
    assert keys.get_key(unique_name).name == unique_name
    responses = emulator.admin.responses()["get_key"]
    assert responses == {"429": 1, "500": 1, "200": 1}
    emulator.admin.reset_counters()
    assert emulator.admin.counters() == {}


def test_azure_preset_limits_sign_per_window(emulator: EmulatorProcess, unique_name: str) -> None:
    env = emulator.env
    credential = env.sp_credential()
    key = KeyClient(env.vault_url, credential, connection_verify=env.ca_file).create_rsa_key(
        unique_name, size=4096
    )
    crypto = CryptographyClient(key, credential, connection_verify=env.ca_file, retry_total=0)
    emulator.admin.set_faults(
        {"throttle": {"preset": "azure", "limits": {"RSA-4096": 3}, "window_seconds": 600}}
    )
    digest = digest_for("RS512")
    for _ in range(3):
        crypto.sign(SignatureAlgorithm.rs512, digest)
    with pytest.raises(HttpResponseError) as err:
        crypto.sign(SignatureAlgorithm.rs512, digest)
    assert err.value.status_code == 429
    assert "Retry-After" not in err.value.response.headers
    assert emulator.admin.faults()["throttle"]["preset"] == "azure"


@pytest.mark.parametrize(
    ("faults", "fragment"),
    [
        ({"throttle": {"probability": 2}}, "probability must be between"),
        ({"nonsense": 1}, "unknown fault field"),
        ({"errors": {"operations": ["fly"]}}, "unknown operation"),
        ({"throttle": {"preset": "aws"}}, "unknown throttle preset"),
    ],
)
def test_admin_rejects_bad_faults_clearly(
    emulator: EmulatorProcess, faults: dict[str, Any], fragment: str
) -> None:
    from akv_emulator.testing import EmulatorError

    with pytest.raises(EmulatorError) as err:
        emulator.admin.set_faults(faults)
    assert "HTTP 400" in str(err.value)
    assert fragment in str(err.value)


def test_peak_in_flight_counts_calls_served_at_once(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    credential = env.sp_credential()
    keys = KeyClient(env.vault_url, credential, connection_verify=env.ca_file)
    key = keys.create_ec_key(unique_name, curve="P-256")
    crypto = CryptographyClient(key, credential, connection_verify=env.ca_file)
    digest = digest_for("ES256")
    crypto.sign(SignatureAlgorithm.es256, digest)  # token and key fetched before the race
    # A stalled call is never answered; it must not count as in flight forever.
    emulator.admin.set_faults({"stall": {"next": 1, "operations": ["sign"]}})
    stalled = CryptographyClient(key, credential, connection_verify=env.ca_file, retry_total=0)
    with pytest.raises(AzureError):
        stalled.sign(SignatureAlgorithm.es256, digest, read_timeout=1)
    emulator.admin.reset_counters()
    assert emulator.admin.peak_in_flight() == {}
    emulator.admin.set_faults({"latency_ms": 300, "latency_operations": ["sign"]})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: crypto.sign(SignatureAlgorithm.es256, digest), range(3)))
    crypto.sign(SignatureAlgorithm.es256, digest)  # a lone call does not raise the peak
    assert len(results) == 3
    assert emulator.admin.counters()["sign"] == 4
    assert emulator.admin.peak_in_flight()["sign"] == 3
    emulator.admin.reset_counters()
    assert emulator.admin.peak_in_flight() == {}
