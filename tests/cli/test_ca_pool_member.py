"""`akv-issuer ca pool-member` as an operator runs it: the real CLI in a subprocess
against the Key Vault emulator; what it stored read back with the real Azure SDK and
checked with openssl (the chain verifies up to the root) and with the controller's own
pool rules (every member under one root)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from akv_emulator.testing import EmulatorProcess
from support.cli import assert_one_line_error, openssl, run, vault_args


def _secret(emulator: EmulatorProcess, name: str) -> str:
    env = emulator.env
    with SecretClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file) as client:
        return str(client.get_secret(name).value)


def test_pool_members_are_intermediates_of_the_root_each_in_its_secret(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    root = f"{unique_name}-root"
    run(
        emulator,
        "ca", "create", *vault_args(emulator, root),
        "--create-key", "ec-p256", "--common-name", "Pool Root", "--upload-secret",
    )  # fmt: skip
    root_args = ["--root-vault-url", emulator.env.vault_url, "--root-key-name", root]
    chains = {}
    for region in ("weu", "neu"):
        key = f"{unique_name}-{region}"
        result = run(
            emulator,
            "ca", "pool-member", *vault_args(emulator, key), *root_args,
            "--create-key", "ec-p256", "--common-name", f"Pool {region}",
            "--member-name", region,
        )  # fmt: skip
        # The pool.members entry to paste.
        assert result.stdout.splitlines() == [
            f"- name: {region}",
            f"  keyVaultBaseURL: {emulator.env.vault_url}",
            f"  keyName: {key}",
        ]
        assert f"stored 2 certificate(s) in secret {key}" in result.stderr
        chains[region] = x509.load_pem_x509_certificates(_secret(emulator, key).encode())

    root_cert = chains["weu"][1]
    assert chains["neu"][1] == root_cert
    assert root_cert.subject.rfc4514_string() == "CN=Pool Root"
    for region, (intermediate, _) in chains.items():
        assert intermediate.subject.rfc4514_string() == f"CN=Pool {region}"
        constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is True
        assert constraints.value.path_length == 0
        assert intermediate.not_valid_after_utc <= root_cert.not_valid_after_utc
        assert intermediate.not_valid_after_utc - intermediate.not_valid_before_utc <= (
            dt.timedelta(days=1825)
        )
        (tmp_path / "root.pem").write_bytes(root_cert.public_bytes(Encoding.PEM))
        (tmp_path / "int.pem").write_bytes(intermediate.public_bytes(Encoding.PEM))
        verified = openssl(
            "verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "int.pem")
        )
        assert verified.returncode == 0, verified.stderr
    assert chains["weu"][0].public_key() != chains["neu"][0].public_key()


def test_a_member_with_the_roots_key_is_refused_in_one_line(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    run(
        emulator,
        "ca", "create", *vault_args(emulator, unique_name),
        "--create-key", "ec-p256", "--common-name", "Pool Root", "--upload-secret",
    )  # fmt: skip
    result = run(
        emulator,
        "ca", "pool-member", *vault_args(emulator, unique_name),
        "--root-vault-url", emulator.env.vault_url, "--root-key-name", unique_name,
        "--common-name", "Pool x",
        check=False,
    )  # fmt: skip
    assert_one_line_error(result, "a pool member needs a key of its own")


def test_a_root_without_its_ca_secret_is_refused_in_one_line(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, f"{unique_name}-root"),
        "--create-key",
        "ec-p256",
        "--common-name",
        "Pool Root",
    )  # fmt: skip  (no --upload-secret: the root's certificate is nowhere in the vault)
    result = run(
        emulator,
        "ca", "pool-member", *vault_args(emulator, f"{unique_name}-m"),
        "--root-vault-url", emulator.env.vault_url, "--root-key-name", f"{unique_name}-root",
        "--create-key", "ec-p256", "--common-name", "Pool m",
        check=False,
    )  # fmt: skip
    assert_one_line_error(result, "SecretNotFound", f"{unique_name}-root")


def test_check_of_a_pool_manifest_checks_every_member(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    root = f"{unique_name}-root"
    run(
        emulator,
        "ca", "create", *vault_args(emulator, root),
        "--create-key", "ec-p256", "--common-name", "Pool Root", "--upload-secret",
    )  # fmt: skip
    members = []
    for region in ("weu", "neu"):
        key = f"{unique_name}-{region}"
        run(
            emulator,
            "ca", "pool-member", *vault_args(emulator, key),
            "--root-vault-url", emulator.env.vault_url, "--root-key-name", root,
            "--create-key", "ec-p256", "--common-name", f"Pool {region}",
        )  # fmt: skip
        members.append(key)
    spec = {
        "keyVaultBaseURL": emulator.env.vault_url,
        "keyName": members[0],
        "pool": {
            "primaryName": "weu",
            "members": [
                {"name": "neu", "keyVaultBaseURL": emulator.env.vault_url, "keyName": members[1]},
                {"name": "gone", "keyVaultBaseURL": emulator.env.vault_url, "keyName": "no-such"},
            ],
        },
    }
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "azure-keyvault-issuer.gonicus.de/v1alpha1",
                "kind": "ClusterIssuer",
                "metadata": {"name": "pool"},
                "spec": spec,
            }
        )
    )
    result = run(emulator, "check", "--issuer-manifest", str(manifest), check=False)
    out = result.stdout.strip().splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert any(line.startswith("pool member 'weu': ok: key ") for line in out)
    assert any(line.startswith("pool member 'neu': ok: key ") for line in out)
    assert any(line.startswith("pool member 'gone': KeyNotFound: ") for line in out)
    assert out[-1] == "not ready: the ClusterIssuer pool would not be Ready"
    # Without the broken member: every member passes.
    spec["pool"]["members"] = spec["pool"]["members"][:1]  # type: ignore[index]
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "azure-keyvault-issuer.gonicus.de/v1alpha1",
                "kind": "ClusterIssuer",
                "metadata": {"name": "pool"},
                "spec": spec,
            }
        )
    )
    result = run(emulator, "check", "--issuer-manifest", str(manifest), check=False)
    out = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert out[-1] == "ready: the ClusterIssuer pool would be Ready (Checked)"
