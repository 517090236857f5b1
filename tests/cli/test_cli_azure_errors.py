"""The CLI's one-line errors for Azure's refusals: a soft-deleted name (Key Vault
"soft-delete overview": the name cannot be reused until recovered or purged), an
api-version the vault does not serve, and a credential Entra ID refuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from support.cli import AKV_ISSUER, assert_one_line_error, run, vault_args


def _credential(env: EmulatorEnv) -> ClientSecretCredential:
    return env.sp_credential()


def _ca_create(
    emulator: EmulatorProcess, key: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["ca", "create", *vault_args(emulator, key), "--create-key", "ec-p256"]
    return run(emulator, *args, "--common-name", "Root", *extra, check=False)


def _delete_secret(env: EmulatorEnv, name: str) -> None:
    client = SecretClient(env.vault_url, _credential(env), connection_verify=env.ca_file)
    client.set_secret(name, "old CA")
    client.begin_delete_secret(name, _polling_interval=0).result()


def test_ca_create_over_a_soft_deleted_secret_names_recover_and_purge(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    secret = f"{unique_name}-ca"
    _delete_secret(emulator.env, secret)
    result = _ca_create(emulator, unique_name, "--upload-secret", secret, "--out", os.devnull)
    assert_one_line_error(
        result,
        "soft-deleted",
        f"az keyvault secret recover --vault-name 127 --name {secret}",
        f"az keyvault secret purge --vault-name 127 --name {secret}",
    )


def test_ca_import_over_a_soft_deleted_secret_names_recover_and_purge(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    chain = tmp_path / "ca.pem"
    assert _ca_create(emulator, unique_name, "--out", str(chain)).returncode == 0
    _delete_secret(emulator.env, unique_name)
    result = run(
        emulator,
        "ca",
        "import",
        *vault_args(emulator, unique_name),
        "--chain",
        str(chain),
        check=False,
    )
    assert_one_line_error(result, "az keyvault secret recover", "az keyvault secret purge")


def test_ca_create_over_a_soft_deleted_key_names_the_key_commands(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = emulator.env
    client = KeyClient(env.vault_url, _credential(env), connection_verify=env.ca_file)
    client.create_ec_key(unique_name)
    client.begin_delete_key(unique_name, _polling_interval=0).result()
    result = _ca_create(emulator, unique_name, "--out", os.devnull)
    assert_one_line_error(result, "az keyvault key recover", "az keyvault key purge")


def test_an_api_version_the_vault_does_not_serve_says_so(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    # keys.json: api-version is required; a vault that lags (Azure Stack Hub) answers 400.
    emulator.admin.set_vault(api_versions=["7.0"])
    result = _ca_create(emulator, unique_name, "--out", os.devnull)
    assert_one_line_error(result, "is not recognized", "AKV_KEYVAULT_API_VERSION")


def test_a_client_secret_entra_refuses_is_one_line_with_the_aadsts_code(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    # Entra ID error codes: AADSTS7000215, invalid client secret; the trace lines of
    # Entra's description stay out of the one line.
    env = {
        **os.environ,
        **emulator.env.values,
        "AZURE_CLIENT_ID": emulator.env.sp_client_id,
        "AZURE_CLIENT_SECRET": "not-the-secret",
    }
    env.pop("AZURE_FEDERATED_TOKEN_FILE", None)
    result = subprocess.run(
        [AKV_ISSUER, "ca", "csr", *vault_args(emulator, unique_name), "--common-name", "X"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(result, "AADSTS7000215", "Entra ID refused the credential")
    assert "Trace ID" not in result.stderr
    assert "not-the-secret" not in result.stderr
