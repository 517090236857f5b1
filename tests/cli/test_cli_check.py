"""`akv-issuer check` (issue 24, item 9): the preflight of an issuer against the Key Vault
emulator, as a user runs it: one line per step, the controller's Ready reasons with what
to do, exit 0 only when the issuer would be Ready, never a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from azure.keyvault.secrets import SecretClient

from akv_emulator.testing import EmulatorProcess
from support.azure_roles import assignment, assignments_without
from support.cli import assert_one_line_error, offline_root, run, vault_args
from support.emulator import import_certificate

KV = "Microsoft.KeyVault/vaults/"
POLICY = KeyReleasePolicy(json.dumps({"version": "1.0.0", "anyOf": []}).encode())


def check(emulator: EmulatorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run(emulator, "check", *args, check=False)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout.strip().splitlines()


def create_ca(emulator: EmulatorProcess, name: str, *extra: str) -> None:
    run(emulator, "ca", "create", *vault_args(emulator, name), "--create-key", "ec-p256",
        "--common-name", f"Root {name}", "--upload-secret", name, "--out", "/dev/null",
        *extra)  # fmt: skip


def keys(emulator: EmulatorProcess) -> KeyClient:
    env = emulator.env
    return KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file)


def test_a_ready_issuer_passes_every_step_with_one_signature(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    create_ca(emulator, unique_name)
    emulator.admin.reset_counters()
    result = check(emulator, *vault_args(emulator, unique_name))
    assert result.returncode == 0, result.stdout
    out = lines(result)
    assert out[0].startswith(f"ok: key {emulator.env.vault_url}/keys/{unique_name}/")
    assert out[1].startswith(f"ok: CA CN=Root {unique_name} (CA secret {unique_name!r})")
    assert out[2] == "ok: key protection: not exportable, no release policy"
    assert out[3] == "ok: Key Vault signed a test digest with ES256 (keys/sign/action granted)"
    assert out[-1] == "ready: the issuer would be Ready (Checked)"
    assert result.stderr == ""
    counters = emulator.admin.counters()
    assert (counters["get_key"], counters["get_secret"], counters["sign"]) == (1, 1, 1)
    assert not counters.get("set_secret")
    # --no-sign: no signature, and it says what was not checked.
    result = check(emulator, *vault_args(emulator, unique_name), "--no-sign")
    assert result.returncode == 0
    assert "note: no test signature (--no-sign): keys/sign/action not checked" in lines(result)
    assert emulator.admin.counters()["sign"] == 1


def test_every_failing_step_is_one_line_with_its_reason_and_fix(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    result = check(emulator, *vault_args(emulator, unique_name))
    assert result.returncode == 1
    out = lines(result)
    assert out[0].startswith(f"KeyNotFound: key {unique_name!r}: ")
    assert out[0].endswith("-- fix: check the vault URL, key name and version")
    assert out[1].startswith(f"CASecretNotFound: CA secret {unique_name!r}: ")
    assert "-- fix: store the CA certificate" in out[1]
    assert out[-1] == "not ready: the issuer would not be Ready"
    assert len(out) == 3


def test_each_missing_data_action_is_named(emulator: EmulatorProcess, unique_name: str) -> None:
    create_ca(emulator, unique_name)
    wi = emulator.env.workload_client_id
    emulator.admin.set_role_assignments(
        wi,
        [
            *assignments_without(
                "issuer-key-signer.json", f"/keys/{unique_name}", KV + "keys/sign/action"
            ),
            *assignments_without(
                "issuer-ca-secret-reader.json", f"/secrets/{unique_name}",
                KV + "secrets/getSecret/action",
            ),
        ],
    )  # fmt: skip
    out = lines(result := check(emulator, *vault_args(emulator, unique_name)))
    assert result.returncode == 1
    forbidden = [line for line in out if line.startswith("Forbidden: ")]
    assert len(forbidden) == 2, out
    assert f"the identity lacks the data action {KV}secrets/getSecret/action" in forbidden[0]
    assert f"the identity lacks the data action {KV}keys/sign/action" in forbidden[1]
    # With exactly the minimal roles it is ready.
    emulator.admin.set_role_assignments(
        wi,
        [
            assignment("issuer-key-signer.json", f"/keys/{unique_name}"),
            assignment("issuer-ca-secret-reader.json", f"/secrets/{unique_name}"),
        ],
    )
    assert check(emulator, *vault_args(emulator, unique_name)).returncode == 0


def test_a_ca_of_another_key_and_an_exportable_key(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    create_ca(emulator, unique_name)
    other = f"{unique_name}-other"
    keys(emulator).create_ec_key(other, curve="P-256")
    out = lines(check(emulator, *vault_args(emulator, other), "--secret-name", unique_name))
    assert out[1].startswith(f"CAKeyMismatch: CA secret {unique_name!r}: "), out
    exportable = f"{unique_name}-exp"
    keys(emulator).create_ec_key(
        exportable, curve="P-256", hardware_protected=True, exportable=True, release_policy=POLICY
    )
    out = lines(check(emulator, *vault_args(emulator, exportable), "--secret-name", unique_name))
    refused = [line for line in out if line.startswith("KeyExportable: ")]
    assert len(refused) == 1, out
    assert "is exportable and has a release policy" in refused[0]
    assert "-- fix: use a key created without exportable" in refused[0]


def test_the_certificate_source_and_a_ca_file(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    key, root = offline_root(tmp_path)
    bundle = root.read_bytes() + key.read_bytes()
    asyncio.run(import_certificate(emulator, emulator.env.vault_url, unique_name, bundle))
    result = check(emulator, *vault_args(emulator, unique_name), "--certificate-name", unique_name)
    assert result.returncode == 0, result.stdout
    assert f"(CA certificate object {unique_name!r})" in lines(result)[1]
    # The same CA from a file: nothing read from the vault for it.
    emulator.admin.reset_counters()
    result = check(emulator, *vault_args(emulator, unique_name), "--ca-file", str(root))
    assert result.returncode == 0, result.stdout
    counters = emulator.admin.counters()
    assert not counters.get("get_certificate"), counters
    assert not counters.get("get_secret"), counters


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return tmp_path / "issuer.yaml"


def _write(path: Path, spec: dict[str, object], kind: str = "Issuer") -> None:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
        {
            "apiVersion": "azure-keyvault-issuer.gonicus.de/v1alpha1",
            "kind": kind,
            "metadata": {"name": "team-a-ca", "namespace": "team-a"},
            "spec": spec,
        },
    ]
    path.write_text(yaml.safe_dump_all(docs))


def test_an_issuer_manifest(
    emulator: EmulatorProcess, unique_name: str, manifest: Path, tmp_path: Path
) -> None:
    create_ca(emulator, unique_name)
    spec: dict[str, object] = {
        "keyVaultBaseURL": emulator.env.vault_url,
        "keyName": unique_name,
        "auth": {
            "clientSecret": {
                "tenantID": emulator.env.tenant_id,
                "clientID": emulator.env.sp_client_id,
                "secretRef": {"name": "sp", "key": "secret"},
            }
        },
    }
    _write(manifest, spec)
    result = check(emulator, "--issuer-manifest", str(manifest))
    assert result.returncode == 0, result.stdout
    out = lines(result)
    assert out[0].startswith("note: spec.auth is not used")
    assert out[-1] == "ready: the Issuer team-a-ca would be Ready (Checked)"
    # A spec the controller would refuse: InvalidSpec, naming the field.
    _write(manifest, {**spec, "keyName": "not/a/name"}, kind="ClusterIssuer")
    result = check(emulator, "--issuer-manifest", str(manifest))
    assert result.returncode == 1
    out = lines(result)
    assert out[0].startswith("InvalidSpec: spec.keyName: ")
    assert out[-1] == "not ready: the ClusterIssuer team-a-ca would not be Ready"
    # A CA in a Kubernetes Secret is not read: skipped, unless given as a file.
    pem = SecretClient(
        emulator.env.vault_url, emulator.env.sp_credential(),
        connection_verify=emulator.env.ca_file,
    ).get_secret(unique_name).value  # fmt: skip
    assert pem is not None
    del spec["auth"]
    _write(manifest, {**spec, "caSource": {"secret": {"name": "team-a-ca"}}})
    result = check(emulator, "--issuer-manifest", str(manifest))
    assert result.returncode == 1
    skipped = [line for line in lines(result) if line.startswith("skipped: ")]
    assert len(skipped) == 1
    assert "pass its PEM with --ca-file" in skipped[0]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(pem)
    result = check(emulator, "--issuer-manifest", str(manifest), "--ca-file", str(ca_file))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give --issuer-manifest, or --vault-url and --key-name"),
        (["--issuer-manifest", "/nonexistent.yaml"], "issuer manifest file not found"),
        (["--issuer-manifest", "MANIFEST", "--key-name", "x"], "drop --key-name"),
        (["--issuer-manifest", "EMPTY"], "holds no Issuer or ClusterIssuer"),
        (["--issuer-manifest", "BROKEN"], "is not YAML (line 2)"),
        (
            [
                "--vault-url",
                "https://v.vault.azure.net",
                "--key-name",
                "k",
                "--certificate-name",
                "c",
                "--secret-name",
                "s",
            ],
            "--certificate-name reads the CA from a certificate",
        ),
    ],
)
def test_usage_mistakes_are_one_line_errors(
    emulator: EmulatorProcess, manifest: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    _write(manifest, {"keyVaultBaseURL": emulator.env.vault_url, "keyName": "k"})
    empty, broken = tmp_path / "empty.yaml", tmp_path / "broken.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\n")
    broken.write_text("kind: Issuer\n  spec: [\n")
    replaced = [
        {"MANIFEST": str(manifest), "EMPTY": str(empty), "BROKEN": str(broken)}.get(a, a)
        for a in args
    ]
    result = check(emulator, *replaced)
    assert_one_line_error(result, fragment)
    assert result.stdout == ""


HSM = "https://akvcli.managedhsm.azure.net"


@pytest.fixture(scope="module")
def hsm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    names = ["akvcli.managedhsm.azure.net", "login.microsoftonline.com"]
    args = ["--proxy", *(arg for name in names for arg in ("--tls-name", name))]
    process = EmulatorProcess.start(tmp_path_factory.mktemp("akv-cli-hsm"), extra_args=args)
    try:
        yield process
    finally:
        process.stop()


def test_a_managed_hsm_key_is_attested(
    hsm_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The HSM's real host name through the emulator's proxy: its attestation is
    # fetched and checked; the CA (an HSM holds no secrets) comes from a file.
    hsm_emulator.admin.reset()
    monkeypatch.setenv("HTTPS_PROXY", hsm_emulator.env.values["AKV_EMULATOR_PROXY_URL"])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    name = f"hsm-{uuid.uuid4().hex[:8]}"
    env = hsm_emulator.env
    KeyClient(HSM, env.sp_credential(), connection_verify=env.ca_file).create_ec_key(
        name, hardware_protected=True, curve="P-256"
    )
    ca = tmp_path / "ca.pem"
    run(hsm_emulator, "ca", "create", "--vault-url", HSM, "--key-name", name,
        "--common-name", "HSM Root", "--out", str(ca))  # fmt: skip
    args = ["--vault-url", HSM, "--key-name", name]
    out = lines(result := check(hsm_emulator, *args))
    assert result.returncode == 1
    assert out[1].startswith("InvalidSpec: the key is in a Managed HSM, which holds keys only")
    hsm_emulator.admin.reset_counters()
    out = lines(result := check(hsm_emulator, *args, "--ca-file", str(ca)))
    assert result.returncode == 0, out
    (protection,) = [line for line in out if line.startswith("ok: key protection: ")]
    assert "Managed HSM attestation checked (private-key statement sha256 " in protection
    assert "akv-emulator attestation root (throwaway)" in protection
    assert hsm_emulator.admin.counters()["get_key_attestation"] == 1
    # An HSM that serves no attestation: the controller's reason.
    hsm_emulator.admin.set_vault(key_attestation=False)
    out = lines(result := check(hsm_emulator, *args, "--ca-file", str(ca)))
    assert result.returncode == 1
    (failed,) = [line for line in out if line.startswith("KeyAttestationFailed: ")]
    assert "attestation could not be fetched" in failed
